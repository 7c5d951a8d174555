"""``run_sweep(SweepConfig)``: what ``mobiledeploy sweep`` calls.

Layout of ``--out``::

    exports/<config>-<export hash>/   the export (artifacts + manifest.json), reused by reruns
    rows/<config>-<row hash>.json     one job's result, written atomically as it finishes
    results.json, results.csv, results.md, report.html, pareto_<target>.png, latency_histograms.png
    .sweep.lock                       held while a sweep runs: a second sweep into the same --out is refused

A rerun loads every ``rows/`` file whose hash matches, whose job succeeded, whose shape is
the one this version writes and whose artifacts are still on disk with the recorded size
and SHA-256; it runs only the others (failed jobs are retried, a malformed or stale result
is reported in a note and redone), then rewrites the tables and the report.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from mobiledeploy import io
from mobiledeploy.bench.core import machine_conditions
from mobiledeploy.errors import MobiledeployError, UsageError
from mobiledeploy.guards import regular_file
from mobiledeploy.progress import OnProgress, emit
from mobiledeploy.sweep import grid, pareto, report
from mobiledeploy.sweep.rows import RowShapeError, SweepRow
from mobiledeploy.sweep.run import add_estimates, out_lock, reusable_export, run_local, run_ray
from mobiledeploy.targets import host_cores

SCHEMA_VERSION = 1


@dataclass
class SweepResult:
    summary: dict
    out: Path
    files: list[Path] = field(default_factory=list)

    @property
    def recommendations(self) -> list[dict]:
        return self.summary["recommendations"]

    @property
    def failed(self) -> list[dict]:
        return [c for c in self.summary["configs"] if c["status"] != "ok"]


def run_sweep(cfg: grid.SweepConfig, *, progress: OnProgress | None = None, checked: bool = False) -> SweepResult:
    """Run every config of ``cfg`` not already done in ``cfg.out``; ``progress`` gets a line as each
    config is found cached, is found stale (a note), starts the workers and finishes."""
    if not checked:
        cfg.check()
    t0 = time.perf_counter()
    out = io.ensure_writable_dir(Path(cfg.out).expanduser().absolute())
    with out_lock(out):  # a second sweep into the same --out is refused while this one runs
        try:
            return _run_sweep(cfg, out, progress, t0)
        except OSError as e:  # a state file that cannot be written (a directory in its place, disk full)
            name = e.filename2 or e.filename  # os.replace(temporary, destination): the destination
            where = f" {str(name)!r}" if name else f" in {str(out)!r}"
            raise MobiledeployError(f"cannot write{where}: {e.strerror or e}") from None


def _run_sweep(cfg: grid.SweepConfig, out: Path, progress: OnProgress | None, t0: float) -> SweepResult:
    job_list = grid.jobs(cfg)
    rows_dir = io.ensure_writable_dir(out / "rows")
    results: dict[str, SweepRow] = {}
    todo = []

    def count() -> str:
        return f"[{len(results):>{len(str(len(job_list)))}}/{len(job_list)}]"

    for job in job_list:
        cached, stale = reusable_row(rows_dir / job.result_name, job)
        if cached is not None:
            results[job.name] = cached
            emit(progress, "sweep", f"{count()} {job.name}: cached", done=len(results), total=len(job_list))
        else:
            todo.append(job)
            if stale:  # a kept result that cannot be trusted: one line, and the config runs again
                emit(progress, "sweep", f"warning: {job.name}: kept result not used, {stale}; running it again",
                     "note")

    def on_result(job, res: SweepRow) -> None:
        io.write_json(rows_dir / job.result_name, res.to_json())  # atomically, as soon as it is known
        results[job.name] = res
        emit(progress, "sweep", f"{count()} {job.name}: {_outcome(res)}", done=len(results), total=len(job_list),
             failed=not res.ok, metrics=res.timings_s)

    workers = cfg.jobs or len(host_cores())
    executor = {"kind": cfg.executor, "workers": workers, "ran": len(todo), "cached": len(job_list) - len(todo)}
    if todo:  # before the first config's export: a line at once, not after minutes
        emit(progress, "sweep", f"{count()} running {len(todo)} configs on {min(workers, len(todo))} worker(s); "
                                "a line as each finishes", "note", done=len(results), total=len(job_list))
    if todo and cfg.executor == "ray":
        executor.update(run_ray(todo, on_result, address=cfg.ray_address, workers=cfg.jobs))
    elif todo:
        run_local(todo, workers, on_result)
    ordered = [results[j.name] for j in job_list]
    for job, res in zip(job_list, ordered):  # targets added since the job ran: estimates only, no rerun
        before = json.dumps([a.to_json() for a in res.artifacts], sort_keys=True)
        add_estimates(res.artifacts, cfg.targets, cfg.estimate_method)
        if json.dumps([a.to_json() for a in res.artifacts], sort_keys=True) != before:
            io.write_json(rows_dir / job.result_name, res.to_json())
    summary = summarize(cfg, ordered, executor, wall_s=time.perf_counter() - t0)
    previous = _load(out / "results.json")
    previous = previous.get("report_key") if isinstance(previous, dict) else None
    summary["report_key"] = grid.input_hash({**{k: summary[k] for k in ("sweep", "rows", "fronts", "recommendations",
                                                                   "warnings", "versions")},
                                             "report_code": Path(report.__file__).read_bytes()})
    files = report.write_tables(out, summary)
    if previous == summary["report_key"] and (out / "report.html").is_file():
        return SweepResult(summary=summary, out=out, files=files + [out / "report.html"])  # plots unchanged
    pngs = report.plots(out, summary)
    files += [*pngs.values(), report.write_html(out, summary, pngs)]
    return SweepResult(summary=summary, out=out, files=files)


def _outcome(res: SweepRow) -> str:
    """How one config ended, for its progress line."""
    t = res.timings_s
    if not res.ok:
        return f"FAILED: {res.error}"
    steps = ", ".join(f"{k} {v:.1f} s" for k, v in t.items() if k not in ("total", "bench_wait", "cpu"))
    return f"done in {t.get('total', 0):.1f} s ({steps}) on {(res.node or {}).get('host', '?')}"


def constraints(cfg: grid.SweepConfig) -> pareto.Constraints:
    return pareto.Constraints(cfg.max_latency_ms, cfg.max_size_kb, cfg.min_top1)


def _load(path: Path):
    """The JSON in ``path`` (any shape), or None when it is missing, not a regular file or not JSON."""
    try:
        regular_file(path, what="sweep state file")  # never blocks on a FIFO or a device
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UsageError):
        return None


def reusable_row(path: Path, job) -> tuple[SweepRow | None, str | None]:
    """(the finished result in ``path``, None) when it can stand for ``job``; else (None, why not).

    ``why`` is None when there is nothing to warn about (no file, or a failed job to retry);
    otherwise it says what is wrong with the file (a shape this version does not write, or
    an artifact that is gone or changed since it was measured): the job is run again.
    """
    if not path.exists() and not path.is_symlink():
        return None, None
    doc = _load(path)
    if doc is None:
        return None, f"{path.name} is not readable JSON"
    try:
        row = SweepRow.from_json(doc, name=job.name, row_key=job.row_key)
    except RowShapeError as e:
        return None, f"{path.name} is not a result this version wrote ({e})"
    if not row.ok:
        return None, None
    export_dir = Path(job.export.out)
    manifest, why = reusable_export(export_dir)  # every artifact there with its recorded size and SHA-256
    if manifest is None:
        return None, f"its export cannot be reused: {why or 'the directory is gone'}"
    listed = {a["file"]: a for a in manifest["artifacts"]}
    for a in row.artifacts:
        m = listed.get(a.file)
        if m is None or m["size_bytes"] != a.size_bytes or a.sha256 not in (None, m["sha256"]):
            return None, f"its artifact {a.file} is not the one its export holds"
        a.path = str(export_dir / a.file)  # where it is now (the sweep directory may have moved)
    row.export_dir = str(export_dir)
    return row, None


def summarize(cfg: grid.SweepConfig, results: list[SweepRow], executor: dict, *, wall_s: float) -> dict:
    targets = list(dict.fromkeys(cfg.targets))
    rows = report.table_rows(results, targets)
    measured = [r for r in rows if r["status"] == "ok"]
    use_accuracy = (not cfg.random_weights and bool(measured)
                    and all(r.get("top1") is not None for r in measured))
    fronts = {t: [r["file"] for r in pareto.front(rows, t, use_accuracy=use_accuracy)] for t in targets}
    cons = constraints(cfg)
    recs = [pareto.recommend(rows, t, cons, use_accuracy=use_accuracy).to_json() for t in targets] if cons.any else []
    cond = machine_conditions()
    versions = next((r.versions for r in results if r.versions), {})
    label = next((r.bench["label"] for r in results if r.bench), f"host latency, {cfg.bench_target} settings")
    warnings = pareto.slower_than_fp32(rows)
    warnings += [f"{r.name}: {r.error}" for r in results if not r.ok]
    if cfg.estimate_method != "cost":
        warnings += estimate_errors(results, targets)
    return {"schema_version": SCHEMA_VERSION, "sweep": {**cfg.to_json(), "targets": targets},
            "machine": {**cond["host"], "loadavg_1_5_15": cond["loadavg_1_5_15"], "time_utc": cond["time_utc"]},
            "versions": versions, "executor": executor, "wall_s": round(wall_s, 2),
            "random_weights": cfg.random_weights, "use_accuracy": use_accuracy, "bench_label": label,
            "configs": [{"name": r.name, "status": r.status, "error": r.error, "node": r.node,
                         "timings_s": r.timings_s, "export_reused": r.export_reused, "export_dir": r.export_dir,
                         "row_key": r.row_key, "bench_loadavg_1m": (r.bench or {}).get("loadavg_1m")}
                        for r in results],
            "rows": rows, "fronts": fronts, "recommendations": recs, "warnings": warnings}


def estimate_errors(results: list[SweepRow], targets) -> list[str]:
    """One line per target and reason: how many artifacts have no device estimate there, and why."""
    arts = [a for r in results for a in r.artifacts if a.ok]
    out = []
    for t in targets:
        why = Counter((a.estimates.get(t) or {}).get("error") for a in arts)
        out += [f"{t}: no device estimate for {n} of {len(arts)} artifacts: {err}" for err, n in why.items() if err]
    return out

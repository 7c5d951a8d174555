"""``run_sweep(SweepConfig)``: what ``mobiledeploy sweep`` calls.

Layout of ``--out``::

    exports/<config>-<export hash>/   the export (artifacts + manifest.json), reused by reruns
    rows/<config>-<row hash>.json     one job's result, written atomically as it finishes
    results.json, results.csv, results.md, report.html, pareto_<target>.png, latency_histograms.png

A rerun loads every ``rows/`` file whose hash matches and whose job succeeded, runs only
the others (failed jobs are retried), then rewrites the tables and the report.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from mobiledeploy import io
from mobiledeploy.sweep import grid, pareto, report
from mobiledeploy.sweep.run import add_estimates, run_local, run_ray

SCHEMA_VERSION = 1
OnEvent = Callable[[str, object, dict, int, int], None]  # (kind: cached|done, job, result, finished, total)


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


def run_sweep(cfg: grid.SweepConfig, *, on_event: OnEvent | None = None, checked: bool = False) -> SweepResult:
    if not checked:
        cfg.check()
    t0 = time.perf_counter()
    job_list = grid.jobs(cfg)
    out = io.ensure_writable_dir(Path(cfg.out).expanduser().absolute())
    rows_dir = io.ensure_writable_dir(out / "rows")
    results: dict[str, dict] = {}
    todo = []
    for job in job_list:
        cached = _load(rows_dir / job.result_name)
        if cached is not None and cached.get("status") == "ok":
            results[job.name] = cached
            if on_event:
                on_event("cached", job, cached, len(results), len(job_list))
        else:
            todo.append(job)

    def on_result(job, res: dict) -> None:
        io.write_json(rows_dir / job.result_name, res)  # atomically, as soon as it is known
        results[job.name] = res
        if on_event:
            on_event("done", job, res, len(results), len(job_list))

    from mobiledeploy.targets import host_cores

    workers = cfg.jobs or len(host_cores())
    executor = {"kind": cfg.executor, "workers": workers, "ran": len(todo), "cached": len(job_list) - len(todo)}
    if todo and cfg.executor == "ray":
        executor.update(run_ray(todo, on_result, address=cfg.ray_address, workers=cfg.jobs))
    elif todo:
        run_local(todo, workers, on_result)
    ordered = [results[j.name] for j in job_list]
    for job, res in zip(job_list, ordered):  # targets added since the job ran: estimates only, no rerun
        before = json.dumps(res["artifacts"], sort_keys=True)
        add_estimates(res["artifacts"], cfg.targets)
        if json.dumps(res["artifacts"], sort_keys=True) != before:
            io.write_json(rows_dir / job.result_name, res)
    summary = summarize(cfg, ordered, executor, wall_s=time.perf_counter() - t0)
    previous = (_load(out / "results.json") or {}).get("report_key")
    summary["report_key"] = grid.input_hash({**{k: summary[k] for k in ("sweep", "rows", "fronts", "recommendations",
                                                                   "warnings", "versions")},
                                             "report_code": Path(report.__file__).read_bytes()})
    files = report.write_tables(out, summary)
    if previous == summary["report_key"] and (out / "report.html").is_file():
        return SweepResult(summary=summary, out=out, files=files + [out / "report.html"])  # plots unchanged
    pngs = report.plots(out, summary)
    files += [*pngs.values(), report.write_html(out, summary, pngs)]
    return SweepResult(summary=summary, out=out, files=files)


def constraints(cfg: grid.SweepConfig) -> pareto.Constraints:
    return pareto.Constraints(cfg.max_latency_ms, cfg.max_size_kb, cfg.min_top1)


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def summarize(cfg: grid.SweepConfig, results: list[dict], executor: dict, *, wall_s: float) -> dict:
    from mobiledeploy.bench.core import machine_conditions

    targets = list(dict.fromkeys(cfg.targets))
    rows = report.table_rows(results, targets)
    measured = [r for r in rows if r["status"] == "ok"]
    use_accuracy = (not cfg.random_weights and bool(measured)
                    and all(r.get("top1") is not None for r in measured))
    fronts = {t: [r["file"] for r in pareto.front(rows, t, use_accuracy=use_accuracy)] for t in targets}
    cons = constraints(cfg)
    recs = [pareto.recommend(rows, t, cons, use_accuracy=use_accuracy).to_json() for t in targets] if cons.any else []
    cond = machine_conditions()
    versions = next((r["versions"] for r in results if r.get("versions")), {})
    label = next((r["bench"]["label"] for r in results if r.get("bench")), f"host latency, {cfg.bench_target} settings")
    warnings = pareto.slower_than_fp32(rows)
    warnings += [f"{r['name']}: {r['error']}" for r in results if r["status"] != "ok"]
    return {"schema_version": SCHEMA_VERSION, "sweep": {**cfg.to_json(), "targets": targets},
            "machine": {**cond["host"], "loadavg_1_5_15": cond["loadavg_1_5_15"], "time_utc": cond["time_utc"]},
            "versions": versions, "executor": executor, "wall_s": round(wall_s, 2),
            "random_weights": cfg.random_weights, "use_accuracy": use_accuracy, "bench_label": label,
            "configs": [{"name": r["name"], "status": r["status"], "error": r.get("error"), "node": r.get("node"),
                         "timings_s": r.get("timings_s"), "export_reused": r.get("export_reused"),
                         "export_dir": r.get("export_dir"), "row_key": r["row_key"],
                         "bench_loadavg_1m": (r.get("bench") or {}).get("loadavg_1m")} for r in results],
            "rows": rows, "fronts": fronts, "recommendations": recs, "warnings": warnings}

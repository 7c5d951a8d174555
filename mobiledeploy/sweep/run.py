"""One sweep job end to end (``run_job``) and the executors that run many.

``run_job`` runs in a worker process: export (reused when its directory, named by the
inputs' hash, already holds a manifest), then bench's own service (``bench.service.run_bench``):
host latency of every artifact under a node-wide lock (latency measurements never overlap
on one machine; exports and evals do) and top-1 when there is a data set; then the device
estimate per target through ``estimates_for``. It never raises:
a failure is a ``SweepRow`` with ``status="error"`` and the stage it failed in.

Executors call ``on_result(job, result)`` in the driver as each job finishes; the driver
writes the result atomically right away, so an interrupted sweep keeps every finished
job. ``local`` keeps ``jobs`` worker processes alive for the whole sweep (TensorFlow is
imported once per worker, not per config); ``ray`` sends one task per job to a Ray
cluster (each node measures its own latency; the node is recorded).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

from mobiledeploy.bench.service import BenchRequest, run_bench
from mobiledeploy.cost.estimate import estimates_for
from mobiledeploy.errors import MobiledeployError, UsageError, one_line
from mobiledeploy.export.pipeline import MANIFEST, export_model
from mobiledeploy.export.validate import validation_summary
from mobiledeploy.machine import loadavg, node
from mobiledeploy.models.artifacts import degraded_mark, read_manifest, recorded_file
from mobiledeploy.sweep.grid import target_fingerprint_hash
from mobiledeploy.sweep.rows import ArtifactRow, SweepRow
from mobiledeploy.targets import load_target

LOCK_NAME = "mobiledeploy-bench.lock"
OUT_LOCK_NAME = ".sweep.lock"  # in --out: one sweep at a time there
OnResult = Callable[[object, SweepRow], None]


# ---------------------------------------------------------------- one job (in a worker)


def run_job(job) -> SweepRow:
    """Export, bench, eval and estimate one job; a ``SweepRow``, never an exception."""
    t0, cpu0 = time.perf_counter(), _cpu_s()
    row = SweepRow(name=job.name, row_key=job.row_key, export_key=job.export_key, export_dir=job.export.out,
                   node=node_info())
    stage = "export"
    try:
        t = time.perf_counter()
        manifest, reused, redone = _export(job)
        row.timings_s["export"] = round(time.perf_counter() - t, 2)
        row.export_reused, row.model, row.versions = reused, manifest["model"], manifest["versions"]
        row.warnings = list(manifest.get("warnings") or ())
        if redone:
            row.warnings.append(f"the kept export was redone: {redone}")
        stage = "bench"
        try:
            run = _bench(job)
        except Exception as e:  # in eval, after the latencies were measured: keep them
            if getattr(e, "bench_run", None) is not None:
                _record_bench(row, e.bench_run)
                stage = e.stage
            raise
        _record_bench(row, run)
        artifacts = [_artifact_row(a, run.report, Path(job.export.out)) for a in manifest["artifacts"]
                     if a["format"] in ("tflite", "onnx")]
        if job.data:
            stage = "eval"
            _add_accuracy(artifacts, run.accuracy or {})
            row.timings_s["eval"] = round(run.timings_s["eval"], 2)
        stage = "estimate"
        t = time.perf_counter()
        add_estimates(artifacts, job.targets, job.estimate_method)
        if job.estimate_method != "cost":  # emulated runs: minutes, worth a progress figure (cost: none, as before)
            row.timings_s["estimate"] = round(time.perf_counter() - t, 2)
        row.artifacts = artifacts
    except (MobiledeployError, OSError) as e:
        row.status, row.stage, row.error, row.usage_error = "error", stage, f"{stage}: {e}", isinstance(e, UsageError)
    except Exception as e:  # noqa: BLE001 - one job's bug is one error row, never the end of the sweep
        row.status, row.stage = "error", stage
        row.error = f"{stage}: internal error: {one_line(e, None, typed=True)}"
        row.traceback = traceback.format_exc(limit=8)
    failed = [a for a in row.artifacts if not a.ok]
    if row.ok and failed:
        row.status, row.error = "partial", f"{len(failed)} of {len(row.artifacts)} artifacts failed"
    row.timings_s["total"] = round(time.perf_counter() - t0, 2)
    row.timings_s["cpu"] = round(_cpu_s() - cpu0, 2)  # this worker and its bench/eval children, all threads
    return row


def _cpu_s() -> float:
    try:
        import resource
    except ImportError:
        return time.process_time()
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _export(job) -> tuple[dict, bool, str | None]:
    """(manifest, reused, why a kept export was not reusable)."""
    path = Path(job.export.out) / MANIFEST
    manifest, redone = reusable_export(Path(job.export.out))
    if manifest is not None:  # the manifest is written last, atomically: the export is complete
        return manifest, True, None
    try:  # removes what a killed worker left (clean_stale_staging), never a live export's staging
        export_model(job.export)
    finally:
        _release_keras_memory()
    return read_manifest(path), False, redone


def reusable_export(export_dir: Path) -> tuple[dict | None, str | None]:
    """(the manifest of the complete export in ``export_dir``, None), or (None, why it cannot be
    reused): a manifest that is unreadable or of another shape, an artifact missing or changed
    since it was written (size, SHA-256). (None, None) when there is no export yet."""
    path = export_dir / MANIFEST
    if not path.exists() and not path.is_symlink():
        return None, None
    try:
        m = read_manifest(path)
    except MobiledeployError as e:
        return None, str(e)
    if not isinstance(m.get("model"), dict) or not isinstance(m.get("versions"), dict) \
            or not isinstance(m.get("warnings") or [], list) or not m["artifacts"]:
        return None, f"{MANIFEST} is not a complete export manifest"
    for a in m["artifacts"]:
        f, size = a.get("file"), a.get("size_bytes")
        if not isinstance(f, str) or not f or Path(f).name != f or f in (".", "..") \
                or not isinstance(a.get("format"), str) or not isinstance(a.get("precision"), str) \
                or not isinstance(size, int) or isinstance(size, bool) or not isinstance(a.get("sha256"), str) \
                or not isinstance(a.get("validation") or {}, dict):
            return None, f"{MANIFEST} has a malformed artifact entry"
        try:
            recorded_file(path, a)  # inside the directory, with its recorded size and SHA-256
        except (MobiledeployError, OSError) as e:
            return None, one_line(e)
    return m, None


def _release_keras_memory() -> None:
    """A worker builds many models: drop Keras' global state between them."""
    keras = sys.modules.get("keras")
    if keras is not None:
        with contextlib.suppress(Exception):
            keras.backend.clear_session()


def _bench(job):
    """The one bench service (``bench.service.run_bench``) on the job's export: host latency under
    this machine's bench lock, then top-1 when the job has data (device estimates: ``add_estimates``)."""
    return run_bench(BenchRequest(models=(job.export.out,), target=job.bench_target, runs=job.samples,
                                  warmup=job.warmup, timeout_s=job.timeout_s, data=job.data,
                                  eval_limit=job.eval_limit, estimates=False), lock=bench_lock)


def _record_bench(row: SweepRow, run) -> None:
    """The bench part of a job's result: its timings (waited for the lock, measuring), label and settings."""
    row.timings_s.update(bench_wait=round(run.timings_s["bench_wait"], 2), bench=round(run.timings_s["bench"], 2))
    row.bench = {"label": run.settings.label, "settings": run.settings.to_json(),
                 "loadavg_1m": (loadavg() or [None])[0]}


def _artifact_row(artifact: dict, bench, export_dir: Path) -> ArtifactRow:
    b = next((r for r in bench.results if Path(r.model).name == artifact["file"]), None)
    row = ArtifactRow(file=artifact["file"], path=str(export_dir / artifact["file"]), format=artifact["format"],
                      precision=artifact["precision"], size_bytes=artifact["size_bytes"],
                      sha256=artifact.get("sha256"), validation=_validation(artifact),
                      degraded=degraded_mark(artifact))
    if b is None:
        row.status, row.error = "error", "not benchmarked"
    elif not b.ok:
        row.status, row.error, row.runtime = "error", f"bench: {b.error}", b.runtime
    else:
        row.runtime, row.init_ms, row.peak_rss_mb, row.benched = b.runtime, b.init_ms, b.peak_rss_mb, True
        row.host_ms = {k: round(v, 4) for k, v in b.latency_ms.items()}
        row.samples_ms = [round(s, 4) for s in b.samples_ms]
    return row


def _validation(artifact: dict) -> str | None:
    """The export's validation line for the artifact (None when the manifest has no readable record)."""
    try:
        return validation_summary(artifact["validation"])
    except (KeyError, TypeError, ValueError):
        return None


def _add_accuracy(rows: list[ArtifactRow], accuracy: dict) -> None:
    """Top-1 from the bench service (keyed by the path it benched) into the rows that benched."""
    by_name = {Path(m).name: a for m, a in accuracy.items()}
    for r in rows:
        if not r.ok:
            continue
        a = by_name.get(r.file, {})
        r.top1, r.top5, r.eval_samples, r.eval_data = a.get("top1"), a.get("top5"), a.get("samples"), a.get("data")
        r.evaluated = True
        if a.get("status") != "ok":
            r.status, r.error = "error", f"eval: {a.get('error') or 'failed'}"


def add_estimates(rows: list[ArtifactRow], targets, method: str = "cost") -> None:
    """Fill ``row.estimates[target]`` (ms or an error) for each target that lacks one by ``method``:
    ``cost`` (the target's cost model) or ``kernels`` (the artifact's emulated kernels, cached per
    artifact, core and runtime version by ``kernels.estimate``; recorded with ``"method"``, so that a
    stored estimate of one method never stands for the other)."""
    for name in targets:
        fp = target_fingerprint_hash(name)
        todo = [r for r in rows if not _current(r.estimates.get(name), fp, method)]
        todo = [r for r in todo if Path(r.path).is_file()]
        if not todo:
            continue
        if method == "kernels":
            from mobiledeploy.kernels.estimate import kernel_estimates_for

            est = kernel_estimates_for([r.path for r in todo], load_target(name))
        else:
            est = estimates_for([r.path for r in todo], load_target(name))
        for r in todo:
            e = est.get(r.path, {})
            r.estimates[name] = {"ms": e.get("estimate_ms"), "fitted": e.get("fitted"),
                                 "error": e.get("estimate_error"), "target_hash": fp}
            if method != "cost":  # the cost model's dict is as it always was
                r.estimates[name] |= {"method": method, "label": e.get("label"), "cached": e.get("cached")}


def _current(stored: dict | None, target_hash: str, method: str) -> bool:
    """Whether a stored estimate was made on this target profile by this method (none: the cost model)."""
    return bool(stored) and stored.get("target_hash") == target_hash and stored.get("method", "cost") == method


def node_info() -> dict:
    d = {**node(), "pid": os.getpid()}
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        with contextlib.suppress(Exception):
            d["ray_node_id"] = ray.get_runtime_context().get_node_id()
    return d


@contextlib.contextmanager
def bench_lock():
    """One latency measurement at a time on this machine (all processes, all sweeps)."""
    with _flock(Path(tempfile.gettempdir()) / LOCK_NAME, wait=True):
        yield


@contextlib.contextmanager
def out_lock(out: Path):
    """One sweep at a time in ``out``: a second one is refused with one line while the first runs.

    An advisory lock on ``out/.sweep.lock`` (released by the kernel when its process dies,
    even by SIGKILL), which also holds the owner's pid for the message."""
    path = out / OUT_LOCK_NAME
    with _flock(path, wait=False) as f:
        if f is False:
            try:
                owner = path.read_text(encoding="utf-8").strip()
            except OSError:
                owner = ""
            owner = f" (pid {owner})" if owner.isdigit() else ""
            raise MobiledeployError(f"another sweep{owner} is running in {str(out)!r} (--out); wait for it to "
                                    "finish or choose another --out")
        if f is not None:
            f.seek(0)
            f.truncate()
            f.write(str(os.getpid()))
            f.flush()
        yield


@contextlib.contextmanager
def _flock(path: Path, *, wait: bool):
    """An exclusive ``flock`` on ``path``: yields the open file, False when ``wait`` is off and
    another process holds it, None where there is no flock (not POSIX)."""
    try:
        import fcntl
    except ImportError:
        yield None
        return
    with open(path, "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield f
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def error_result(job, message: str) -> SweepRow:
    return SweepRow(name=job.name, row_key=job.row_key, export_key=job.export_key, export_dir=job.export.out,
                    status="error", stage="worker", error=message)


# ---------------------------------------------------------------- executors (in the driver)


def _worker_init() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides; it cancels and kills workers


def run_local(jobs: list, workers: int, on_result: OnResult) -> None:
    """``workers`` long-lived processes; a crashed worker's jobs are retried alone, then error rows."""
    if not jobs:
        return
    crashed = _pool_run(jobs, workers, on_result)
    for job in crashed:  # isolate: which job killed the pool?
        if _pool_run([job], 1, on_result):
            on_result(job, error_result(job, "the worker process died (crash or out of memory) running this job"))


def _pool_run(jobs: list, workers: int, on_result: OnResult) -> list:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    crashed = []
    pool = ProcessPoolExecutor(max_workers=max(1, min(workers, len(jobs))), initializer=_worker_init,
                               mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = {pool.submit(run_job, job): job for job in jobs}
        for fut in as_completed(futures):
            job = futures[fut]
            try:
                res = fut.result()
            except BrokenProcessPool:
                crashed.append(job)
                continue
            on_result(job, res)
    except BaseException:
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            with contextlib.suppress(Exception):
                proc.kill()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return crashed


def run_ray(jobs: list, on_result: OnResult, *, address: str | None = None, workers: int | None = None) -> dict:
    """One Ray task per job; returns facts about the cluster for the report."""
    import ray

    started = not ray.is_initialized()
    if started:
        kw = {"address": address} if address and address != "local" else {"num_cpus": workers}
        try:
            env = {"TF_CPP_MIN_LOG_LEVEL": "3"}
            if os.environ.get("PYTHONPATH"):  # a source checkout: the workers import the same code
                env["PYTHONPATH"] = os.environ["PYTHONPATH"]
            ray.init(**kw, include_dashboard=False, log_to_driver=False, configure_logging=False,
                     runtime_env={"env_vars": env})
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise UsageError(f"cannot connect to Ray at {address!r} (--ray-address): {e}") from None
    try:
        info = {"nodes": sum(1 for n in ray.nodes() if n.get("Alive")),
                "cpus": ray.cluster_resources().get("CPU"), "address": address or "local"}
        task = ray.remote(num_cpus=1, max_retries=0)(run_job)
        pending = {task.remote(job): job for job in jobs}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                job = pending.pop(ref)
                try:
                    res = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - a dead worker or node: that job's error row
                    res = error_result(job, f"Ray task failed: {one_line(e, typed=True)}")
                on_result(job, res)
        return info
    finally:
        if started:
            ray.shutdown()

"""``bench --profile``: per-operator host times of a model, measured in a child process
(``mobiledeploy.runtimes.profile`` says how, per runtime), and their table rows."""

from __future__ import annotations


def profile_model(path: str, settings) -> dict:
    """Per-operator times of ``path`` under ``settings`` (a ``BenchSettings``), in a child process."""
    from mobiledeploy.runtimes.child import run_child

    job = {"task": "profile", "model": str(path), "threads": settings.threads, "xnnpack": settings.xnnpack,
           "ort_opt_level": settings.ort_opt_level, "warmup": settings.warmup, "runs": settings.runs or 50,
           "seed": settings.seed, "shapes": {k: list(v) for k, v in settings.shapes}}
    try:
        return run_child(job, timeout_s=settings.timeout_s)
    except OSError as e:  # could not start the child (no processes, no memory)
        return {"status": "error", "error": f"cannot start the profiling child process: {e}"}


def profile_rows(profile: dict, p50_ms: float | None) -> tuple[list[list[str]], str]:
    """Table rows (index, operator, name, ms, %) and the one-line summary against the bench p50."""
    total = profile["sum_ms"] or 0.0
    rows = [[str(o["index"]), o["op"], o["name"], f"{o['ms']:.3f}", f"{100 * o['ms'] / total:.1f}" if total else "-"]
            for o in profile["ops"]]
    vs = f"; bench p50 {p50_ms:.3f} ms: sum is {100 * total / p50_ms:.0f} % of it" if p50_ms else ""
    return rows, f"{len(rows)} operators, sum {total:.3f} ms{vs} ({profile['method']})"

"""The child side of ``bench``: measure one model in this process, report JSON.

Run as ``python -m mobiledeploy.runtimes.child``: settings arrive as one JSON object on stdin;
the result leaves as one JSON object on the *original* stdout, while fd 1 is pointed
at stderr so that anything the runtimes print cannot corrupt it. The parent owns the
timeout and turns a signal death into an error row. This module never imports
TensorFlow (the runtimes it loads are LiteRT and ONNX Runtime only).

``timed_loop`` is the one timing loop; ``benchmarks/harness_overhead.py`` compares it
with a bare ``invoke()`` loop.
"""

from __future__ import annotations

import json
import os
import sys
import time

DEFAULT_MIN_RUNS = 50
DEFAULT_MIN_TIME_S = 2.0
FAULT_ENV = "MOBILEDEPLOY_TEST_CHILD_FAULT"  # test hook: segfault | sleep | raise


def run_plan(runs: int | None, min_time_s: float | None) -> tuple[int, float, int | None]:
    """(minimum runs, minimum seconds, maximum runs) for the timed phase.

    - neither given: at least 50 runs and at least 2 s;
    - ``--runs N`` only: exactly N runs;
    - ``--min-time S`` only: runs until S seconds have passed (at least one run);
    - both: at least N runs and at least S seconds.
    """
    if runs is None and min_time_s is None:
        return DEFAULT_MIN_RUNS, DEFAULT_MIN_TIME_S, None
    if min_time_s is None:
        return int(runs), 0.0, int(runs)
    return (int(runs) if runs is not None else 1), float(min_time_s), None


def timed_loop(invoke, *, min_runs: int, min_time_s: float = 0.0, max_runs: int | None = None) -> list[int]:
    """Call ``invoke()`` repeatedly; return each call's duration in nanoseconds.

    Only the call is inside the two clock reads; the stopping test sits outside them.
    """
    clock = time.perf_counter_ns
    min_ns = int(min_time_s * 1e9)
    samples: list[int] = []
    append = samples.append
    start = clock()
    while True:
        t0 = clock()
        invoke()
        t1 = clock()
        append(t1 - t0)
        n = len(samples)
        if max_runs is not None and n >= max_runs:
            break
        if n >= min_runs and t1 - start >= min_ns:
            break
    return samples


def peak_rss_kb() -> int:
    """This process's peak resident set size (VmHWM) in KiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource

    peak = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS, KiB elsewhere


def measure(settings: dict) -> dict:
    """Load, warm up and time one model under ``settings``; return the raw figures."""
    cores = settings.get("cores")
    if cores and hasattr(os, "sched_setaffinity"):  # Linux; elsewhere the thread count alone applies
        os.sched_setaffinity(0, cores)  # before the runtime starts its threads
    _fault_hook()
    from mobiledeploy import runtimes

    # import the runtime library first: peak_rss_mb is the memory the model adds, not the library
    runtimes.runtime_for(settings["model"]).load_library()
    rss0 = peak_rss_kb()
    shapes = {k: tuple(v) for k, v in (settings.get("shapes") or {}).items()}
    t0 = time.perf_counter_ns()
    session = runtimes.open_session(settings["model"], threads=settings.get("threads"),
                                    xnnpack=settings.get("xnnpack", True),
                                    ort_opt_level=settings.get("ort_opt_level", "all"), shapes=shapes)
    init_ns = time.perf_counter_ns() - t0
    session.set_inputs(runtimes.random_inputs(session, seed=settings.get("seed", 0)))
    t0 = time.perf_counter_ns()
    session.invoke()
    first_ns = time.perf_counter_ns() - t0
    for _ in range(int(settings.get("warmup", 10))):
        session.invoke()
    min_runs, min_time_s, max_runs = run_plan(settings.get("runs"), settings.get("min_time_s"))
    samples = timed_loop(session.invoke, min_runs=min_runs, min_time_s=min_time_s, max_runs=max_runs)
    rss1 = peak_rss_kb()
    return {"status": "ok", "runtime": session.runtime, "precision": session.precision(),
            "init_ms": init_ns / 1e6, "first_ms": first_ns / 1e6, "samples_ms": [s / 1e6 for s in samples],
            "peak_rss_mb": (rss1 - rss0) / 1024.0, "process_peak_rss_mb": rss1 / 1024.0,
            "inputs": [s.to_json() | {"shape": list(runtimes.input_shape(session, s))} for s in session.inputs],
            "outputs": [s.to_json() for s in session.outputs],
            "cores": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "tensorflow_imported": "tensorflow" in sys.modules}


def _fault_hook() -> None:
    """Deliberate failures for the isolation tests (never set in normal use)."""
    fault = os.environ.get(FAULT_ENV)
    if fault == "segfault":
        import signal

        os.kill(os.getpid(), signal.SIGSEGV)
    elif fault == "sleep":
        time.sleep(3600)
    elif fault == "raise":
        raise RuntimeError("deliberate failure from " + FAULT_ENV)


def main() -> int:
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # runtime chatter on fd 1 goes to stderr, not into our JSON
    sys.stdout = sys.stderr
    try:
        result = measure(json.loads(sys.stdin.read()))
    except Exception as e:  # any failure of this one model becomes its error row
        msg = " ".join(str(e).split()) or type(e).__name__
        from mobiledeploy.errors import MobiledeployError

        result = {"status": "error", "error": msg if isinstance(e, MobiledeployError) else f"{type(e).__name__}: {msg}",
                  "usage": getattr(e, "exit_code", 1) == 2}
    out.write(json.dumps(result))
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

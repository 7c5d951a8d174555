"""The one timing loop (``timed_loop``) and the plan it follows (``run_plan``).

Used by the child's ``bench`` task and by ``bench --profile``; ``benchmarks/harness_overhead.py``
compares the loop with a bare ``invoke()`` loop. Standard library only (it also runs on the
emulated aarch64 guest).
"""

from __future__ import annotations

import time

DEFAULT_MIN_RUNS = 50
DEFAULT_MIN_TIME_S = 2.0


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

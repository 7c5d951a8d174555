"""Does the bench harness add latency? Its timing loop vs. a bare invoke() loop.

Same model, same process, same inputs: blocks of a bare loop (the runtime's own call
with two clock reads around it) alternate with blocks of ``mobiledeploy.runtimes.timing.timed_loop``
over ``Session.invoke`` (exactly what the bench child runs). Reports both p50s and the
relative difference, for LiteRT and ONNX Runtime, on MobileNet V1 (alpha 0.25 and 0.5,
resolution 128, random init), one thread pinned to one core.

    python -m benchmarks run harness_overhead [--reps 100] [--block 10]

Models are built once with TensorFlow in a separate process (this process never imports
it) and cached in build/bench-models/. Results go to benchmarks/results/harness_overhead.json.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common.bench_models import SIZES, build_models, conditions, model_paths

KIND = "regression"


def bare_block(fn, n: int) -> list[int]:
    clock = time.perf_counter_ns
    out = [0] * n
    for i in range(n):
        t0 = clock()
        fn()
        out[i] = clock() - t0
    return out


def measure(path: Path, fmt: str, *, reps: int, block: int) -> dict:
    from mobiledeploy import runtimes
    from mobiledeploy.runtimes.timing import timed_loop

    sess = runtimes.open_session(path, threads=1)
    sess.set_inputs(runtimes.random_inputs(sess))
    # the bare call: the runtime's own API, nothing of ours in between
    if fmt == "tflite":
        bare = sess.interpreter.invoke
    else:
        ort_sess, names, feeds = sess._sess, sess._out_names, sess._feeds
        def bare():
            ort_sess.run(names, feeds)
    for _ in range(20):  # warm-up
        bare()
    bare_ns, harness_ns, ratios = [], [], []
    for rep in range(reps):  # interleaved, order alternating, so drift hits both alike
        order = (("bare", "harness") if rep % 2 == 0 else ("harness", "bare"))
        blocks = {}
        for which in order:
            if which == "bare":
                blocks[which] = bare_block(bare, block)
            else:
                blocks[which] = timed_loop(sess.invoke, min_runs=block, max_runs=block)
        bare_ns += blocks["bare"]
        harness_ns += blocks["harness"]
        ratios.append(np.median(blocks["harness"]) / np.median(blocks["bare"]))
    b50, h50 = float(np.median(bare_ns)) / 1e6, float(np.median(harness_ns)) / 1e6
    return {"model": path.name, "runtime": sess.runtime, "threads": 1, "runs_each": len(bare_ns),
            "bare_p50_ms": round(b50, 4), "harness_p50_ms": round(h50, 4),
            "bare_mean_ms": round(float(np.mean(bare_ns)) / 1e6, 4),
            "harness_mean_ms": round(float(np.mean(harness_ns)) / 1e6, 4),
            "relative_diff_p50": round((h50 - b50) / b50, 4),
            "paired_block_ratio_median": round(float(np.median(ratios)), 4), "within_3pct": abs(h50 - b50) / b50 <= 0.03}


def loop_cost_ns(n: int = 200_000) -> dict:
    """What each loop costs per call around a no-op: the harness's own overhead, free of model noise."""
    from mobiledeploy.runtimes.timing import timed_loop

    class Noop:
        def invoke(self):
            pass

    noop = Noop()
    bare = [float(np.median(bare_block(noop.invoke, n))) for _ in range(3)]
    harness = [float(np.median(timed_loop(noop.invoke, min_runs=n, max_runs=n))) for _ in range(3)]
    # wall time per iteration (clock reads, call, bookkeeping), not just the timed interval
    t0 = time.perf_counter_ns(); bare_block(noop.invoke, n); bare_wall = (time.perf_counter_ns() - t0) / n
    t0 = time.perf_counter_ns(); timed_loop(noop.invoke, min_runs=n, max_runs=n); harness_wall = (time.perf_counter_ns() - t0) / n
    return {"bare_timed_interval_ns": min(bare), "harness_timed_interval_ns": min(harness),
            "bare_iteration_wall_ns": round(bare_wall, 1), "harness_iteration_wall_ns": round(harness_wall, 1)}


def add_arguments(ap) -> None:
    ap.add_argument("--reps", type=int, default=100, help="alternating bare/harness block pairs")
    ap.add_argument("--block", type=int, default=10, help="invokes per block")


def run(args) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    build_models()
    before = conditions()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, like the child under pixel4-big
    cost = loop_cost_ns()
    print(f"per-call loop cost around a no-op: bare {cost['bare_timed_interval_ns']:.0f} ns timed / "
          f"{cost['bare_iteration_wall_ns']:.0f} ns wall, harness {cost['harness_timed_interval_ns']:.0f} ns timed / "
          f"{cost['harness_iteration_wall_ns']:.0f} ns wall")
    rows = []
    for alpha, res in SIZES:
        for fmt, path in model_paths(alpha, res).items():
            row = measure(path, fmt, reps=args.reps, block=args.block)
            rows.append(row)
            print(f"{row['model']:<34} {row['runtime']:<12} bare p50 {row['bare_p50_ms']:8.3f} ms   "
                  f"harness p50 {row['harness_p50_ms']:8.3f} ms   diff {100 * row['relative_diff_p50']:+6.2f}%   "
                  f"paired ratio {row['paired_block_ratio_median']:.4f}")
    assert "tensorflow" not in sys.modules, "the measuring process must not import TensorFlow"
    return {"what": "p50 of the bench timing loop vs a bare invoke() loop, same process, interleaved",
            "reps": args.reps, "block": args.block, "conditions_before": before, "loop_cost": cost,
            "loadavg_after": list(os.getloadavg()), "results": rows,
            "_exit": 0 if all(r["within_3pct"] for r in rows) else 1}

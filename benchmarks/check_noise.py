"""Why `mobiledeploy check` measures latency with 1 thread and the minimum of each child.

Runs paired rounds (A B, B A, ...; each measurement its own child process via
bench_model) for two pairs: an artifact vs. an identical copy ("same") and MobileNet V1
0.25 @144 vs. @128 ("det"), once with all host cores (the `host` profile: 2 threads here)
and once with 1 thread. For each per-child statistic (min, p10, median, mean) it reports
the spread of the per-round log ratio: the smaller, the fewer rounds a decision needs.
Writes benchmarks/results/check_noise.json (summary + each child's min/p10/median/mean).

    python -m benchmarks run check_noise [--rounds 16]
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks.common.check import conditions, identical_copy, mobilenet_tflite

KIND = "study"

STATS = {"min": np.min, "p10": lambda a: np.percentile(a, 10), "median": np.median, "mean": np.mean}


def collect(pairs, threads, rounds):
    from mobiledeploy.bench.core import bench_model, settings_for_target
    from mobiledeploy.targets import load_target

    s = settings_for_target(load_target("host"), threads=threads, warmup=5, runs=20, min_time_s=0.3)
    out = {}
    for name, (cand, base) in pairs.items():
        rows = []
        for i in range(rounds):
            order = ((cand, "c"), (base, "b")) if i % 2 == 0 else ((base, "b"), (cand, "c"))
            rows.append({k: list(bench_model(p, s).samples_ms) for p, k in order})
        out[name] = rows
    return out


def figures(samples):
    a = np.asarray(samples)
    return {"n": int(a.size), **{name: float(fn(a)) for name, fn in STATS.items()}}


def summarise(rows):
    res = {}
    for sname, fn in STATS.items():
        lr = np.array([np.log(fn(r["c"]) / fn(r["b"])) for r in rows])
        res[sname] = {"geomean_ratio": float(np.exp(lr.mean())), "median_ratio": float(np.exp(np.median(lr))),
                      "sd_log_ratio": float(lr.std(ddof=1))}
    return res


def add_arguments(ap) -> None:
    ap.add_argument("--rounds", type=int, default=16)


def run(a) -> dict:
    base = mobilenet_tflite(128)
    pairs = {"same": (identical_copy(base), base), "det": (mobilenet_tflite(144), base)}
    result = {"rounds": a.rounds, "conditions_before": conditions(), "by_threads": {}}
    for threads in (None, 1):
        t0 = time.monotonic()
        raw = collect(pairs, threads, a.rounds)
        key = "all cores" if threads is None else f"{threads} thread"
        result["by_threads"][key] = {"summary": {n: summarise(rows) for n, rows in raw.items()},
                                     "seconds": round(time.monotonic() - t0, 1),
                                     "per_child_figures_ms": {n: [{k: figures(r[k]) for k in ("c", "b")}
                                                                  for r in rows] for n, rows in raw.items()}}
        for n, summ in result["by_threads"][key]["summary"].items():
            print(key, n, {s: round(v["sd_log_ratio"], 3) for s, v in summ.items()}, flush=True)
    result["conditions_after"] = conditions()
    return result

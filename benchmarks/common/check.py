"""Shared by the check_* studies: build the MobileNet .tflite
files (TensorFlow, cached under build/check_bench/), then run `mobiledeploy check` N times
through its library entry point and record every verdict, ratio and interval.

Host timings on this machine; nothing here is a phone figure.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

from benchmarks.harness import BUILD

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
CACHE = BUILD / "check_bench"


def mobilenet_tflite(resolution: int, *, alpha: float = 0.25) -> Path:
    """MobileNet V1 (random init, seed 0, 1000 classes) as fp32 .tflite, built once and cached."""
    path = CACHE / f"mobilenet_v1_{alpha}_{resolution}_fp32.tflite"
    if path.exists():
        return path
    import contextlib
    import io as _io

    import tensorflow as tf

    from mobiledeploy import io
    from mobiledeploy.models.archs import build_model

    model = build_model("mobilenet_v1", alpha=alpha, resolution=resolution, seed=0)
    with contextlib.redirect_stdout(_io.StringIO()), contextlib.redirect_stderr(_io.StringIO()):
        data = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    return io.write_bytes(path, data)


def macs(path: Path) -> int | None:
    try:
        from mobiledeploy.cost.info import model_stats

        return int(model_stats(path).macs)
    except Exception as e:  # the figure is informative only
        print(f"note: no MAC count for {path.name}: {e}", file=sys.stderr)
        return None


def identical_copy(path: Path) -> Path:
    copy = path.with_name(path.stem + "_copy" + path.suffix)
    if not copy.exists() or copy.read_bytes() != path.read_bytes():
        shutil.copyfile(path, copy)
    return copy


def conditions() -> dict:
    from mobiledeploy.bench.core import machine_conditions

    return machine_conditions()


def run_series(*, name: str, candidate: Path, baseline: Path, limit: float, checks: int, target: str = "host",
               threads: str | None = None, extra: dict | None = None) -> dict:
    """``checks`` independent `mobiledeploy check` runs of candidate vs. baseline (the result document)."""
    from mobiledeploy import io
    from mobiledeploy.check.core import CheckConfig, run_check

    budget = CACHE / f"{name}.toml"
    latency = f'[latency]\nthreads = {threads if threads.isdigit() else repr(threads)}\n' if threads else ""
    io.write_text(budget, f'target = "{target}"\n{latency}\n[[artifact]]\nname = "{candidate.name}"\n'
                          f'path = "{candidate.name}"\nbaseline = "{baseline.name}"\nmax_latency_ratio = {limit}\n')
    before = conditions()
    rows = []
    for i in range(checks):
        t0 = time.monotonic()
        rep = run_check(CheckConfig(budget=budget))
        o = rep.outcomes[0]
        rows.append({"run": i + 1, "verdict": o.verdict, "ratio": o.measured, "interval": [o.low, o.high],
                     "rounds": o.extra.get("rounds"), "ratios": o.extra.get("ratios"),
                     "seconds": round(time.monotonic() - t0, 1),
                     "loadavg_1m": os.getloadavg()[0]})
        r = rows[-1]
        print(f"{name} {i + 1:2d}/{checks}: {r['verdict']:12s} ratio {r['ratio']:.3f} "
              f"[{r['interval'][0]:.3f}, {r['interval'][1]:.3f}] {r['rounds']} rounds {r['seconds']:.0f} s "
              f"load {r['loadavg_1m']:.1f}", flush=True)
        settings = rep.environment["latency"]
    counts = {v: sum(r["verdict"] == v for r in rows) for v in ("pass", "fail", "inconclusive", "error")}
    secs = [r["seconds"] for r in rows]
    result = {"benchmark": name, "candidate": candidate.name, "baseline": baseline.name,
              "max_latency_ratio": limit, "checks": checks, "counts": counts, "latency_settings": settings,
              "seconds": {"mean": sum(secs) / len(secs), "max": max(secs)},
              "conditions": {"before": before, "after": conditions(), "python": platform.python_version()},
              **(extra or {}), "runs": rows}
    print(json.dumps({k: result[k] for k in ("benchmark", "max_latency_ratio", "checks", "counts", "seconds")}))
    return result

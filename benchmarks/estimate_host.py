"""Host quality bar for the cost model: fit on <= 4 MobileNet V1 configs, predict the other 12.

    .venv/bin/python benchmarks/estimate_host.py [--repeats 3] [--fit 0.25:128,0.5:160,1.0:192,0.75:224]
    .venv/bin/python benchmarks/estimate_host.py --convert-only

1. Converts the MobileNet V1 alpha {0.25,0.5,0.75,1.0} x res {128,160,192,224} grid
   (untrained, seed 0, 1000 classes) to fp32 .tflite, cached under build/estimate_host/.
2. Measures each with ``mobiledeploy.bench.bench_model`` (its own child process, LiteRT +
   XNNPACK, ONE thread pinned to one core), ``--repeats`` times in interleaved rounds, and
   takes the median of the per-round medians; the spread across rounds is the noise.
3. Fits the ``host`` cost model on the ``--fit`` configs only (least squares on log
   latency) and predicts the other 12; prints median/worst absolute error, and the same
   for the naive baseline (latency proportional to MACs from one anchor).

Writes benchmarks/results/estimate_host.json. These are host timings on this machine,
never phone timings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ALPHAS = (0.25, 0.5, 0.75, 1.0)
RESOLUTIONS = (128, 160, 192, 224)
CACHE = ROOT / "build" / "estimate_host"
DEFAULT_FIT = "0.25:128,0.5:160,1.0:192,0.75:224"


def model_path(alpha: float, res: int) -> Path:
    return CACHE / f"mobilenet_v1_{alpha}_{res}_fp32.tflite"


def convert_grid() -> None:
    """Convert the 16 configs once (TensorFlow only here), cached across runs."""
    todo = [(a, r) for a in ALPHAS for r in RESOLUTIONS if not model_path(a, r).exists()]
    if not todo:
        return
    import contextlib
    import io as _io

    import tensorflow as tf

    from mobiledeploy import io
    from mobiledeploy.archs import build_model

    for a, r in todo:
        t0 = time.time()
        model = build_model("mobilenet_v1", alpha=a, resolution=r, classes=1000, seed=0)
        with contextlib.redirect_stdout(_io.StringIO()), contextlib.redirect_stderr(_io.StringIO()):
            data = tf.lite.TFLiteConverter.from_keras_model(model).convert()
        io.write_bytes(model_path(a, r), data)
        print(f"converted alpha {a} res {r} in {time.time() - t0:.1f} s", flush=True)


def measure_grid(repeats: int, min_time_s: float) -> dict[str, dict]:
    from mobiledeploy.bench import BenchSettings, bench_model

    settings = BenchSettings(threads=1, affinity=(0,), xnnpack=True, warmup=5, min_time_s=min_time_s,
                             target="host")
    rounds: dict[str, list[float]] = {}
    for rep in range(repeats):
        for a in ALPHAS:
            for r in RESOLUTIONS:
                res = bench_model(model_path(a, r), settings, precision="fp32")
                if res.status != "ok":
                    raise SystemExit(f"bench failed for alpha {a} res {r}: {res.error}")
                rounds.setdefault(f"{a}:{r}", []).append(res.latency_ms["p50"])
        print(f"round {rep + 1}/{repeats} done", flush=True)
    out = {}
    for key, vals in rounds.items():
        med = statistics.median(vals)
        out[key] = {"latency_ms": med, "rounds_ms": vals,
                    "spread_pct": 100.0 * (max(vals) - min(vals)) / med}
    return out


def machine_conditions() -> dict:
    load = os.getloadavg()
    return {"cpu": _cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
            "loadavg_1_5_15": [round(x, 2) for x in load],
            "note": "2-core machine shared with other engineers running tests: noisy"}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--convert-only", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--min-time", type=float, default=1.0, help="seconds of timed runs per model and round")
    ap.add_argument("--fit", default=DEFAULT_FIT, help="alpha:res pairs to fit on (at most 4)")
    ap.add_argument("--reuse", action="store_true", help="reuse the measurements in the results file")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "estimate_host.json"))
    ap.add_argument("--write-target", action="store_true",
                    help="write the fitted [cost_model] into mobiledeploy/targets/host.toml")
    args = ap.parse_args()
    convert_grid()
    if args.convert_only:
        return 0
    from mobiledeploy import estimate as est

    out_path = Path(args.out)
    conditions_before = machine_conditions()
    if args.reuse and out_path.exists():
        prev = json.loads(out_path.read_text())
        measured, conditions_before = prev["measured"], prev["machine"]
    else:
        measured = measure_grid(args.repeats, args.min_time)
    conditions_before["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    fit_keys = [k.strip() for k in args.fit.split(",") if k.strip()]
    if len(fit_keys) > 4:
        raise SystemExit("--fit: at most 4 configs")
    report = est.host_grid_report(measured, fit_keys, model_path=lambda k: model_path(*_key(k)))
    result = {"what": "MobileNet V1 fp32 TFLite, LiteRT + XNNPACK, 1 thread pinned to core 0, host timings",
              "machine": conditions_before, "repeats": args.repeats, "measured": measured, **report}
    from mobiledeploy import io

    io.write_json(out_path, result)
    _print(result)
    if args.write_target:
        est.write_cost_model_table(ROOT / "mobiledeploy" / "targets" / "host.toml", report["cost_model"])
    return 0


def _key(k: str) -> tuple[float, int]:
    a, r = k.split(":")
    return float(a), int(r)


def _print(result: dict) -> None:
    print(f"{'config':>10} {'measured':>9} {'spread':>7} {'model':>9} {'err':>7} {'naive':>9} {'err':>7}")
    for row in result["rows"]:
        print(f"{row['config']:>10} {row['measured_ms']:9.2f} {row['spread_pct']:6.1f}% "
              f"{row['estimate_ms']:9.2f} {row['error_pct']:+6.1f}% {row['naive_ms']:9.2f} "
              f"{row['naive_error_pct']:+6.1f}%{'  (fit)' if row['fit'] else ''}")
    s = result["summary"]
    print(f"held-out {s['n_heldout']}: cost model median |err| {s['median_abs_error_pct']:.1f}%, "
          f"worst {s['worst_abs_error_pct']:.1f}%; naive median {s['naive_median_abs_error_pct']:.1f}%, "
          f"worst {s['naive_worst_abs_error_pct']:.1f}%; measurement spread median "
          f"{s['median_spread_pct']:.1f}%, worst {s['worst_spread_pct']:.1f}%")


if __name__ == "__main__":
    sys.exit(main())

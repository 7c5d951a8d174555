"""Host quality bar for the cost model: fit on <= 4 MobileNet V1 configs, predict the other 12.

    python -m benchmarks run estimate_host [--repeats 3] [--fit 0.25:128,0.5:160,1.0:192,0.75:224]
    python -m benchmarks run estimate_host --convert-only

1. Converts the MobileNet V1 alpha {0.25,0.5,0.75,1.0} x res {128,160,192,224} grid
   (untrained, seed 0, 1000 classes) to fp32 .tflite, cached under build/estimate_host/.
2. Measures each with ``mobiledeploy.bench.core.bench_model`` (its own child process, LiteRT +
   XNNPACK, ONE thread pinned to one core (--core, default 1)), ``--repeats`` times in interleaved rounds;
   per round the minimum latency (--stat; the least disturbed run, since this 2-core host is
   shared), then the minimum over rounds (for --stat p50/mean: the median over rounds). The spread across rounds (and of the per-round
   medians) is reported as the noise.
3. Fits the ``host`` cost model on the ``--fit`` configs only (least squares on log
   latency) and predicts the other 12; prints median/worst absolute error, and the same
   for the naive baseline (latency proportional to MACs from one anchor).

Writes benchmarks/results/estimate_host.json. These are host timings on this machine,
never phone timings.

Second mode, the two-corner check of the cost model (fp32 and int8, 1 and 2 threads):

    mobiledeploy export --arch mobilenet_v1 --alpha A --res R --formats tflite --quant fp32,int8 --out GRID/A_R
    mobiledeploy bench GRID/*/*.tflite --threads 1 --affinity 1 --json GRID/bench_t1_r1.json   (and --threads 2, more rounds)
    python -m benchmarks run estimate_host --bench-json 'GRID/bench_t*_r*.json' --tag corners

per (precision, threads) column: the per-round minimum latency (``--stat``), then the
minimum over rounds; the cost model calibrated on the two corners (1.0/224 and 0.25/128)
predicts the other 14, and on 1.0/224 alone (scale) the other 15, next to the naive
latency-proportional-to-MACs baseline (``benchmarks/common/published.score``).
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from benchmarks.harness import BUILD, ROOT, result_path

KIND = "study"

ALPHAS = (0.25, 0.5, 0.75, 1.0)
RESOLUTIONS = (128, 160, 192, 224)
CACHE = BUILD / "estimate_host"
DEFAULT_FIT = "0.25:128,0.25:224,1.0:128,1.0:224"  # the grid's corners, chosen before measuring
OTHER_FITS = ("0.25:128,0.5:160,1.0:192,0.75:224", "0.25:160,0.5:224,0.75:128,1.0:192")  # reported too


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
    from mobiledeploy.models.archs import build_model

    for a, r in todo:
        t0 = time.time()
        model = build_model("mobilenet_v1", alpha=a, resolution=r, classes=1000, seed=0)
        with contextlib.redirect_stdout(_io.StringIO()), contextlib.redirect_stderr(_io.StringIO()):
            data = tf.lite.TFLiteConverter.from_keras_model(model).convert()
        io.write_bytes(model_path(a, r), data)
        print(f"converted alpha {a} res {r} in {time.time() - t0:.1f} s", flush=True)


def measure_grid(repeats: int, min_time_s: float, core: int, stat: str) -> dict[str, dict]:
    from mobiledeploy.bench.core import BenchSettings, bench_model

    settings = BenchSettings(threads=1, affinity=(core,), xnnpack=True, warmup=5, min_time_s=min_time_s,
                             target="host")
    rounds: dict[str, list[float]] = {}
    p50s: dict[str, list[float]] = {}
    for rep in range(repeats):
        for a in ALPHAS:
            for r in RESOLUTIONS:
                res = bench_model(model_path(a, r), settings, precision="fp32")
                if res.status != "ok":
                    raise SystemExit(f"bench failed for alpha {a} res {r}: {res.error}")
                rounds.setdefault(f"{a}:{r}", []).append(res.latency_ms[stat])
                p50s.setdefault(f"{a}:{r}", []).append(res.latency_ms["p50"])
        print(f"round {rep + 1}/{repeats} done", flush=True)
    out = {}
    for key, vals in rounds.items():
        med = statistics.median(vals)
        # min: the least disturbed run of all rounds (contention only ever adds time)
        out[key] = {"latency_ms": min(vals) if stat == "min" else med, "stat": stat, "rounds_ms": vals, "rounds_p50_ms": p50s[key],
                    "spread_pct": 100.0 * (max(vals) - min(vals)) / med,
                    "p50_spread_pct": 100.0 * (max(p50s[key]) - min(p50s[key])) / statistics.median(p50s[key])}
    return out


# On-CPU time of the inference thread (LiteRT, 1 thread: XNNPACK runs on the caller's
# thread), in a child process per model. Time the thread spends descheduled while the
# other engineers' processes run is not counted; cache and memory contention still are.
_CPU_CHILD = r"""
import json, os, statistics, sys, time
import numpy as np
from mobiledeploy.runtimes import open_session, run, input_shape
path, core, min_time = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
os.sched_setaffinity(0, {core})
s = open_session(path, threads=1, xnnpack=True)
spec = s.inputs[0]
feeds = {spec.name: np.random.default_rng(0).uniform(-1, 1, input_shape(s, spec)).astype(np.float32)}
for _ in range(5):
    run(s, feeds)
cpu, wall, t_end = [], [], time.perf_counter() + min_time
while time.perf_counter() < t_end or len(cpu) < 20:
    s.set_inputs(feeds)
    c0, w0 = time.thread_time_ns(), time.perf_counter_ns()
    s.invoke()
    cpu.append((time.thread_time_ns() - c0) / 1e6); wall.append((time.perf_counter_ns() - w0) / 1e6)
print(json.dumps({"cpu_min": min(cpu), "cpu_p50": statistics.median(cpu), "wall_min": min(wall),
                  "wall_p50": statistics.median(wall), "runs": len(cpu)}))
"""


def measure_cpu_grid(repeats: int, min_time_s: float, core: int) -> dict[str, dict]:
    import subprocess

    rounds: dict[str, list[dict]] = {}
    for rep in range(repeats):
        for a in ALPHAS:
            for r in RESOLUTIONS:
                out = subprocess.run([sys.executable, "-c", _CPU_CHILD, str(model_path(a, r)), str(core),
                                      str(min_time_s)], capture_output=True, text=True, timeout=600)
                if out.returncode != 0:
                    raise SystemExit(f"cpu-time child failed for alpha {a} res {r}: {out.stderr[-500:]}")
                rounds.setdefault(f"{a}:{r}", []).append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"cpu-time round {rep + 1}/{repeats} done", flush=True)
    result = {}
    for key, recs in rounds.items():
        vals = [x["cpu_min"] for x in recs]
        med = statistics.median(vals)
        result[key] = {"latency_ms": med, "stat": "median over rounds of the per-round minimum on-CPU time",
                       "rounds_ms": vals, "rounds_cpu_p50_ms": [x["cpu_p50"] for x in recs],
                       "rounds_wall_p50_ms": [x["wall_p50"] for x in recs],
                       "spread_pct": 100.0 * (max(vals) - min(vals)) / med}
    return result


def machine_conditions() -> dict:
    from mobiledeploy.bench.core import machine_conditions as conditions

    c = conditions()
    return {**c["host"], "loadavg_1_5_15": c["loadavg_1_5_15"], "time_utc": c["time_utc"]}


def add_arguments(ap) -> None:
    ap.add_argument("--convert-only", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--min-time", type=float, default=2.0, help="seconds of timed runs per model and round")
    ap.add_argument("--clock", default="wall", choices=("wall", "cpu"),
                    help="wall: bench_model's wall-clock latency; cpu: the inference thread's on-CPU time")
    ap.add_argument("--stat", default="min", choices=("min", "p50", "mean"),
                    help="per-round statistic (min: the least disturbed run, robust on a shared machine)")
    ap.add_argument("--core", type=int, default=1, help="host core to pin the one thread to")
    ap.add_argument("--fit", default=DEFAULT_FIT, help="alpha:res pairs to fit on (at most 4)")
    ap.add_argument("--reuse", action="store_true", help="reuse the measurements in the results file")
    ap.add_argument("--write-target", action="store_true",
                    help="write the fitted [cost_model] into mobiledeploy/targets/host.toml")
    ap.add_argument("--bench-json", metavar="GLOB",
                    help="two-corner check from `bench --json` files of the V1 grid (fp32+int8, any threads); "
                         "a variant: give --tag (the docs' figures: --tag corners)")


def run(args) -> dict | None:
    if args.bench_json:
        if not args.tag:
            raise SystemExit("--bench-json writes a variant of estimate_host: give --tag "
                             "(the docs' figures: --tag corners)")
        return corners_from_bench_json(args.bench_json, stat=args.stat, write_target=args.write_target)
    convert_grid()
    if args.convert_only:
        return None
    out_path = result_path("estimate_host", args.tag)
    conditions = machine_conditions()
    if args.reuse and out_path.exists():
        prev = json.loads(out_path.read_text())
        measured, conditions = prev["measured"], prev["machine"]
    else:
        measured = (measure_grid(args.repeats, args.min_time, args.core, args.stat) if args.clock == "wall"
                    else measure_cpu_grid(args.repeats, args.min_time, args.core))
        conditions["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    fit_keys = [k.strip() for k in args.fit.split(",") if k.strip()]
    if not 1 <= len(fit_keys) <= 4 or any(k not in measured for k in fit_keys):
        raise SystemExit(f"--fit: 1 to 4 of {', '.join(measured)}")
    report = grid_report(measured, fit_keys, source=f"benchmarks/estimate_host.py ({out_path.name}, clock {args.clock})")
    report["other_fit_sets"] = {f: grid_report(measured, f.split(","))["summary"] for f in OTHER_FITS}
    result = {"what": f"MobileNet V1 fp32 TFLite, LiteRT + XNNPACK, 1 thread pinned to core {args.core}, host "
                      f"timings, clock {args.clock}", "clock": args.clock,
              "machine": conditions, "repeats": args.repeats, "measured": measured, **report}
    _print(result)
    if args.write_target:
        from mobiledeploy.cost.fit import write_cost_model_table

        comment = (f"Fitted by benchmarks/estimate_host.py on {len(fit_keys)} of the 16 MobileNet V1 fp32 "
                   f"configs (1 thread, clock {args.clock}), measured on the dev host ({conditions['cpu']});\n"
                   f"held-out 12: median |error| {report['summary']['median_abs_error_pct']:.1f}%, worst "
                   f"{report['summary']['worst_abs_error_pct']:.1f}%. peak_gmacs_fp32 is an assumption "
                   f"(clock x 16 fp32 MAC/cycle, AVX2 2 FMA pipes); the fit scales efficiencies around it.\n"
                   f"int8 and threads were not fitted (no such rows): host int8 estimates are priors only.")
        write_cost_model_table(ROOT / "mobiledeploy" / "targets" / "host.toml", report["table"], comment=comment)
        print("wrote [cost_model] to mobiledeploy/targets/host.toml")
    return result


def host_prior(threads: int = 1):
    """Cost-model priors for this host: peak = clock x 16 fp32 MAC/cycle (AVX2, 2 FMA pipes),
    int8 2x that (assumptions), 1 us per op (an assumption), bandwidth = one core's measured
    cache-resident copy bandwidth (``measured_bandwidth_gbs``), cache = L2 + L3 as the kernel
    reports them."""
    from mobiledeploy.cost.estimate import DEFAULT_EFFICIENCY, CostModel

    ghz = _cpu_ghz()
    return CostModel(target="host", peak_gmacs={"fp32": ghz * 16, "int8": ghz * 32},
                     efficiency={p: dict(v) for p, v in DEFAULT_EFFICIENCY.items()},
                     bandwidth_gbs=measured_bandwidth_gbs()["gbs"], overhead_us=1.0, threads=threads,
                     cache_kb=_cache_kb())


BANDWIDTH_CORE = 1  # the core the grid's 1-thread runs are pinned to
SENSITIVITY_GBS = (10, 30, 120)  # bandwidth priors the grid's calibrations are also reported with


@functools.cache
def measured_bandwidth_gbs(mib: float = 4.0, reps: int = 200) -> dict:
    """One core's copy bandwidth for data that lives in the cache MobileNet's layers use:
    ``np.copyto`` of a ``mib`` MiB float32 array into another (8 MiB in flight: beyond this
    host's 512 KiB L2, within its 32 MiB L3), pinned to ``BANDWIDTH_CORE``; bytes read + written
    over the median copy time. Measured once per run (cached); a machine figure, not fitted
    to any MobileNet config."""
    import numpy as np

    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {BANDWIDTH_CORE} & old or old)
    try:
        a = np.random.default_rng(0).random(int(mib * 2**20 / 4), dtype=np.float32)
        b = np.empty_like(a)
        for _ in range(10):
            np.copyto(b, a)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            np.copyto(b, a)
            times.append(time.perf_counter() - t0)
    finally:
        os.sched_setaffinity(0, old)
    return {"gbs": 2 * a.nbytes / statistics.median(times) / 1e9,
            "method": f"np.copyto of {mib:g} MiB float32, median of {reps}, read + written bytes, core {BANDWIDTH_CORE}"}


def _cache_kb() -> float:
    """L2 + L3 of cpu0 (KiB) from sysfs; 0 when unknown."""
    total = 0.0
    for idx in ("index2", "index3"):
        try:
            size = Path(f"/sys/devices/system/cpu/cpu0/cache/{idx}/size").read_text().strip()
        except OSError:
            continue
        mult = {"K": 1, "M": 1024}.get(size[-1:], None)
        total += float(size[:-1]) * mult if mult else float(size) / 1024
    return total


def corners_from_bench_json(pattern: str, *, stat: str = "min", write_target: bool = False) -> dict:
    """Two-corner / one-point check on the host grid measured with `bench --json`."""
    import glob
    import re

    from benchmarks.common.published import score
    from mobiledeploy.cost.fit import measurement_for

    cols: dict[tuple, dict] = {}
    files = sorted(glob.glob(pattern))
    for f in files:
        data = json.loads(Path(f).read_text())
        for r in data["results"]:
            m = re.search(r"mobilenet_v1_([\d.]+)_(\d+)_(fp32|int8)\.tflite$", r["model"])
            if r.get("status") != "ok" or not m:
                continue
            key = (m.group(3), int(r["threads"]))
            cols.setdefault(key, {}).setdefault((m.group(1), int(m.group(2)), r["model"]), []).append(
                r["latency_ms"][stat])
    if not cols:
        raise SystemExit(f"--bench-json {pattern!r}: no MobileNet V1 grid results")
    report = {"what": "MobileNet V1 alpha x res grid, TFLite fp32 / int8, LiteRT + XNNPACK, host timings "
                      f"(per-round {stat}, minimum over rounds)", "files": [Path(f).name for f in files],
              "machine": machine_conditions(), "prior_bandwidth": measured_bandwidth_gbs(), "columns": {}}
    for (prec, threads), grid in sorted(cols.items()):
        rows = [measurement_for(label=f"{a}:{res}", model=path, precision=prec, threads=threads,
                                latency_ms=min(v)) for (a, res, path), v in sorted(grid.items())]
        spread = {f"{a}:{res}": 100.0 * (max(v) - min(v)) / min(v) for (a, res, _), v in grid.items()}
        res = score(rows, host_prior(threads))
        res["bandwidth_prior_sensitivity"] = {  # the same calibrations with an assumed bandwidth prior instead
            f"{gbs} GB/s": {k: score(rows, replace(host_prior(threads), bandwidth_gbs=float(gbs)))[k]
                            for k in ("two_corners", "one_point")} for gbs in SENSITIVITY_GBS}
        res["rounds"] = {f"{a}:{r}": v for (a, r, _), v in grid.items()}
        res["spread_pct_median"] = statistics.median(spread.values())
        report["columns"][f"{prec} {threads}t"] = res
        s2, n2, s1, n1 = res["two_corners"], res["two_corners_naive"], res["one_point"], res["one_point_naive"]
        print(f"{prec} {threads} thread(s): 2 corners median {s2['median_abs_error_pct']:.1f}% worst "
              f"{s2['worst_abs_error_pct']:.1f}% (naive {n2['median_abs_error_pct']:.1f}/{n2['worst_abs_error_pct']:.1f}); "
              f"1 point median {s1['median_abs_error_pct']:.1f}% worst {s1['worst_abs_error_pct']:.1f}% (naive "
              f"{n1['median_abs_error_pct']:.1f}/{n1['worst_abs_error_pct']:.1f}); round spread median "
              f"{res['spread_pct_median']:.0f}%", flush=True)
    if write_target:
        _write_host_target(cols, stat)
    return report


def _write_host_target(cols: dict, stat: str) -> None:
    """Fit host.toml's [cost_model] on the two corners (0.25/128, 1.0/224) of every measured
    column (fp32/int8 x 1/2 threads: 8 rows), and record the error on all the other configs."""
    import statistics

    from mobiledeploy.cost.fit import fit, fit_table, measurement_for, predict_ms, write_cost_model_table

    rows, held = [], []
    for (prec, threads), col in sorted(cols.items()):
        for (a, res, path), v in sorted(col.items()):
            m = measurement_for(label=f"mobilenet_v1 {a}:{res} {prec} {threads}t", model=path, precision=prec,
                                threads=threads, latency_ms=min(v))
            (rows if (a, res) in (("0.25", 128), ("1.0", 224)) else held).append(m)
    result = fit(host_prior(1), rows, loo=True)
    errs = [abs(100.0 * (predict_ms(result.model, m) - m.latency_ms) / m.latency_ms) for m in held]
    columns = ", ".join(sorted({f"{p} {t} thread{'s' if t > 1 else ''}" for p, t in cols}))
    table = fit_table(result, source=f"benchmarks/estimate_host.py --bench-json (per-round {stat}, idle host), "
                                     f"corners 0.25/128 and 1.0/224 of the MobileNet V1 grid, {columns}")
    table["heldout_median_abs_error_pct"] = round(statistics.median(errs), 2)
    table["heldout_worst_abs_error_pct"] = round(max(errs), 2)
    table["heldout_n"] = len(errs)
    comment = ("Fitted by benchmarks/estimate_host.py --bench-json --write-target on the 0.25/128 and 1.0/224 "
               "corners of the MobileNet V1 grid,\n"
               f"{columns}, measured on the dev host (AMD EPYC, AVX2, no VNNI); held-out: the other "
               f"{len(errs)} configs x columns.\n"
               "peak_gmacs_* are assumptions (clock x 16 fp32 / 32 int8 MAC per cycle); the fit scales "
               "efficiencies and bandwidth around them.")
    write_cost_model_table(ROOT / "mobiledeploy" / "targets" / "host.toml", table, comment=comment)
    print(f"wrote [cost_model] to mobiledeploy/targets/host.toml (params {', '.join(result.params)}, "
          f"held-out {len(errs)}: median {statistics.median(errs):.1f}%, worst {max(errs):.1f}%)")


def _cpu_ghz() -> float:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":", 1)[1]) / 1000.0
    except (OSError, ValueError):
        pass
    return 2.5


def grid_report(measured: dict, fit_keys: list[str], *, source: str = "benchmarks/estimate_host.py") -> dict:
    from mobiledeploy.cost.fit import fit, fit_table, measurement_for, predict_ms

    rows = {k: measurement_for(label=f"mobilenet_v1 {k} fp32", model=str(model_path(*_key(k))),
                               threads=1, latency_ms=v["latency_ms"]) for k, v in measured.items()}
    result = fit(host_prior(), [rows[k] for k in fit_keys])
    # naive baseline: latency proportional to MACs from one anchor; the anchor is the fit
    # config that best predicts the other fit configs (so it uses the same information)

    def naive_err(anchor, k):
        a, r = rows[anchor], rows[k]
        return 100.0 * (a.latency_ms * r.macs / a.macs - r.latency_ms) / r.latency_ms

    anchor = min(fit_keys, key=lambda a: sum(abs(naive_err(a, k)) for k in fit_keys if k != a))
    out = []
    for k, m in rows.items():
        est = predict_ms(result.model, m)
        naive = rows[anchor].latency_ms * m.macs / rows[anchor].macs
        out.append({"config": k, "macs": m.macs, "measured_ms": m.latency_ms,
                    "spread_pct": measured[k]["spread_pct"], "estimate_ms": est,
                    "error_pct": 100.0 * (est - m.latency_ms) / m.latency_ms, "naive_ms": naive,
                    "naive_error_pct": 100.0 * (naive - m.latency_ms) / m.latency_ms, "fit": k in fit_keys})
    held = [r for r in out if not r["fit"]]
    summary = {
        "n_fit": len(fit_keys), "n_heldout": len(held), "fit_configs": fit_keys, "naive_anchor": anchor,
        "fit_params": list(result.params),
        "median_abs_error_pct": statistics.median(abs(r["error_pct"]) for r in held),
        "worst_abs_error_pct": max(abs(r["error_pct"]) for r in held),
        "naive_median_abs_error_pct": statistics.median(abs(r["naive_error_pct"]) for r in held),
        "naive_worst_abs_error_pct": max(abs(r["naive_error_pct"]) for r in held),
        "median_spread_pct": statistics.median(r["spread_pct"] for r in out),
        "worst_spread_pct": max(r["spread_pct"] for r in out),
    }
    table = fit_table(result, source=source)
    table["heldout_median_abs_error_pct"] = round(summary["median_abs_error_pct"], 2)
    table["heldout_worst_abs_error_pct"] = round(summary["worst_abs_error_pct"], 2)
    return {"rows": out, "summary": summary, "cost_model": result.model.to_json(), "table": table}


def _key(k: str) -> tuple[float, int]:
    a, r = k.split(":")
    return float(a), int(r)


def _print(result: dict) -> None:
    print(f"{'config':>10} {'measured':>9} {'spread':>7} {'model':>9} {'err':>7} {'naive':>9} {'err':>7}")
    for row in result["rows"]:
        print(f"{row['config']:>10} {row['measured_ms']:9.2f} {row['spread_pct']:6.1f}% "
              f"{row['estimate_ms']:9.2f} {row['error_pct']:+6.1f}% {row['naive_ms']:9.2f} "
              f"{row['naive_error_pct']:+6.1f}%{'  (fit)' if row['fit'] else ''}")
    for f, o in result.get("other_fit_sets", {}).items():
        print(f"  fit on {f}: cost model median {o['median_abs_error_pct']:.1f}% worst "
              f"{o['worst_abs_error_pct']:.1f}%; naive median {o['naive_median_abs_error_pct']:.1f}% worst "
              f"{o['naive_worst_abs_error_pct']:.1f}%")
    s = result["summary"]
    print(f"held-out {s['n_heldout']}: cost model median |err| {s['median_abs_error_pct']:.1f}%, "
          f"worst {s['worst_abs_error_pct']:.1f}%; naive median {s['naive_median_abs_error_pct']:.1f}%, "
          f"worst {s['naive_worst_abs_error_pct']:.1f}%; measurement spread median "
          f"{s['median_spread_pct']:.1f}%, worst {s['worst_spread_pct']:.1f}%")

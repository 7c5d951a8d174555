"""Phones: leave-one-out over the published latencies in benchmarks/data/published_latency.toml.

    python -m benchmarks run estimate_phones [--write-targets]

Every published point the cost model can express (MobileNet V1/V2/V3 at 224, fp32 or
int8, a known thread count on a known phone) is grouped by (source, device): figures
from one table share a runtime version and a phone. For each point, the cost model is
fitted on the OTHER points of its group (default parameters for that many rows) and
predicts the held-out one. The naive baseline scales one anchor by MACs; its anchor is
the remaining point of the group with the same precision and threads and the closest
MACs when there is one (the most favourable choice for it), else the closest MACs; the
"like for like" summary keeps only the points where such an anchor exists. A stricter
second pass ("leave model out") holds out every point of the held-out point's model in
its group, so the fit has never seen that model at any thread count or precision.

Layers come from the Keras builds of each architecture (no weights; cached as JSON under
build/estimate_phones/). Device figures for the phones not among the shipped targets
(Pixel 1/2/3/3a) are the SoCs' public specs, marked as assumptions below; the fit's
``compute`` parameter absorbs an error in them.

With ``--write-targets`` the shipped pixel4 / pixel4-big targets get their [cost_model]
fitted on ALL their points (in-sample error stated in the file).
Writes benchmarks/results/estimate_phones.json.
"""

from __future__ import annotations

import json
import os
import statistics

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from benchmarks.harness import BUILD, ROOT

KIND = "study"
CACHE = BUILD / "estimate_phones"

# Devices: one big core's figures. Pixel 4 ones are the shipped targets'; the rest as in
# benchmarks/data/published_latency.toml (sources and assumptions named there).
DEVICES = {
    "pixel1": {"clock_ghz": 2.15, "fp32_flops_per_cycle": 8, "int8_ops_per_cycle": 16, "mem_bandwidth_gbs": 29.8, "l2_kb": 1024,
               "note": "Snapdragon 821, 2 x 2.15 GHz Kryo (assumption)"},
    "pixel2": {"clock_ghz": 2.35, "fp32_flops_per_cycle": 8, "int8_ops_per_cycle": 16, "mem_bandwidth_gbs": 29.9, "l2_kb": 2048,
               "note": "Snapdragon 835, 4 x 2.35 GHz Kryo 280 (A73-class) (assumption)"},
    "pixel3": {"clock_ghz": 2.5, "fp32_flops_per_cycle": 16, "int8_ops_per_cycle": 64, "mem_bandwidth_gbs": 29.9, "l2_kb": 256, "l3_kb": 2048,
               "note": "Snapdragon 845, 4 x 2.5-2.8 GHz Kryo 385 Gold (A75, dot product) (assumption)"},
    "pixel3a": {"clock_ghz": 2.0, "fp32_flops_per_cycle": 16, "int8_ops_per_cycle": 64, "mem_bandwidth_gbs": 14.9, "l2_kb": 256, "l3_kb": 1024,
                "note": "Snapdragon 670, 2 x 2.0 GHz Kryo 360 Gold (A75) (assumption)"},
}
MODELS = {"v1": ("mobilenet_v1", 1.0), "v2": ("mobilenet_v2", 1.0), "v2_1.4": ("mobilenet_v2", 1.4),
          "v3l": ("mobilenet_v3_large", 1.0), "v3s": ("mobilenet_v3_small", 1.0)}

# (source, device, model, precision, threads, ms). The same figures as benchmarks/data/published_latency.toml (sources there).
XNN = "XNNPACK README (google/XNNPACK 0085ae36, 2020-03-27), fp32"
V3P = "MobileNetV3 paper, single large core"
V2P = "MobileNetV2 paper Table 4, Pixel 1 one large core"
TFL = "TFLite performance benchmarks page, 4 threads"
PDL = "Paddle-Lite v2.6 benchmark (another runtime), Snapdragon 855"
POINTS = []
for dev, big, v1, v2, v3l, v3s in (("pixel1", 2, (82, 43), (49, 26), (39, 22), (12, 7)),
                                   ("pixel2", 4, (86, 27), (53, 18), (42, 16), (14, 6)),
                                   ("pixel3a", 2, (88, 46), (55, 28), (44, 24), (14, 8))):
    for model, (one, many) in (("v1", v1), ("v2", v2), ("v3l", v3l), ("v3s", v3s)):
        POINTS += [(XNN, dev, model, "fp32", 1, one), (XNN, dev, model, "fp32", big, many)]
for dev, f, q in (("pixel1", (51, 64, 15.8), (44, 52, 15.5)), ("pixel2", (61, 76, 19.4), (42.5, 48.3, 14.9)),
                  ("pixel3", (44, 56, 14.4), (31.7, 37.0, 10.7))):
    for model, a, b in zip(("v3l", "v2", "v3s"), f, q):
        POINTS += [(V3P, dev, model, "fp32", 1, a), (V3P, dev, model, "int8", 1, b)]
POINTS += [(V2P, "pixel1", "v1", "fp32", 1, 113), (V2P, "pixel1", "v2", "fp32", 1, 75),
           (V2P, "pixel1", "v2_1.4", "fp32", 1, 143)]
POINTS += [(TFL, "pixel4", "v1", "fp32", 4, 14.0), (TFL, "pixel4", "v1", "int8", 4, 5.0)]
for threads, f, q in ((1, 30.56, 14.41), (2, 18.59, 8.34), (4, 10.44, 4.37)):
    POINTS += [(PDL, "pixel4-big", "v1", "fp32", threads, f), (PDL, "pixel4-big", "v1", "int8", threads, q)]


def layers_for(key: str):
    """LayerStats of a model (Keras build once, then the JSON cache)."""
    from mobiledeploy.cost.graph import LayerStats

    path = CACHE / f"{key}.json"
    if not path.exists():
        from mobiledeploy import io
        from mobiledeploy.cost.info import config_stats

        arch, alpha = MODELS[key]
        io.write_json(path, config_stats(arch, alpha=alpha, resolution=224, classes=1000).to_json())
    data = json.loads(path.read_text())
    return tuple(LayerStats(**{**x, "output_shape": tuple(x["output_shape"]), "kernel": tuple(x["kernel"]),
                               "fused": tuple(x["fused"])}) for x in data["layers"])


def base_model(device: str):
    from mobiledeploy.cost.estimate import cost_model_for
    from mobiledeploy.targets import Target, load_target

    if device in DEVICES:
        dev = {k: v for k, v in DEVICES[device].items() if k != "note"}
        return cost_model_for(Target(name=device, device=dev))
    t = load_target(device)
    return cost_model_for(Target(name=t.name, device=t.device, threads=t.threads))  # priors, not its fit


def measurement(point):
    from mobiledeploy.cost.fit import Measurement

    source, device, model, precision, threads, ms = point
    layers = layers_for(model)
    arch, alpha = MODELS[model]
    return Measurement(label=f"{arch} {alpha:g} 224 {precision} {threads}t ({device})", layers=layers, precision=precision,
                       threads=threads, latency_ms=float(ms), macs=sum(x.macs for x in layers))


def leave_one_out(*, whole_model: bool = False) -> dict:
    """Hold out one point (or, with ``whole_model``, every point of one model in the group:
    a model the fit has never seen at any thread count or precision)."""
    from mobiledeploy.cost.fit import fit, predict_ms

    groups: dict[tuple, list] = {}
    for p in POINTS:
        groups.setdefault((p[0], p[1]), []).append(p)
    rows = []
    for (source, device), pts in groups.items():
        base = base_model(device)
        ms = [measurement(p) for p in pts]
        for i, held in enumerate(ms):
            rest = [m for j, m in enumerate(ms) if j != i and not (whole_model and pts[j][2] == pts[i][2])]
            if not rest:
                continue
            result = fit(base, rest)
            est = predict_ms(result.model, held)
            same = [m for m in rest if (m.precision, m.threads) == (held.precision, held.threads)]
            anchor = min(same or rest, key=lambda m: abs(m.macs - held.macs))
            naive = anchor.latency_ms * held.macs / anchor.macs
            rows.append({"like_for_like": bool(same),"source": source, "device": device, "point": held.label, "measured_ms": held.latency_ms,
                         "estimate_ms": est, "error_pct": 100 * (est - held.latency_ms) / held.latency_ms,
                         "fit_on": len(rest), "fit_params": list(result.params),
                         "naive_anchor": anchor.label, "naive_ms": naive,
                         "naive_error_pct": 100 * (naive - held.latency_ms) / held.latency_ms})
    return {"rows": rows, "summary": _summary(rows),
            "summary_like_for_like": _summary([r for r in rows if r["like_for_like"]]),
            "by_source": {s: _summary([r for r in rows if r["source"] == s]) for s in {r["source"] for r in rows}}}


def _summary(rows) -> dict:
    return {"n": len(rows),
            "median_abs_error_pct": statistics.median(abs(r["error_pct"]) for r in rows),
            "worst_abs_error_pct": max(abs(r["error_pct"]) for r in rows),
            "naive_median_abs_error_pct": statistics.median(abs(r["naive_error_pct"]) for r in rows),
            "naive_worst_abs_error_pct": max(abs(r["naive_error_pct"]) for r in rows)}


def write_targets() -> dict:
    """Fit the shipped pixel4 / pixel4-big [cost_model] on all of their points."""
    from mobiledeploy.cost.fit import fit, fit_table, write_cost_model_table

    out = {}
    for device, source in (("pixel4", TFL), ("pixel4-big", PDL)):
        pts = [p for p in POINTS if p[1] == device]
        result = fit(base_model(device), [measurement(p) for p in pts], loo=True)
        table = fit_table(result, source=f"{source} (benchmarks/estimate_phones.py)")
        comment = (f"Fitted by benchmarks/estimate_phones.py on {len(pts)} published points ({source}).\n"
                   f"In-sample error: median {result.median_abs_error_pct:.1f}%, worst "
                   f"{result.worst_abs_error_pct:.1f}%. So few points: treat estimates as +-30% at best.")
        if device == "pixel4-big":
            comment += ("\nThe only published 1-thread SD855 figures are Paddle-Lite's (another runtime than "
                        "LiteRT); fitted parameters include threads, so 2/4-thread points are used too.")
        write_cost_model_table(ROOT / "mobiledeploy" / "targets" / f"{device}.toml", table, comment=comment)
        out[device] = result.to_json()
    return out


def add_arguments(ap) -> None:
    ap.add_argument("--write-targets", action="store_true")


def run(args) -> dict:
    report = leave_one_out()
    report["leave_model_out"] = leave_one_out(whole_model=True)
    report["devices_assumed"] = {k: v["note"] for k, v in DEVICES.items()}
    if args.write_targets:
        report["shipped_fits"] = write_targets()
    print(f"{'point':<48} {'measured':>8} {'model':>8} {'err':>7} {'naive':>8} {'err':>7}  fit on")
    for r in report["rows"]:
        print(f"{r['point']:<48} {r['measured_ms']:8.1f} {r['estimate_ms']:8.1f} {r['error_pct']:+6.1f}% "
              f"{r['naive_ms']:8.1f} {r['naive_error_pct']:+6.1f}%  {r['fit_on']} ({','.join(r['fit_params'])})")
    _print_summaries([("ALL", report["summary"]),
                      ("naive anchor of same precision+threads", report["summary_like_for_like"])],
                     report["by_source"])
    lmo = report["leave_model_out"]
    _print_summaries([("LEAVE-MODEL-OUT (all points of the model held out)", lmo["summary"]),
                      ("  naive anchor of same precision+threads", lmo["summary_like_for_like"])],
                     lmo["by_source"])
    return report


def _print_summaries(head: list, by_source: dict) -> None:
    for name, s in head + sorted(by_source.items()):
        print(f"{name[:60]:<60} n={s['n']:>2}  cost model median {s['median_abs_error_pct']:5.1f}% worst "
              f"{s['worst_abs_error_pct']:6.1f}%   naive median {s['naive_median_abs_error_pct']:5.1f}% worst "
              f"{s['naive_worst_abs_error_pct']:6.1f}%")

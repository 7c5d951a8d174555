"""Does the cost model transfer? Calibrate on two corners of each published table, predict the rest.

    .venv/bin/python benchmarks/estimate_generalize.py [--out benchmarks/results/estimate_generalize.json]

For every table of ``benchmarks/data/published_latency.toml`` with at least 3 configs (one
device, one precision, one thread count, one runtime):

- **two corners**: ``target calibrate``'s fit (``mobiledeploy.cost.model.fit``, default
  parameters for 2 rows: compute and memory) on the table's largest and smallest config
  (by MACs), starting from the device's priors; every other config is predicted.
- **one point**: the same fit on the largest config alone (a global scale on the priors).
- **naive**: latency proportional to MACs, through the same anchor(s) (two corners: the
  geometric mean of their ms/MAC; one point: the largest config's).
- **priors only**: the device's priors, nothing calibrated (estimate / measured).

``label_evidence`` is what ``estimate``'s labels quote for a target calibrated on one
measurement and for a target with priors only (``mobiledeploy.cost.model``).

Nothing is fitted on the configs that are scored, and the model's priors are the
target-profile defaults (``mobiledeploy.cost.estimate``), not tuned per table. Sensitivity
rows (2 corners): ``combine = "max"`` instead of the sum, and no cache-spill penalty
(``cache_ratio = 1``). Variant ``learned_priors``: the priors' shape (compute, memory,
overhead and depthwise multipliers; compute and memory per precision) fitted jointly on
the OTHER 16 tables, each with its own scale (leave one table out), then the same
two-corner and one-point calibration of the scored table. Layers come from the Keras builds of each config (cached as JSON
under build/estimate_generalize/). Published figures, so no machine is involved.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tomllib
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT / "benchmarks" / "data" / "published_latency.toml"
CACHE = ROOT / "build" / "estimate_generalize"
DEVICE_KEYS = ("clock_ghz", "fp32_flops_per_cycle", "int8_ops_per_cycle", "mem_bandwidth_gbs", "l2_kb", "l3_kb")


def layers_for(model: str):
    """LayerStats of "arch alpha res" (Keras build once, then the JSON cache)."""
    from mobiledeploy.cost.ir import LayerStats

    arch, alpha, res = model.split()
    path = CACHE / f"{arch}_{alpha}_{res}.json"
    if not path.exists():
        from mobiledeploy import io
        from mobiledeploy.cost.info import config_stats

        io.write_json(path, config_stats(arch, alpha=float(alpha), resolution=int(res), classes=1000).to_json())
    data = json.loads(path.read_text())
    return tuple(LayerStats(**{**x, "output_shape": tuple(x["output_shape"]), "kernel": tuple(x["kernel"]),
                               "fused": tuple(x["fused"])}) for x in data["layers"])


def prior(device: dict, name: str, threads: int, **overrides):
    from mobiledeploy.cost.estimate import cost_model_for
    from mobiledeploy.targets import Target

    dev = {k: device[k] for k in DEVICE_KEYS if k in device}
    return replace(cost_model_for(Target(name=name, device=dev, threads=threads)), **overrides)


def _errs(pred: dict, rows) -> list[float]:
    return [100.0 * (pred[r.label] - r.latency_ms) / r.latency_ms for r in rows]


def _summary(errs: list[float]) -> dict:
    return {"n": len(errs), "median_abs_error_pct": statistics.median(abs(e) for e in errs),
            "worst_abs_error_pct": max(abs(e) for e in errs)}


def table_rows(table: dict) -> list:
    """The table's configs as calibration measurements (``mobiledeploy.cost.fit.Measurement``)."""
    from mobiledeploy.cost.fit import Measurement

    rows = []
    for model, ms in table["rows"]:
        layers = layers_for(model)
        rows.append(Measurement(label=model, layers=layers, precision=table["precision"], threads=table["threads"],
                                latency_ms=float(ms), macs=sum(x.macs for x in layers)))
    return rows


def evaluate(table: dict, device: dict, prior_log_multipliers: dict | None = None, **overrides) -> dict:
    from mobiledeploy.cost.model import apply_multipliers

    rows = table_rows(table)
    base = prior(device, table["device"], table["threads"], **overrides)
    if prior_log_multipliers:
        names = tuple(prior_log_multipliers)
        base = apply_multipliers(base, names, [prior_log_multipliers[n] for n in names])
    return score(rows, base)


def score(rows, base) -> dict:
    """Two-corner and one-point calibration of ``base`` on ``rows``, scored on the others."""
    from mobiledeploy.cost.fit import fit, predict_ms

    big, small = max(rows, key=lambda r: r.macs), min(rows, key=lambda r: r.macs)
    two = fit(base, [big, small], loo=False)
    rest = [r for r in rows if r not in (big, small)]
    k2 = math.exp(statistics.mean(math.log(r.latency_ms / r.macs) for r in (big, small)))
    one = fit(base, [big], loo=False)
    others = [r for r in rows if r is not big]
    pred2 = {r.label: predict_ms(two.model, r) for r in rows}
    pred1 = {r.label: predict_ms(one.model, r) for r in rows}
    e2, n2 = _errs(pred2, rest), [100.0 * (k2 * r.macs - r.latency_ms) / r.latency_ms for r in rest]
    e1 = _errs(pred1, others)
    n1 = [100.0 * (big.latency_ms * r.macs / big.macs - r.latency_ms) / r.latency_ms for r in others]
    m, rate = two.model, "int8" if big.precision == "int8" else "fp32"
    ratio0 = [predict_ms(base, r) / r.latency_ms for r in rows]  # the priors alone, nothing calibrated
    return {
        "corners": [big.label, small.label], "fit_params": list(two.params),
        "log_multipliers": {"compute": math.log(m.efficiency[rate]["conv1x1"] / base.efficiency[rate]["conv1x1"]),
                            "memory": math.log(m.bandwidth_gbs / base.bandwidth_gbs)},
        "fitted": {"effective_gmacs": {p: m.peak_gmacs[p] * m.efficiency[p]["conv1x1"] for p in m.peak_gmacs},
                   "bandwidth_gbs": m.bandwidth_gbs, "overhead_us": m.overhead_us},
        "two_corners": _summary(e2), "two_corners_naive": _summary(n2),
        "one_point": _summary(e1), "one_point_naive": _summary(n1),
        "priors_only": {**_summary([100.0 * (x - 1.0) for x in ratio0]),
                        "estimate_over_measured_min": min(ratio0), "estimate_over_measured_max": max(ratio0)},
        "rows": [{"model": r.label, "measured_ms": r.latency_ms, "two_corner_ms": pred2[r.label],
                  "one_point_ms": pred1[r.label], "corner": r in (big, small)} for r in rows],
    }


LEARNED = ("compute", "memory", "overhead", "depthwise")  # shared shape multipliers; compute/memory per precision


def _learn_priors(tables: list[dict], data: dict) -> dict:
    """Shape multipliers (``LEARNED``; compute and memory per precision) fitted jointly on
    ``tables``, each table with its own free scale: least squares on log latency over every
    row, with the same weak pull towards the defaults as ``fit``."""
    from scipy.optimize import least_squares

    from mobiledeploy.cost.model import PRIOR_WEIGHT, LayerArrays, apply_multipliers

    keys = [(n, p) for n in LEARNED for p in (("fp32", "int8") if n in ("compute", "memory") else (None,))]
    work = []
    for t in tables:
        base = prior(data["devices"][t["device"]], t["device"], t["threads"])
        rows = [(LayerArrays(layers_for(m), t["precision"], t["threads"]), float(ms)) for m, ms in t["rows"]]
        idx = [keys.index((n, t["precision"] if (n, t["precision"]) in keys else None)) for n in LEARNED]
        work.append((base, rows, idx))

    def residuals(x):
        out = []
        for j, (base, rows, idx) in enumerate(work):
            m = replace(apply_multipliers(base, LEARNED, [x[i] for i in idx]), scale=math.exp(x[len(keys) + j]))
            out += [math.log(a.predict_ms(m) / ms) for a, ms in rows]
        return out + [PRIOR_WEIGHT * v for v in x[:len(keys)]]

    n = len(keys) + len(work)
    x = least_squares(residuals, [0.0] * n, bounds=([-6.0] * n, [6.0] * n)).x
    return {f"{k}/{p}" if p else k: float(x[i]) for i, (k, p) in enumerate(keys)}


def learned_variant(t: dict, data: dict, tables: list[dict]) -> dict:
    """Two corners and one point of ``t`` from priors learned on every OTHER table (``_learn_priors``)."""
    learned = _learn_priors([o for o in tables if o is not t], data)
    mult = {n: learned.get(f"{n}/{t['precision']}", learned.get(n)) for n in LEARNED}
    res = evaluate(t, data["devices"][t["device"]], mult)
    return {"prior_log_multipliers": mult, "two_corners": res["two_corners"], "one_point": res["one_point"],
            "two_corners_naive": res["two_corners_naive"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "estimate_generalize.json"))
    args = ap.parse_args()
    data = tomllib.loads(DATA.read_text(encoding="utf-8"))
    report = {"data": str(DATA.relative_to(ROOT)), "tables": []}
    variants = {"max": {"combine": "max"}, "no_spill_penalty": {"cache_ratio": 1.0}}
    scored = [t for t in data["tables"] if len(t["rows"]) >= 3]
    for t in scored:
        dev = data["devices"][t["device"]]
        res = {"name": t["name"], "source": t["source"], **evaluate(t, dev)}
        res["variants"] = {k: evaluate(t, dev, **v)["two_corners"] for k, v in variants.items()}
        res["learned_priors"] = learned_variant(t, data, scored)
        res["_table"], res["precision"] = t, t["precision"]
        report["tables"].append(res)
    # One point with learned priors: the compute/memory balance of the priors replaced by the
    # median two-corner fit of the tables from OTHER sources (same precision), then a scale
    # fitted on this table's largest config. Nothing of this table's source is used.
    for res in report["tables"]:
        t = res.pop("_table")
        src = t["source"].split(",")[0]
        others = [o for o in report["tables"] if o["source"].split(",")[0] != src
                  and o["precision"] == t["precision"]]
        if others:
            learned = {k: statistics.median(o["log_multipliers"][k] for o in others) for k in ("compute", "memory")}
            res["one_point_learned"] = evaluate(t, data["devices"][t["device"]], learned)["one_point"]
            res["one_point_learned"]["prior_log_multipliers"] = learned
        _print(res)
    bars = {"two_corner_median_max_pct": 6.0, "two_corner_worst_max_pct": 15.0, "one_point_median_max_pct": 10.0}
    tabs = report["tables"]
    report["bars"] = bars
    # what estimate labels quote for a one-measurement calibration and for priors alone
    report["label_evidence"] = {
        "one_point_median_abs_error_pct_range": [min(t["one_point"]["median_abs_error_pct"] for t in tabs),
                                                 max(t["one_point"]["median_abs_error_pct"] for t in tabs)],
        "priors_only_estimate_over_measured_range": [min(t["priors_only"]["estimate_over_measured_min"] for t in tabs),
                                                     max(t["priors_only"]["estimate_over_measured_max"] for t in tabs)],
        "tables": len(tabs)}
    report["meets"] = {
        "two_corner_median": [t["name"] for t in tabs if t["two_corners"]["median_abs_error_pct"] > bars["two_corner_median_max_pct"]],
        "two_corner_worst": [t["name"] for t in tabs if t["two_corners"]["worst_abs_error_pct"] > bars["two_corner_worst_max_pct"]],
        "better_than_naive": [t["name"] for t in tabs if t["two_corners"]["median_abs_error_pct"]
                              >= t["two_corners_naive"]["median_abs_error_pct"]],
        "one_point_median": [t["name"] for t in tabs if t["one_point"]["median_abs_error_pct"] > bars["one_point_median_max_pct"]],
        "one_point_learned_median": [t["name"] for t in tabs if t.get("one_point_learned", t["one_point"])
                                     ["median_abs_error_pct"] > bars["one_point_median_max_pct"]],
    }
    for key, bar, what in (("two_corners", "two_corner_median_max_pct", "median_abs_error_pct"),
                           ("two_corners", "two_corner_worst_max_pct", "worst_abs_error_pct"),
                           ("one_point", "one_point_median_max_pct", "median_abs_error_pct")):
        report["meets"][f"learned_priors_{key}_{what.split('_')[0]}"] = [
            t["name"] for t in tabs if t["learned_priors"][key][what] > bars[bar]]
    report["meets"]["learned_priors_better_than_naive"] = [
        t["name"] for t in tabs if t["learned_priors"]["two_corners"]["median_abs_error_pct"]
        >= t["learned_priors"]["two_corners_naive"]["median_abs_error_pct"]]
    report["meets"] = {k: {"failing_tables": v, "all_tables_pass": not v} for k, v in report["meets"].items()}
    from mobiledeploy import io

    io.write_json(args.out, report)
    for k, v in report["meets"].items():
        print(f"{k}: {'all tables pass' if v['all_tables_pass'] else 'FAILS on ' + '; '.join(v['failing_tables'])}")
    return 0


def _print(r: dict) -> None:
    s2, n2, s1, n1 = r["two_corners"], r["two_corners_naive"], r["one_point"], r["one_point_naive"]
    v = r["variants"]
    print(f"{r['name'][:52]:<52} n={s2['n']:>2} 2-corner {s2['median_abs_error_pct']:5.1f}/{s2['worst_abs_error_pct']:5.1f}% "
          f"(naive {n2['median_abs_error_pct']:5.1f}/{n2['worst_abs_error_pct']:5.1f})  1-point "
          f"{s1['median_abs_error_pct']:5.1f}/{s1['worst_abs_error_pct']:5.1f}% (naive {n1['median_abs_error_pct']:5.1f}/"
          f"{n1['worst_abs_error_pct']:5.1f}) learned {r.get('one_point_learned', s1)['median_abs_error_pct']:5.1f}  [max {v['max']['median_abs_error_pct']:.1f}/{v['max']['worst_abs_error_pct']:.1f}, "
          f"no-spill {v['no_spill_penalty']['median_abs_error_pct']:.1f}/{v['no_spill_penalty']['worst_abs_error_pct']:.1f}]",
          flush=True)


if __name__ == "__main__":
    sys.exit(main())

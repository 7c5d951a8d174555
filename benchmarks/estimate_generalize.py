"""Does the cost model transfer? Calibrate on two corners of each published table, predict the rest.

    python -m benchmarks run estimate_generalize

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

import statistics
import tomllib

from benchmarks.common.published import DATA, ROOT, evaluate, learned_variant

KIND = "study"


def add_arguments(ap) -> None:
    pass


def run(args) -> dict:
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
    for k, v in report["meets"].items():
        print(f"{k}: {'all tables pass' if v['all_tables_pass'] else 'FAILS on ' + '; '.join(v['failing_tables'])}")
    return report


def _print(r: dict) -> None:
    s2, n2, s1, n1 = r["two_corners"], r["two_corners_naive"], r["one_point"], r["one_point_naive"]
    v = r["variants"]
    print(f"{r['name'][:52]:<52} n={s2['n']:>2} 2-corner {s2['median_abs_error_pct']:5.1f}/{s2['worst_abs_error_pct']:5.1f}% "
          f"(naive {n2['median_abs_error_pct']:5.1f}/{n2['worst_abs_error_pct']:5.1f})  1-point "
          f"{s1['median_abs_error_pct']:5.1f}/{s1['worst_abs_error_pct']:5.1f}% (naive {n1['median_abs_error_pct']:5.1f}/"
          f"{n1['worst_abs_error_pct']:5.1f}) learned {r.get('one_point_learned', s1)['median_abs_error_pct']:5.1f}  [max {v['max']['median_abs_error_pct']:.1f}/{v['max']['worst_abs_error_pct']:.1f}, "
          f"no-spill {v['no_spill_penalty']['median_abs_error_pct']:.1f}/{v['no_spill_penalty']['worst_abs_error_pct']:.1f}]",
          flush=True)

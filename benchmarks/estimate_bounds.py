"""What limits the two-corner bars on the published tables: the data, the model's terms, or its priors?

    python -m benchmarks run estimate_bounds

Three studies on the tables of ``benchmarks/data/published_latency.toml`` that
the estimate_generalize study scores (at least 3 configs). Published figures, so no machine
of ours is involved.

1. **Printed precision.** Each figure is rounded to its last printed digit ("0.8" is
   anywhere in 0.75-0.85). The two-corner calibration is repeated with each corner at
   either end of its interval (4 runs); the others are scored against their printed
   values as usual. A bar that flips inside that band cannot be decided by the table.
2. **Best shape per table.** Time as any non-negative combination of the cost model's
   terms, summed over layers: MACs of each operator class (conv 1x1, conv kxk,
   depthwise, fully connected; one rate each), activation bytes, weight bytes, bytes
   beyond the device's cache, operators (a fixed cost each). The default model (sum of
   compute + memory + overhead) is one such combination, whatever its priors. A linear
   program finds the combination through both corners exactly with the smallest worst
   error on the other configs, i.e. chosen on the scored configs themselves: a floor
   that no choice of priors for this model can beat, not a prediction.
   Also reported: the memory term of the two-corner fit per activation element (ns on one
   core), beside the prior's (half the device's DRAM bandwidth).
3. **Shape variants.** The two-corner and one-point calibration with one change to the
   model's shape or priors each (see ``VARIANTS``), counting the tables that miss each bar.

Writes benchmarks/results/estimate_bounds.json.
"""

from __future__ import annotations

import math
import re
import statistics
import tomllib
from dataclasses import replace

import numpy as np

from benchmarks.common import published as eg

KIND = "study"

BARS = {"median": 6.0, "worst": 15.0, "one_point": 10.0}
TERMS = ("conv1x1", "convkxk", "depthwise", "fc", "activation_bytes", "weight_bytes", "spilled_bytes", "operators")


# ---------------------------------------------------------------- 1. printed precision


def printed_halfsteps(text: str) -> list[dict[str, float]]:
    """Per table (in file order), each config's half unit of the last printed digit."""
    out = []
    for block in text.split("[[tables]]")[1:]:
        figures = re.findall(r'\["([^"]+)",\s*([0-9]+(?:\.([0-9]+))?)\]', block)
        out.append({model: 0.5 * 10.0 ** -len(dec) for model, _, dec in figures})
    return out


def precision_band(table: dict, device: dict, half: dict[str, float]) -> dict:
    """Two-corner errors with the corners anywhere in their printed intervals."""
    rows = eg.table_rows(table)
    base = eg.prior(device, table["device"], table["threads"])
    big, small = max(rows, key=lambda r: r.macs), min(rows, key=lambda r: r.macs)
    runs = []
    for sb in (-1, 1):
        for ss in (-1, 1):
            moved = {big.label: big.latency_ms + sb * half[big.label], small.label: small.latency_ms + ss * half[small.label]}
            res = eg.score([replace(r, latency_ms=moved.get(r.label, r.latency_ms)) for r in rows], base)
            runs.append({"corners_ms": [moved[big.label], moved[small.label]], **res["two_corners"]})
    return {"corner_halfsteps_pct": [100 * half[r.label] / r.latency_ms for r in (big, small)],
            "scored_halfstep_pct_max": max(100 * half[r.label] / r.latency_ms for r in rows if r not in (big, small)),
            "median_range_pct": [min(r["median_abs_error_pct"] for r in runs), max(r["median_abs_error_pct"] for r in runs)],
            "worst_range_pct": [min(r["worst_abs_error_pct"] for r in runs), max(r["worst_abs_error_pct"] for r in runs)],
            "runs": runs}


# ---------------------------------------------------------------- 2. best shape per table


def term_totals(row, cache_bytes: float) -> np.ndarray:
    from mobiledeploy.cost.model import PRECISION_BYTES, runtime_layers

    act_b, w_b = PRECISION_BYTES[row.precision]
    layers = runtime_layers(row.layers)
    macs = [sum(x.macs for x in layers if x.op_class == c) for c in TERMS[:4]]
    return np.array(macs + [sum(x.in_elems + x.out_elems for x in layers) * act_b,
                            sum(x.weight_elems for x in layers) * w_b,
                            sum(max(0.0, x.bytes_moved(act_b, w_b) - cache_bytes) for x in layers) if cache_bytes else 0.0,
                            len(layers)], float)


def best_shape(table: dict, device: dict, terms: tuple[str, ...] = TERMS) -> dict:
    """Smallest worst error of any non-negative combination of ``terms`` through both corners."""
    from scipy.optimize import linprog

    rows = eg.table_rows(table)
    cache = 1024.0 * (device.get("l2_kb", 0) + device.get("l3_kb", 0))
    x = np.array([term_totals(r, cache) for r in rows])[:, [TERMS.index(t) for t in terms]]
    x = x / np.where(x.max(0) > 0, x.max(0), 1.0)  # scaled columns, same feasible set
    y = np.array([r.latency_ms for r in rows])
    big, small = int(np.argmax([r.macs for r in rows])), int(np.argmin([r.macs for r in rows]))
    rest = [i for i in range(len(rows)) if i not in (big, small)]
    n = x.shape[1]
    # variables: n term weights >= 0, then t; minimise t s.t. |x_i w / y_i - 1| <= t
    a_ub = [np.r_[s * x[i] / y[i], -1.0] for i in rest for s in (1.0, -1.0)]
    b_ub = [s for _ in rest for s in (1.0, -1.0)]
    a_eq, b_eq = [np.r_[x[big], 0.0], np.r_[x[small], 0.0]], y[[big, small]]
    res = linprog(np.r_[np.zeros(n), 1.0], A_ub=np.array(a_ub), b_ub=np.array(b_ub), A_eq=np.array(a_eq), b_eq=b_eq,
                  bounds=[(0, None)] * (n + 1), method="highs")
    if not res.success:
        return {"feasible": False}
    w = res.x[:n]
    errs = [100 * abs(x[i] @ w / y[i] - 1) for i in rest]
    return {"feasible": True, "worst_abs_error_pct": float(100 * res.x[-1]),
            "median_abs_error_pct_at_that_shape": float(statistics.median(errs)),
            "terms_used": [t for t, v in zip(terms, w) if v > 1e-9]}


# ---------------------------------------------------------------- 3. shape variants


def _arrays_class(kind: str, value: float, dram_gbs: float):
    """A LayerArrays that applies one variant (kinds: see VARIANTS), through its own terms()."""
    from mobiledeploy.cost.model import PRECISION_BYTES, LayerArrays

    class Variant(LayerArrays):
        def __init__(self, layers, precision, threads=1):
            super().__init__(layers, precision, threads)
            if kind == "epilogue":  # per conv output element, ``value`` MAC-equivalents at the conv's rate
                k = np.array([x.macs / x.out_elems if x.op_class in ("conv1x1", "convkxk", "fc") and x.out_elems
                              else np.inf for x in self.layers])
                self.compute_factor = 1.0 + value / k
            elif kind in ("weights_dram", "activations_only"):  # the memory term sees activations only
                self.weight_bytes = np.array([x.weight_elems * PRECISION_BYTES[precision][1] for x in self.layers], float)
                self.bytes = self.bytes - self.weight_bytes

        def terms(self, model, threads=None):
            t = super().terms(model, threads)
            if kind == "epilogue":
                t["compute"] = t["compute"] * self.compute_factor
            elif kind == "weights_dram" and self.weight_bytes.sum() > model.cache_kb * 1024.0:
                t["memory"] = t["memory"] + self.weight_bytes / (dram_gbs * 1e9)  # streamed each run, shared by threads
            return t

    return Variant


# name -> (what it changes, arrays kind, value, prior overrides)
VARIANTS = {
    "defaults": ("the shipped model", None, 0.0, {}),
    "weights_dram": ("weights charged at half the device's DRAM bandwidth when the model's weights exceed the cache, "
                     "else not at all; activations as before", "weights_dram", 0.0, {}),
    "activations_only": ("no weight traffic at all", "activations_only", 0.0, {}),
    "epilogue_4": ("4 MAC-equivalents per conv output element (accumulator store, bias, clamp)", "epilogue", 4.0, {}),
    "cache_ratio_4": ("a byte beyond the cache costs 4x a cached byte (default 2x)", None, 0.0, {"cache_ratio": 4.0}),
    "overhead_2us": ("overhead prior 2 us per operator (default 5)", None, 0.0, {"overhead_us": 2.0}),
    "thread_sync_10us": ("10 us more per operator when threads > 1 (pool wake-up and barrier)", None, 0.0, {"sync_us": 10.0}),
}


def evaluate_variant(table: dict, device: dict, kind, value: float, overrides: dict) -> dict:
    from mobiledeploy.cost import fit as cost_fit
    from mobiledeploy.cost import model as cost_model

    overrides = dict(overrides)
    sync = overrides.pop("sync_us", 0.0)
    if sync and table["threads"] > 1:
        overrides["overhead_us"] = eg.prior(device, table["device"], table["threads"]).overhead_us + sync
    if kind is None:
        return eg.evaluate(table, device, **overrides)
    original = cost_model.LayerArrays
    cost_model.LayerArrays = cost_fit.LayerArrays = _arrays_class(kind, value, 0.5 * device.get("mem_bandwidth_gbs", 20.0))
    try:
        return eg.evaluate(table, device, **overrides)
    finally:
        cost_model.LayerArrays = cost_fit.LayerArrays = original


def family(table: dict) -> str:
    return "XNNPACK" if "XNNPACK" in table["source"] else "TFLite 2018-2019"


def learned_by_family(table: dict, data: dict, scored: list[dict]) -> dict:
    """``estimate_generalize``'s learned priors, learned only on the OTHER tables of the same runtime family."""
    pool = [o for o in scored if o is not table and family(o) == family(table)]
    learned = eg.learn_priors(pool, data)
    mult = {n: learned.get(f"{n}/{table['precision']}", learned.get(n)) for n in eg.LEARNED}
    return eg.evaluate(table, data["devices"][table["device"]], mult)


def misses(results: dict[str, dict]) -> dict:
    """Tables missing each bar, from {table name: evaluate() result}."""
    out = {"two_corner_median": [], "two_corner_worst": [], "not_better_than_naive": [], "one_point_median": []}
    for name, r in results.items():
        two, naive, one = r["two_corners"], r["two_corners_naive"], r["one_point"]
        for key, bad in (("two_corner_median", two["median_abs_error_pct"] > BARS["median"]),
                         ("two_corner_worst", two["worst_abs_error_pct"] > BARS["worst"]),
                         ("not_better_than_naive", two["median_abs_error_pct"] >= naive["median_abs_error_pct"]),
                         ("one_point_median", one["median_abs_error_pct"] > BARS["one_point"])):
            if bad:
                out[key].append(name)
    return out


def add_arguments(ap) -> None:
    pass


def run(args) -> dict:
    text = eg.DATA.read_text(encoding="utf-8")
    data = tomllib.loads(text)
    halves = printed_halfsteps(text)
    if [sorted(h) for h in halves] != [sorted(m for m, _ in t["rows"]) for t in data["tables"]]:
        raise SystemExit(f"{eg.DATA}: could not read every table's printed figures")
    scored = [(t, h) for t, h in zip(data["tables"], halves) if len(t["rows"]) >= 3]
    report = {"data": str(eg.DATA.relative_to(eg.ROOT)), "bars_pct": BARS, "tables": [], "variants": {}}
    print(f"{'table':<52} {'2-corner median/worst':>22} {'inside printed precision':>32} {'best shape: worst':>18}")
    from mobiledeploy.cost.model import PRECISION_BYTES

    for t, half in scored:
        dev = data["devices"][t["device"]]
        res = eg.evaluate(t, dev)
        base, bw = res["two_corners"], res["fitted"]["bandwidth_gbs"]
        band, best = precision_band(t, dev, half), best_shape(t, dev)
        best["without_spilled_bytes"] = best_shape(t, dev, tuple(x for x in TERMS if x != "spilled_bytes"))
        # the two-corner fit's memory term per activation element, on one core (it carries the weights too)
        per_elem = PRECISION_BYTES[t["precision"]][0] / bw
        report["tables"].append({"name": t["name"], "two_corners": base, "printed_precision": band, "best_shape": best,
                                 "fitted_bandwidth_gbs": bw, "fitted_ns_per_activation_element": per_elem,
                                 "prior_ns_per_activation_element": PRECISION_BYTES[t["precision"]][0]
                                 / eg.prior(dev, t["device"], t["threads"]).bandwidth_gbs})
        print(f"{t['name'][:52]:<52} {base['median_abs_error_pct']:9.1f} / {base['worst_abs_error_pct']:5.1f}%   "
              f"median {band['median_range_pct'][0]:4.1f}-{band['median_range_pct'][1]:4.1f}, "
              f"worst {band['worst_range_pct'][0]:4.1f}-{band['worst_range_pct'][1]:4.1f}%   "
              f"{best.get('worst_abs_error_pct', math.nan):8.1f}%", flush=True)
    tables = [t for t, _ in scored]
    runs = {name: (what, lambda t, k=kind, v=value, o=over: evaluate_variant(t, data["devices"][t["device"]], k, v, o))
            for name, (what, kind, value, over) in VARIANTS.items()}
    runs["learned_by_family"] = ("priors' shape learned on the other tables of the same runtime family "
                                 "(XNNPACK README / 2018-2019 TFLite), leave one table out",
                                 lambda t: learned_by_family(t, data, tables))
    for name, (what, score_table) in runs.items():
        results = {t["name"]: score_table(t) for t in tables}
        miss = misses(results)
        report["variants"][name] = {"what": what, "misses": miss, "tables": {
            n: {k: r[k] for k in ("two_corners", "two_corners_naive", "one_point")} for n, r in results.items()}}
        print(f"{name:<18} misses: 2-corner median {len(miss['two_corner_median'])}, worst "
              f"{len(miss['two_corner_worst'])}, not better than naive {len(miss['not_better_than_naive'])}, "
              f"1-point median {len(miss['one_point_median'])} (of {len(tables)})", flush=True)
    return report

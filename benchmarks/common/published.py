"""The published-latency tables and the cost model's scores on them: shared by the
estimate_generalize, estimate_bounds and estimate_host studies (not a study itself)."""

from __future__ import annotations

import json
import math
import os
import statistics
from dataclasses import replace

from benchmarks.harness import BUILD, ROOT

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
DATA = ROOT / "benchmarks" / "data" / "published_latency.toml"
CACHE = BUILD / "estimate_generalize"
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


def learn_priors(tables: list[dict], data: dict) -> dict:
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
    """Two corners and one point of ``t`` from priors learned on every OTHER table (``learn_priors``)."""
    learned = learn_priors([o for o in tables if o is not t], data)
    mult = {n: learned.get(f"{n}/{t['precision']}", learned.get(n)) for n in LEARNED}
    res = evaluate(t, data["devices"][t["device"]], mult)
    return {"prior_log_multipliers": mult, "two_corners": res["two_corners"], "one_point": res["one_point"],
            "two_corners_naive": res["two_corners_naive"]}

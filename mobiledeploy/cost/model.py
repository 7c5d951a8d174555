"""The physical per-layer cost model and its calibration (``estimate``, ``target calibrate``).

Per layer (``mobiledeploy.cost.ir.LayerStats``, activations fused into their conv)::

    compute  = MACs / (peak MAC/s[precision] x efficiency[precision][op class] x speedup)
    memory   = (bytes + (cache_ratio - 1) x spilled bytes) / (bandwidth x speedup)
    overhead = overhead_us                                  (one dispatch per op, not parallel)
    time     = compute + memory + overhead                  (total x scale)

bytes: activations read + written and weights read; spilled: those beyond the profile's
cache (``[device] l2_kb + l3_kb``); ``speedup = 1 + (threads - 1) x thread_efficiency``.
Compute and memory are summed (``combine = "max"``: the larger); docs/estimate.md shows
why, and how little the assumed ``cache_ratio`` = 2 matters.

``fit``: least squares on log latency over log-multipliers of named parameters, within
``_BOUNDS`` (physical); n rows fit the first n of ``compute``, ``int8`` (rows mix fp32 and
int8), ``threads`` (rows mix thread counts), ``memory``, ``overhead``, ``depthwise``, one
row a global ``scale``. ``loo=True`` adds a leave-one-out error (folds beyond ``LOO_MAX_FOLDS``).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, replace

import numpy as np

from mobiledeploy.errors import UsageError

COMPUTE_CLASSES = ("conv1x1", "convkxk", "depthwise", "fc")
PRECISIONS = ("fp32", "int8")
# (activation bytes, weight bytes) per element, and which peak rate the arithmetic uses
PRECISION_BYTES = {"fp32": (4, 4), "fp16": (4, 2), "dynamic": (4, 1), "int8": (1, 1)}
PRECISION_RATE = {"fp32": "fp32", "fp16": "fp32", "dynamic": "fp32", "int8": "int8"}
# Keras layers the TFLite converter folds away (explicit padding before a conv).
_CONVERTER_FOLDED = {"ZeroPadding2D"}

COMBINES = ("sum", "max")
DEFAULT_COMBINE = "sum"
DEFAULT_CACHE_RATIO = 2.0  # cost of a spilled byte / a cached byte (an assumption)
FIT_PARAMS = ("scale", "compute", "memory", "int8", "threads", "overhead", "depthwise")
PARAM_ALIASES = {"bandwidth": "memory"}
LOO_MAX_FOLDS = 30  # leave-one-out refits at most this many times (then as many folds)
PRIOR_WEIGHT = 0.05  # residual weight of log(param / prior) when the fit is over-determined
# log-multiplier bounds per parameter (lower, upper); compute/int8 are capped further so
# that no efficiency exceeds 1 (the peak rate)
_BOUNDS = {"scale": (-5.0, 5.0), "compute": (-6.0, 6.0), "depthwise": (-4.0, 4.0), "int8": (-4.0, 4.0),
           "memory": (-math.log(1000.0), math.log(20.0)), "threads": (-4.0, 0.0), "overhead": None}
# No efficiency above MAX_EFFICIENCY x the profile's peak: the peak is clock x FLOP/cycle at
# the profile's clock, which boost clocks can exceed (the host's clock is the nominal one).
MAX_EFFICIENCY = 2.0


def runtime_layers(layers) -> list:
    """The layers a mobile runtime executes: drop what converters fold away."""
    return [layer for layer in layers if layer.type not in _CONVERTER_FOLDED]


class LayerArrays:
    """A model's runtime layers as arrays: one evaluation of the cost model is a few numpy ops."""

    def __init__(self, layers, precision: str, threads: int = 1):
        if precision not in PRECISION_BYTES:
            raise UsageError(f"unknown precision {precision!r}; choose from {', '.join(PRECISION_BYTES)}")
        self.layers = runtime_layers(layers)
        act_b, w_b = PRECISION_BYTES[precision]
        self.precision, self.rate, self.threads = precision, PRECISION_RATE[precision], int(threads)
        self.macs = np.array([x.macs for x in self.layers], float)
        self.bytes = np.array([x.bytes_moved(act_b, w_b) for x in self.layers], float)
        self.cls = [x.op_class for x in self.layers]
        self._classes = sorted(set(self.cls))  # the efficiency lookup: once per class, not per layer
        self._class_index = np.array([self._classes.index(c) for c in self.cls], dtype=int)

    def terms(self, model, threads: int | None = None) -> dict[str, np.ndarray]:
        """Per-layer seconds: compute, memory, overhead, and the spilled bytes."""
        eff = np.array([model.efficiency[self.rate].get(c, np.inf) for c in self._classes])[self._class_index]
        speed = model.speedup(threads or self.threads)
        comp = np.where(self.macs > 0, self.macs / (model.peak_gmacs[self.rate] * 1e9 * eff), 0.0) / speed
        cache = getattr(model, "cache_kb", 0.0) * 1024.0
        ratio = getattr(model, "cache_ratio", DEFAULT_CACHE_RATIO)
        spill = np.maximum(0.0, self.bytes - cache) if cache > 0 else np.zeros_like(self.bytes)
        mem = (self.bytes + (ratio - 1.0) * spill) / (model.bandwidth_gbs * 1e9) / speed
        ovh = np.full_like(self.bytes, model.overhead_us * 1e-6)
        return {"compute": comp, "memory": mem, "overhead": ovh, "spill": spill}

    def layer_seconds(self, model, threads: int | None = None, *, smooth: float | None = None) -> np.ndarray:
        t = self.terms(model, threads)
        combine = getattr(model, "combine", DEFAULT_COMBINE)
        if combine == "max":
            c, m = t["compute"], t["memory"]
            both = np.maximum(c, m) if smooth is None else (c ** smooth + m ** smooth) ** (1.0 / smooth)
        else:
            both = t["compute"] + t["memory"]
        return (both + t["overhead"]) * model.scale

    def predict_ms(self, model, threads: int | None = None, *, smooth: float | None = None) -> float:
        return float(self.layer_seconds(model, threads, smooth=smooth).sum() * 1e3)


class RowArrays:
    """The rows of a fit as LayerArrays, one per distinct (model layers, precision, threads): rows of
    the same model share one evaluation, so a fit costs as much as its distinct configurations."""

    def __init__(self, rows):
        keys: dict = {}
        self.arrays = []
        index = []
        for r in rows:
            key = (id(r.layers), r.precision, r.threads)  # the rows are alive, so their ids are distinct
            if key not in keys:
                keys[key] = len(self.arrays)
                self.arrays.append(LayerArrays(r.layers, r.precision, r.threads))
            index.append(keys[key])
        self.index = np.array(index, dtype=int)

    def predict_ms(self, model, *, smooth: float | None = None) -> np.ndarray:
        """Each row's predicted latency (ms), in row order."""
        return np.array([a.predict_ms(model, smooth=smooth) for a in self.arrays])[self.index]


# ---------------------------------------------------------------- calibration


def apply_multipliers(base, names: tuple[str, ...], theta):
    m = {n: math.exp(float(t)) for n, t in zip(names, theta)}
    eff = {p: {c: base.efficiency[p][c] * m.get("compute", 1.0) * (m.get("depthwise", 1.0) if c == "depthwise" else 1.0)
               * (m.get("int8", 1.0) if p == "int8" else 1.0) for c in COMPUTE_CLASSES} for p in PRECISIONS}
    return replace(base, efficiency=eff, scale=base.scale * m.get("scale", 1.0),
                   overhead_us=base.overhead_us * m.get("overhead", 1.0),
                   bandwidth_gbs=base.bandwidth_gbs * m.get("memory", 1.0),
                   thread_efficiency=min(1.0, base.thread_efficiency * m.get("threads", 1.0)))


def _bounds(base, names: tuple[str, ...]):
    """Log-multiplier bounds that keep the fitted parameters physical."""
    lo, hi = [], []
    for n in names:
        if n == "overhead":  # 0.01 .. 1000 us per op
            a, b = math.log(0.01 / base.overhead_us), math.log(1000.0 / base.overhead_us)
        else:
            a, b = _BOUNDS[n]
        if n in ("compute", "int8", "depthwise"):  # no efficiency above the peak rate
            precs = ("int8",) if n == "int8" else ("fp32", "int8")
            classes = ("depthwise",) if n == "depthwise" else None
            top = max(v for p in precs for c, v in base.efficiency[p].items() if classes is None or c in classes)
            b = min(b, math.log(MAX_EFFICIENCY / top))
        if n == "threads":
            b = min(b, math.log(1.0 / base.thread_efficiency)) if base.thread_efficiency < 1 else 0.0
        b = max(b, a + 1e-6)
        lo.append(a)
        hi.append(b)
    return np.array(lo), np.array(hi)


def default_params(rows) -> tuple[str, ...]:
    """As many parameters as the rows allow (see the module docstring)."""
    n = len(rows)
    if n <= 1:
        return ("scale",)
    order = ["compute"]
    if len({r.precision == "int8" for r in rows}) > 1:
        order.append("int8")
    if len({r.threads for r in rows}) > 1:
        order.append("threads")
    order += ["memory", "overhead", "depthwise"]
    return tuple(dict.fromkeys(order))[:n]


def solve(base, rows, names: tuple[str, ...]):
    """The fitted model (least squares on log latency, bounded); no error checks."""
    from scipy.optimize import least_squares

    arrays = RowArrays(rows)
    logs = np.log([r.latency_ms for r in rows])
    prior = PRIOR_WEIGHT if len(rows) > len(names) else 0.0
    lo, hi = _bounds(base, names)

    def residuals(theta, smooth=None):
        m = apply_multipliers(base, names, theta)
        pred = np.log(arrays.predict_ms(m, smooth=smooth))
        return np.concatenate([pred - logs, prior * np.asarray(theta)])

    starts = [np.clip(np.zeros(len(names)), lo, hi)]
    for name, value in (("memory", -2.0), ("memory", 1.5), ("compute", -1.5), ("overhead", 1.5)):
        if name in names:
            x0 = np.zeros(len(names))
            x0[names.index(name)] = value
            starts.append(np.clip(x0, lo, hi))
    best = None
    smooth = 4.0 if getattr(base, "combine", DEFAULT_COMBINE) == "max" else None
    for x0 in starts:
        s = least_squares(residuals, x0, bounds=(lo, hi), method="trf", kwargs={"smooth": smooth})
        if smooth:
            s = least_squares(residuals, s.x, bounds=(lo, hi), method="trf")
        if best is None or s.cost < best.cost:
            best = s
    return apply_multipliers(base, names, best.x)


@dataclass(frozen=True)
class FitResult:
    model: object  # estimate.CostModel
    params: tuple[str, ...]
    rows: tuple
    estimates_ms: tuple[float, ...]
    errors_pct: tuple[float, ...]  # (estimate - measured) / measured, in-sample
    loo_errors_pct: tuple[float, ...] = ()  # each row predicted by the fit on the other rows
    loo_folds: int = 0  # with more than LOO_MAX_FOLDS rows: by the fit on the rows outside its fold

    @property
    def median_abs_error_pct(self) -> float:
        return float(statistics.median(abs(e) for e in self.errors_pct))

    @property
    def worst_abs_error_pct(self) -> float:
        return float(max(abs(e) for e in self.errors_pct))

    @property
    def loo_median_abs_error_pct(self) -> float | None:
        return float(statistics.median(abs(e) for e in self.loo_errors_pct)) if self.loo_errors_pct else None

    @property
    def loo_worst_abs_error_pct(self) -> float | None:
        return float(max(abs(e) for e in self.loo_errors_pct)) if self.loo_errors_pct else None

    def to_json(self) -> dict:
        loo = list(self.loo_errors_pct) or [None] * len(self.rows)
        return {"params": list(self.params), "n_rows": len(self.rows),
                "median_abs_error_pct": self.median_abs_error_pct, "worst_abs_error_pct": self.worst_abs_error_pct,
                "loo_median_abs_error_pct": self.loo_median_abs_error_pct,
                "loo_worst_abs_error_pct": self.loo_worst_abs_error_pct,
                **({"loo_folds": self.loo_folds} if self.loo_folds else {}),
                "rows": [{**r.to_json(), "estimate_ms": e, "error_pct": err, "loo_error_pct": lo}
                         for r, e, err, lo in zip(self.rows, self.estimates_ms, self.errors_pct, loo)],
                "cost_model": self.model.to_json()}


def check_rows(rows, names) -> tuple[str, ...]:
    if not rows:
        raise UsageError("no measurements to fit (--measurements has no rows)")
    for r in rows:
        if not (isinstance(r.latency_ms, (int, float)) and math.isfinite(r.latency_ms) and r.latency_ms > 0):
            raise UsageError(f"measured latency for {r.label} must be a positive number of ms, got {r.latency_ms!r}")
    names = tuple(dict.fromkeys(PARAM_ALIASES.get(p, p) for p in names)) if names else default_params(rows)
    bad = [p for p in names if p not in FIT_PARAMS]
    if bad:
        raise UsageError(f"unknown fit parameter {bad[0]!r} (--params); choose from {', '.join(FIT_PARAMS)}")
    if len(names) > len(rows):
        raise UsageError(f"too few rows: {len(rows)} measurement(s) cannot fit {len(names)} parameters "
                         f"({', '.join(names)}); give at least {len(names)} rows or fewer --params")
    return names


def fit(base, rows, *, params: tuple[str, ...] | None = None, loo: bool = False) -> FitResult:
    """Fit ``params`` (default: as many as the rows allow) of ``base`` to ``rows``; with ``loo``
    also each row predicted by the same fit on the other rows (``loo_errors_pct``)."""
    rows = list(rows)
    names = check_rows(rows, params)
    fitted = solve(base, rows, names)
    model = replace(fitted, fitted=True, notes=tuple(n for n in base.notes if "no calibrated" not in n))
    est = tuple(float(x) for x in RowArrays(rows).predict_ms(model))
    errs = tuple(100.0 * (e - r.latency_ms) / r.latency_ms for e, r in zip(est, rows))
    loo_errs, folds = (), 0
    if loo and len(rows) >= 2:
        # Leave-one-out up to LOO_MAX_FOLDS rows; beyond, that many folds (row i in fold i % folds),
        # so the number of refits stays bounded however many rows there are.
        folds = min(len(rows), LOO_MAX_FOLDS)
        out = [0.0] * len(rows)
        for k in range(folds):
            rest = [r for i, r in enumerate(rows) if i % folds != k]
            held = list(range(k, len(rows), folds))
            sub = tuple(p for p in names if p in default_params(rest)) if params else default_params(rest)
            m = solve(base, rest, sub[:len(rest)] or ("scale",))
            pred = RowArrays([rows[i] for i in held]).predict_ms(m)
            for i, p in zip(held, pred):
                out[i] = 100.0 * (float(p) - rows[i].latency_ms) / rows[i].latency_ms
        loo_errs = tuple(out)
    return FitResult(model=model, params=names, rows=tuple(rows), estimates_ms=est, errors_pct=errs,
                     loo_errors_pct=loo_errs, loo_folds=folds if folds < len(rows) else 0)


# What the two labels without an error estimate of their own can quote: the 17 published phone
# tables of benchmarks/estimate_generalize.py ("label_evidence" in its results; a test keeps
# these in step). One measurement (a scale): per-table median error; priors alone: estimate /
# measured latency.
PUBLISHED_TABLES = 17
ONE_POINT_MEDIAN_PCT = (1, 18)
PRIORS_ONLY_RATIO = (0.27, 1.4)
PRIORS_ONLY_EVIDENCE = (f"on {PUBLISHED_TABLES} published phone tables priors alone gave "
                        f"{PRIORS_ONLY_RATIO[0]:g}-{PRIORS_ONLY_RATIO[1]:g}x the measured latency")
PRIORS_ONLY_TEXT = f"expected error unknown ({PRIORS_ONLY_EVIDENCE})"


def expected_error_text(cost_model_table: dict) -> str:
    """What a target's [cost_model] says about its own accuracy, for estimate labels."""
    for key, what in (("heldout_median_abs_error_pct", "held-out"), ("loo_median_abs_error_pct", "leave-one-out")):
        v = cost_model_table.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return f"expected error ~{v:.0f}% ({what} median)"
    rows, params = cost_model_table.get("fitted_on") or [], cost_model_table.get("fit_params") or []
    v = cost_model_table.get("fit_median_abs_error_pct")
    if rows and len(rows) > len(params) and isinstance(v, (int, float)):
        return f"expected error ~{v:.0f}% (in-sample median only)"
    if rows and list(params) == ["scale"]:
        return (f"expected error unknown (one measurement fits a scale only; on {PUBLISHED_TABLES} published "
                f"phone tables that left median errors of {ONE_POINT_MEDIAN_PCT[0]}-{ONE_POINT_MEDIAN_PCT[1]}%)")
    if rows:
        return "expected error unknown (fitted exactly on as many measurements as parameters)"
    return PRIORS_ONLY_TEXT

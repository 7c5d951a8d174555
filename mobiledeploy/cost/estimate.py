"""On-device latency from a per-layer cost model (``mobiledeploy estimate``).

The model (per-layer compute + memory + overhead, cache spills, its fit) is
``mobiledeploy.cost.model``; this module resolves a target's parameters and applies them
to the layers ``mobiledeploy.cost.graph`` reads. Peak MAC/s comes from the target's
``[device]`` figures (``clock_ghz * fp32_flops_per_cycle / 2`` for fp32: one FMA = 2 FLOP =
1 MAC; ``clock_ghz * int8_ops_per_cycle / 2`` for int8) unless ``[cost_model]``'s
``peak_gmacs_fp32/int8`` override them (the host has no figures); every other parameter is
in ``[cost_model]`` (fitted by ``target calibrate``). Every number this module returns is
an estimate for the device, never a measurement.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

from mobiledeploy.cost import info
from mobiledeploy.cost.arch_layers import COVERED
from mobiledeploy.cost.ir import OP_CLASSES
from mobiledeploy.cost.model import (COMBINES, COMPUTE_CLASSES, DEFAULT_CACHE_RATIO, PRECISION_BYTES,  # noqa: F401
                                     PRECISION_RATE, PRECISIONS, PRIORS_ONLY_EVIDENCE, PRIORS_ONLY_TEXT,
                                     LayerArrays, expected_error_text,
                                     runtime_layers)
from mobiledeploy.errors import MobiledeployError, UsageError
from mobiledeploy.models import inspect
from mobiledeploy.models.archs import MIN_RESOLUTION
from mobiledeploy.options import AtLeast, Finite, OneOf, check_fields, estimate_method, option


# Priors, used when a target's [cost_model] does not say (and as the fit's starting
# point). Fractions of peak that XNNPACK-class kernels reach on a big core; guesses,
# replaced by fitted values in the shipped targets.
DEFAULT_EFFICIENCY = {
    "fp32": {"conv1x1": 0.7, "convkxk": 0.35, "depthwise": 0.25, "fc": 0.3},
    "int8": {"conv1x1": 0.5, "convkxk": 0.25, "depthwise": 0.15, "fc": 0.2},
}
DEFAULT_OVERHEAD_US = 5.0
DEFAULT_THREAD_EFFICIENCY = 0.8
DEFAULT_BANDWIDTH_FRACTION = 0.5  # of the device's peak DRAM bandwidth, for one core's traffic
DEFAULT_BANDWIDTH_GBS = 10.0  # when the device gives none (an assumption)


@dataclass(frozen=True)
class CostModel:
    """The parameters of one target's cost model (the ``[cost_model]`` table, resolved)."""

    target: str
    peak_gmacs: dict  # precision -> GMAC/s of one core at the target's clock
    efficiency: dict  # precision -> {op class: fraction of peak}
    bandwidth_gbs: float
    overhead_us: float
    thread_efficiency: float = DEFAULT_THREAD_EFFICIENCY
    scale: float = 1.0
    threads: int = 1  # the device threads the estimate is for (the target's [run].threads)
    fitted: bool = False  # False: priors only, nothing calibrated
    notes: tuple[str, ...] = ()
    cache_kb: float = 0.0  # cache one layer's working set can live in ([device] l2_kb + l3_kb); 0 = none
    cache_ratio: float = 2.0  # cost of a byte beyond the cache / a cached byte (an assumption)
    combine: str = "sum"  # compute and memory per layer: "sum" or "max"
    fitted_from: str = ""  # what the parameters were fitted on ("" = priors)
    expected_error: str = ""  # e.g. "expected error ~5% (leave-one-out median)"

    def speedup(self, threads: int | None = None) -> float:
        n = max(1, int(threads or self.threads))
        return 1.0 + (n - 1) * self.thread_efficiency

    def to_table(self) -> dict:
        """The ``[cost_model]`` TOML table for these parameters."""
        return {"peak_gmacs_fp32": self.peak_gmacs["fp32"], "peak_gmacs_int8": self.peak_gmacs["int8"],
                "bandwidth_gbs": self.bandwidth_gbs, "overhead_us": self.overhead_us,
                "thread_efficiency": self.thread_efficiency, "scale": self.scale,
                "cache_kb": self.cache_kb, "cache_ratio": self.cache_ratio, "combine": self.combine,
                "efficiency_fp32": dict(self.efficiency["fp32"]),
                "efficiency_int8": dict(self.efficiency["int8"])}

    def to_json(self) -> dict:
        return {"target": self.target, "threads": self.threads, "fitted": self.fitted, **self.to_table(),
                "notes": list(self.notes)}


def _num(table: dict, key: str, default, where: str) -> float:
    v = table.get(key, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise UsageError(f"{where}: [cost_model].{key} must be a positive number, got {v!r}")
    return float(v)


def cost_model_for(target, *, threads: int | None = None) -> CostModel:
    """Resolve a ``mobiledeploy.targets.Target`` into cost-model parameters."""
    cm, dev = dict(target.cost_model or {}), dict(target.device or {})
    where = f"target {target.name!r}"
    notes = []
    clock = dev.get("clock_ghz")
    peaks = {}
    for prec, key in (("fp32", "fp32_flops_per_cycle"), ("int8", "int8_ops_per_cycle")):
        given = _num(cm, f"peak_gmacs_{prec}", None, where)
        if given is None and clock and dev.get(key):
            given = float(clock) * float(dev[key]) / 2.0
        peaks[prec] = given
    if peaks["fp32"] is None:
        raise UsageError(f"{where} has neither [device] clock_ghz/fp32_flops_per_cycle nor "
                         f"[cost_model].peak_gmacs_fp32; calibrate it with `mobiledeploy target calibrate`")
    if peaks["int8"] is None:
        peaks["int8"] = 2.0 * peaks["fp32"]
        notes.append("no int8 rate for this device: assumed 2x the fp32 MAC rate")
    bw = _num(cm, "bandwidth_gbs", None, where)
    if bw is None:
        dev_bw = dev.get("mem_bandwidth_gbs")
        bw = DEFAULT_BANDWIDTH_FRACTION * float(dev_bw) if dev_bw else DEFAULT_BANDWIDTH_GBS
    eff = {}
    for prec in PRECISIONS:
        table = cm.get(f"efficiency_{prec}", {})
        if not isinstance(table, dict):
            raise UsageError(f"{where}: [cost_model].efficiency_{prec} must be a table")
        eff[prec] = {c: _num(table, c, DEFAULT_EFFICIENCY[prec][c], where) for c in COMPUTE_CLASSES}
    run_threads = threads or target.threads or 1
    fitted = bool(cm.get("fitted_on"))
    if not fitted:
        notes.append(f"target {target.name!r} has no calibrated [cost_model]: priors only; {PRIORS_ONLY_EVIDENCE}")
    combine = cm.get("combine", "sum")
    if combine not in COMBINES:
        raise UsageError(f"{where}: [cost_model].combine must be one of {', '.join(COMBINES)}, got {combine!r}")
    cache_kb = cm.get("cache_kb")
    if cache_kb is None:
        cache_kb = sum(float(dev.get(k) or 0) for k in ("l2_kb", "l3_kb"))
    elif isinstance(cache_kb, bool) or not isinstance(cache_kb, (int, float)) or cache_kb < 0:
        raise UsageError(f"{where}: [cost_model].cache_kb must be a number >= 0, got {cache_kb!r}")
    return CostModel(target=target.name, peak_gmacs=peaks, efficiency=eff, bandwidth_gbs=bw,
                     overhead_us=_num(cm, "overhead_us", DEFAULT_OVERHEAD_US, where),
                     thread_efficiency=min(1.0, _num(cm, "thread_efficiency", DEFAULT_THREAD_EFFICIENCY, where)),
                     scale=_num(cm, "scale", 1.0, where), threads=int(run_threads), fitted=fitted,
                     notes=tuple(notes), cache_kb=float(cache_kb),
                     cache_ratio=_num(cm, "cache_ratio", DEFAULT_CACHE_RATIO, where), combine=combine,
                     fitted_from=str(cm.get("fitted_from", "")) if fitted else "",
                     expected_error=expected_error_text(cm if fitted else {}))


@dataclass(frozen=True)
class LayerEstimate:
    name: str
    op_class: str
    macs: int
    bytes_moved: int
    bound: str  # compute | memory | overhead
    compute_us: float
    memory_us: float
    estimate_us: float

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Estimate:
    model: str
    target: str
    precision: str
    threads: int
    latency_ms: float
    macs: int
    layers: tuple[LayerEstimate, ...] = ()
    by_class_ms: dict = field(default_factory=dict)
    fitted: bool = False
    notes: tuple[str, ...] = ()
    label: str = "estimate for the device (cost model), not a measurement"
    fitted_from: str = ""
    expected_error: str = ""

    def to_json(self) -> dict:
        return {"model": self.model, "target": self.target, "precision": self.precision,
                "threads": self.threads, "latency_ms": self.latency_ms, "macs": self.macs,
                "label": self.label, "fitted": self.fitted, "fitted_from": self.fitted_from,
                "expected_error": self.expected_error, "by_class_ms": self.by_class_ms,
                "notes": list(self.notes), "layers": [x.to_json() for x in self.layers]}


def estimate_layers(layers, model: CostModel, *, precision: str = "fp32", threads: int | None = None,
                    name: str = "", warn_other: bool = True) -> Estimate:
    """Apply the cost model to a list of ``LayerStats``."""
    if precision not in PRECISION_BYTES:
        raise UsageError(f"unknown precision {precision!r} (--precision); choose from {', '.join(PRECISION_BYTES)}")
    arr = LayerArrays(layers, precision, threads or model.threads)
    terms = arr.terms(model)
    seconds = arr.layer_seconds(model)
    out, by_class, other = [], {c: 0.0 for c in OP_CLASSES}, []
    for i, layer in enumerate(arr.layers):
        if layer.op_class == "other":
            other.append(layer.type)
        comp, mem, ovh = (float(terms[k][i]) for k in ("compute", "memory", "overhead"))
        t = float(seconds[i])
        bound = max((("compute", comp), ("memory", mem), ("overhead", ovh)), key=lambda kv: kv[1])[0]
        by_class[layer.op_class] += t * 1e3
        out.append(LayerEstimate(name=layer.name, op_class=layer.op_class, macs=layer.macs,
                                 bytes_moved=int(arr.bytes[i]), bound=bound, compute_us=comp * 1e6,
                                 memory_us=mem * 1e6, estimate_us=t * 1e6))
    notes = list(model.notes)
    if other:
        msg = f"ops not classified by the cost model (counted as memory + overhead): {', '.join(sorted(set(other)))}"
        notes.append(msg)
        if warn_other:
            warnings.warn(msg, UserWarning, stacklevel=2)
    total = sum(x.estimate_us for x in out) / 1e3
    return Estimate(model=name, target=model.target, precision=precision, threads=int(threads or model.threads),
                    latency_ms=total, macs=sum(x.macs for x in out), layers=tuple(out),
                    by_class_ms={k: v for k, v in by_class.items() if v}, fitted=model.fitted,
                    notes=tuple(notes), label=estimate_label(model), fitted_from=model.fitted_from,
                    expected_error=model.expected_error or PRIORS_ONLY_TEXT)


def estimate_label(model: CostModel) -> str:
    """"device estimate for T (fitted on ...; expected error ...), not a measurement"."""
    how = (f"cost model fitted on {model.fitted_from}" if model.fitted and model.fitted_from
           else "cost model, priors only")
    err = model.expected_error or PRIORS_ONLY_TEXT
    return f"device estimate for {model.target} ({how}; {err}), not a measurement"


# ---------------------------------------------------------------- the library entry point


@dataclass(frozen=True)
class EstimateConfig:
    """What ``estimate`` does; fields declared with ``option`` are also its options (``mobiledeploy.options``)."""

    model: str | None = None  # a .keras/.tflite/.onnx path; or a config below
    arch: str = option("mobilenet_v1", check=OneOf(COVERED, "architecture"),
                       help="Architecture to build (instead of a MODEL file).")
    alpha: float = option(1.0, check=Finite(0, low_open=True), help="Width multiplier.")
    resolution: int = option(224, flag="--res", check=AtLeast(MIN_RESOLUTION), help="Input resolution.")
    classes: int = option(1000, check=AtLeast(1), help=None)
    precision: str | None = option(  # default: the file's precision (fp32 for configs)
        None, check=OneOf(("fp32", "int8"), "precision"),
        help="Precision to estimate a Keras model/config at (files: their own precision).")
    target: str | None = None
    target_file: str | None = None
    threads: int | None = option(None, check=AtLeast(1),  # default: the target's [run].threads
                                 help="Device threads (default: the target's [run].threads).")
    shapes: dict | None = None  # --shape: concrete dims for dynamic inputs of a file
    method: str = estimate_method()  # "kernels" is mobiledeploy.kernels.estimate's (the CLI picks); this is "cost"


def estimate(config: EstimateConfig, target) -> Estimate:
    """Estimate ``config``'s model on ``target``, the profile ``config.target`` names, loaded by the
    caller (``targets.load_target``: targets sit above cost) (see the module docstring)."""
    check_fields(config)

    model = cost_model_for(target, threads=config.threads)
    if config.model is not None:
        stats = info.model_stats(config.model, shapes=config.shapes)
        precision = config.precision or stats.precision
        if config.precision and stats.format != "keras" and config.precision != stats.precision:
            raise UsageError(f"{config.model} is a {stats.precision} model; --precision {config.precision} "
                             f"applies to Keras models and configs only")
        name = str(config.model)
    else:
        stats = info.config_stats(config.arch, alpha=config.alpha, resolution=config.resolution,
                                  classes=config.classes)
        precision = config.precision or "fp32"
        name = f"{config.arch} {config.alpha:g} {config.resolution}"
    return estimate_layers(stats.layers, model, precision=precision, threads=config.threads, name=name)


def estimates_for(paths, target, *, threads: int | None = None, shapes: dict | None = None) -> dict[str, dict]:
    """``{path: {"estimate_ms", "precision", "threads", "fitted"}}`` on ``target``'s device,
    for the device-estimate column of ``bench``. A model that cannot be estimated gets
    ``{"estimate_error": message}``; nothing raises per model. ``shapes`` are bench's
    ``--shape``, so the estimate is for the shape that was measured."""
    out: dict[str, dict] = {}
    try:
        model = cost_model_for(target, threads=threads)
    except MobiledeployError as e:
        return {str(p): {"estimate_error": str(e)} for p in paths}
    for p in paths:
        try:
            stats = info.model_stats(p, shapes={k: v for k, v in (shapes or {}).items()
                                                if k in {i.name for i in _file_inputs(p)}})
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                e = estimate_layers(stats.layers, model, precision=stats.precision, threads=threads,
                                    name=str(p), warn_other=False)
            out[str(p)] = {"estimate_ms": e.latency_ms, "precision": e.precision, "threads": e.threads,
                           "fitted": e.fitted, "label": e.label, "fitted_from": e.fitted_from,
                           "expected_error": e.expected_error, "notes": list(e.notes)}
        except MobiledeployError as err:
            out[str(p)] = {"estimate_error": str(err)}
    return out


def _file_inputs(p) -> list:
    """Inputs of a .tflite/.onnx file (none for Keras): bench's --shape names only those of one model."""
    return [] if inspect.detect_format(p) == "keras" else inspect.inputs(p)

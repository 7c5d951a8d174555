"""An accuracy budget for full int8: the fewest float layers that meet ``--min-agreement`` at the
lowest device estimate on ``--target`` (``export --quant int8 --min-agreement A --target T``).

1. **Sensitivity** of each convolution/dense layer, measured in Keras (no conversion): the logit
   SQNR against the float model on the export's validation samples when that layer's weights
   alone are rounded to int8 exactly as the converters round them (``equalize.quantize_weights``:
   max-abs of the batch-norm-folded kernel, per channel or per tensor as the recipe says), with
   that layer's bias correction when the recipe corrects biases. The noise it adds is
   ``10^(-SQNR/10)`` of the logits' power. Activation rounding is not simulated here; the search
   below measures the real artifacts, so it only orders the candidates.
2. **Price** of keeping a layer in float on the target: its cost-model estimate at fp32 minus
   at int8 (``cost.estimate.estimate_layers`` on the Keras model's layers), plus a dequantize
   before and a quantize after each run of consecutive float layers (priced as element-wise
   layers on the tensors they convert). With ``--estimate-method kernels`` each *candidate* is
   priced instead from its own converted files (``kernel_pricer``: ``kernels.estimate.estimate_kernels``
   per format, the slowest counting); the cost model still orders the layers and guides pruning.
3. **Greedy search**: full int8 first; then the k layers of most noise per estimated
   millisecond in float, k = 1, 2, 4, 8, ..., and once a k meets the budget, bisection down to
   the smallest k that does; each candidate converted for every requested format and
   validated like any artifact (top-1 agreement with the float model on the validation
   samples; a candidate's agreement is its worst format's). Then each earlier float layer is
   dropped again when that lowers the estimate and the budget still holds without it (the
   greedy order is a guess; measurements decide). Of the candidates that met it, the one of lowest
   estimate is the export's recipe. At most ``MAX_CANDIDATES`` are converted. None meets it:
   ``ValidationError`` (one line; the export is atomic, nothing is written).

Every candidate (float layers, agreement per format, estimate) goes into the manifest's
``quantization.budget_search``; ``summary`` says what the budget cost against full int8.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from mobiledeploy.cost.estimate import cost_model_for, estimate_label, estimate_layers
from mobiledeploy.cost.info import keras_stats
from mobiledeploy.cost.ir import LayerStats
from mobiledeploy.errors import ConversionError, MobiledeployError, ValidationError, one_line
from mobiledeploy.export import equalize as E
from mobiledeploy.export.float_layers import weighted_layers
from mobiledeploy.export.formats import FORMATS
from mobiledeploy.export.logits import keras_logits_model, keras_outputs
from mobiledeploy.export.validate import validate_artifact
from mobiledeploy.metrics import sqnr_db
from mobiledeploy.quiet import quiet_converter
from mobiledeploy.targets import load_target

MAX_CANDIDATES = 12  # conversions are the slow part: at most this many float-layer sets are tried
SUMMARY_NAMES = 6  # the summary names up to this many float layers, else counts them
BUDGET_DIR = ".budget"  # inside the staging directory: removed with it


@dataclass(frozen=True)
class Sensitivity:
    layer: str
    sqnr_db: float  # logits with this layer's weights alone int8, against float
    float_cost_ms: float  # estimate with this layer alone in float, minus full int8

    @property
    def noise(self) -> float:
        return 0.0 if math.isinf(self.sqnr_db) else 10.0 ** (-self.sqnr_db / 10.0)

    def to_json(self) -> dict:
        return {"layer": self.layer, "sqnr_db": _finite(self.sqnr_db), "float_cost_ms": round(self.float_cost_ms, 4)}


@dataclass(frozen=True)
class Candidate:
    float_layers: tuple[str, ...]
    agreement: dict  # format -> top-1 agreement
    sqnr_db: dict  # format -> logit SQNR
    estimate_ms: float
    meets: bool
    estimate_by_format: dict = field(default_factory=dict)  # format -> ms, when each artifact is estimated

    @property
    def worst(self) -> float:
        return min(self.agreement.values())

    def to_json(self) -> dict:
        d = {"float_layers": list(self.float_layers), "top1_agreement": self.agreement,
             "sqnr_db": {k: _finite(v) for k, v in self.sqnr_db.items()},
             "estimate_ms": round(self.estimate_ms, 4), "meets": self.meets}
        if self.estimate_by_format:
            d["estimate_ms_by_format"] = {k: round(v, 4) for k, v in self.estimate_by_format.items()}
        return d


@dataclass(frozen=True)
class BudgetSearch:
    min_agreement: float
    target: str
    estimate_label: str
    samples: int
    inputs: str
    sensitivity: tuple[Sensitivity, ...]
    candidates: tuple[Candidate, ...] = ()
    chosen: int | None = None  # index into candidates
    method: str = "cost"  # how candidates are priced: cost (the Keras layers) or kernels (each artifact emulated)
    judged_on: str | None = None  # the emulated ARM CPU the candidates ran on (export --emulate); None: this host

    @property
    def full_int8_ms(self) -> float:
        return self.candidates[0].estimate_ms

    @property
    def result(self) -> Candidate:
        return self.candidates[self.chosen]

    def summary(self) -> str:
        c = self.result
        where = f"with {self._names(c.float_layers)} in float" if c.float_layers else "fully int8"
        n = len(self.candidates)
        kind = "device estimate from emulated kernels" if self.method == "kernels" else "device estimate"
        return (f"accuracy budget: meets {self.min_agreement:.1%} ({c.worst:.3f} on {self.samples} validation "
                f"samples{self._where_run()}) {where}: {c.estimate_ms - self.full_int8_ms:+.3g} ms on {self.target} "
                f"vs full int8 ({c.estimate_ms:.3g} ms against {self.full_int8_ms:.3g} ms, {kind}, not a measurement; "
                f"{n} candidate{'s' if n > 1 else ''} tried)")

    def _where_run(self) -> str:
        return f", run on {self.judged_on} (emulated)" if self.judged_on else ""

    def _names(self, layers) -> str:
        """The float layers, named when few (the manifest lists them all)."""
        if len(layers) <= SUMMARY_NAMES:
            return ", ".join(layers)
        return f"{len(layers)} of {len(self.sensitivity)} layers ({', '.join(layers[:3])}, ...)"

    def failure(self) -> str:
        best = max(self.candidates, key=lambda c: c.worst)
        n = len(self.candidates)
        return (f"no int8 artifact meets --min-agreement {self.min_agreement:g}: {n} "
                f"candidate{'s' if n > 1 else ''} tried, best top-1 agreement {best.worst:.1%} with "
                f"{self._names(best.float_layers) or 'no layer'} in float (measured on {self.inputs}"
                f"{self._where_run()}); "
                "lower --min-agreement, give calibration data like the inputs (--calib) or export fp16")

    def to_json(self) -> dict:
        return {"min_agreement": self.min_agreement, "target": self.target, "estimate": self.estimate_label,
                "estimate_method": self.method,
                "measured_on": {"samples": self.samples, "inputs": self.inputs,
                                "runtimes": f"aarch64, emulated {self.judged_on}" if self.judged_on else "this host"},
                "method": "greedy: full int8, then the k layers of most weight-rounding noise (logit SQNR, one "
                          "layer at a time) per estimated ms (cost model) in float, k = 1, 2, 4, ... until the "
                          "agreement is met, bisected to the smallest such k; then each earlier float layer "
                          "dropped again if the agreement still holds without it; the candidate that meets it "
                          "at the lowest estimate is chosen" + (
                              " (each candidate's artifacts estimated from their emulated kernels, the slowest "
                              "format's estimate counting)" if self.method == "kernels" else ""),
                "sensitivity": [s.to_json() for s in self.sensitivity],
                "candidates": [c.to_json() for c in self.candidates],
                "chosen": self.chosen,
                "full_int8_ms": round(self.full_int8_ms, 4) if self.candidates else None,
                "cost_ms": (round(self.result.estimate_ms - self.full_int8_ms, 4)
                            if self.chosen is not None else None),
                "summary": self.summary() if self.chosen is not None else None}


def _finite(v: float):
    return "inf" if isinstance(v, float) and math.isinf(v) else round(float(v), 3)


# ---------------------------------------------------------------- price on the target


class Pricer:
    """Device estimates of the model with a set of layers in float, the rest int8 (cost model)."""

    def __init__(self, model, target, *, threads: int | None = None):
        self._cm = cost_model_for(target, threads=threads)
        self.label = estimate_label(self._cm)
        self.target = target.name
        layers = keras_stats(model).layers
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = {p: estimate_layers(layers, self._cm, precision=p, warn_other=False) for p in ("fp32", "int8")}
        self._order = [x.name for x in est["int8"].layers]  # what the runtime runs (no padding layers)
        self._layer = {lyr.name: lyr for lyr in layers}
        self._ms = {p: {x.name: x.estimate_us / 1e3 for x in e.layers} for p, e in est.items()}
        self._owner = {}  # Keras layer name -> the cost layer it is fused into
        for lyr in layers:
            for n in (lyr.name, *lyr.fused):
                self._owner.setdefault(n, lyr.name)
        self._estimate_layers, self._stats = estimate_layers, LayerStats

    def _convert_ms(self, elems: int) -> float:
        """A quantize or dequantize of ``elems`` activation values (element-wise: memory + overhead)."""
        op = self._stats(name="convert", type="QUANTIZE", op_class="elementwise", output_shape=(elems,), params=0,
                         macs=0, in_elems=elems, out_elems=elems)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self._estimate_layers([op], self._cm, precision="fp32", warn_other=False).latency_ms

    def ms(self, float_layers) -> float:
        floats = {self._owner.get(n, n) for n in float_layers}
        total, prev_float = 0.0, False
        for i, name in enumerate(self._order):
            is_float = name in floats
            total += self._ms["fp32" if is_float else "int8"][name]
            lyr = self._layer[name]
            if is_float and not prev_float:  # entering a float island: dequantize its input
                total += self._convert_ms(lyr.in_elems)
            if is_float and (i + 1 == len(self._order) or self._order[i + 1] not in floats):
                total += self._convert_ms(lyr.out_elems)  # leaving it: quantize its output
            prev_float = is_float
        return total


# ---------------------------------------------------------------- sensitivity


def sensitivities(model, layers: tuple[str, ...], x: np.ndarray, reference: np.ndarray, recipe, calibration,
                  pricer: Pricer) -> list[Sensitivity]:
    """Per layer: the logit SQNR with that layer's weights alone rounded to int8 (see the module doc)."""

    corrected = calibration.quant_source(model, replace(recipe, float_layers=())) if recipe.bias_correction else None
    work = E.clone(calibration.equalized(model, recipe.equalize))  # the weights int8 starts from (--equalize)
    twin = keras_logits_model(work) or work
    targets = {layer.name: bn for layer, bn in E.conv_targets(work)}
    base_ms = pricer.ms(())
    out = []
    for name in layers:
        layer = work.get_layer(name)
        bn = targets.get(name)
        saved = [(lyr, lyr.get_weights()) for lyr in (layer, bn) if lyr is not None]
        if corrected is not None:  # this layer's bias correction only
            for lyr in (layer, bn):
                if lyr is not None:
                    lyr.set_weights(corrected.get_layer(lyr.name).get_weights())
        w = layer.get_weights()
        w[0] = w[0] + E.kernel_delta(layer, bn, per_channel=recipe.per_channel, qmax=E.WEIGHT_QMAX["int8"])
        layer.set_weights(w)
        db = sqnr_db(reference, keras_outputs(twin, x).reshape(reference.shape))
        for lyr, ws in saved:
            lyr.set_weights(ws)
        out.append(Sensitivity(name, db, pricer.ms((name,)) - base_ms))
    return out


def order(sens: list[Sensitivity]) -> list[Sensitivity]:
    """Most noise per estimated millisecond first (a layer that costs nothing in float comes first)."""
    return sorted(sens, key=lambda s: (-s.noise / max(s.float_cost_ms, 1e-6), s.layer))


# ---------------------------------------------------------------- the search


@dataclass
class Search:
    """Runs the greedy search; ``convert_validate(recipe, out_dir) -> {format: (path, Validation)}``.
    ``price_files({format: path}) -> ({format: ms}, label)``, when given, prices each candidate from its
    artifacts (the slowest format's estimate counts); otherwise ``pricer`` prices its float layers."""

    min_agreement: float
    convert_validate: object
    pricer: Pricer
    samples: int
    inputs: str
    price_files: object = None
    judged_on: str | None = None  # export --emulate: the candidates' values came from that ARM CPU
    files: dict = field(default_factory=dict)  # the chosen candidate's files, by format

    def run(self, recipe, sens: list[Sensitivity], work_dir: Path, *, step=None) -> BudgetSearch:
        ranked = [s.layer for s in order(sens)]
        result = BudgetSearch(self.min_agreement, self.pricer.target, self.pricer.label, self.samples, self.inputs,
                              tuple(sens), method="kernels" if self.price_files else "cost", judged_on=self.judged_on)
        self._recipe, self._dir, self._tried, self._label = recipe, Path(work_dir), [], None
        self._step = step or (lambda name: contextlib.nullcontext())
        best, lo, k = None, -1, 0
        while len(self._tried) < MAX_CANDIDATES:  # grow: the k layers of most noise per ms, k = 0, 1, 2, 4, ...
            if self._try(tuple(ranked[:k])):
                best = len(self._tried) - 1
                break
            if k == len(ranked):
                break
            lo, k = k, min(len(ranked), max(1, 2 * k))
        while best is not None and k - lo > 1 and len(self._tried) < MAX_CANDIDATES:  # bisect between misses and k
            mid = (lo + k) // 2
            if self._try(tuple(ranked[:mid])):
                best, k = len(self._tried) - 1, mid
            else:
                lo = mid
        if best is not None:  # prune: drop a float layer the budget turns out not to need (cheapest noise first)
            for layer in reversed(self._tried[best][0].float_layers[:-1]):
                if len(self._tried) >= MAX_CANDIDATES:
                    break
                have = self._tried[best][0].float_layers
                fewer = tuple(n for n in have if n != layer)
                if self.pricer.ms(fewer) < self.pricer.ms(have) and self._try(fewer):  # the cost model guides
                    best = len(self._tried) - 1
        candidates = tuple(c for c, _ in self._tried)
        if self._label:
            result = replace(result, estimate_label=self._label)
        if best is None:
            raise ValidationError(replace(result, candidates=candidates).failure())
        best = min((i for i, c in enumerate(candidates) if c.meets), key=lambda i: candidates[i].estimate_ms)
        self.files = self._tried[best][1]
        return replace(result, candidates=candidates, chosen=best)

    def _try(self, layers: tuple[str, ...]) -> bool:
        i = len(self._tried)
        d = self._dir / f"{BUDGET_DIR}-{i}"
        d.mkdir(parents=True, exist_ok=True)
        for f in (self._dir / f"{BUDGET_DIR}-0").glob("*_fp32.onnx") if i else ():  # the same for every candidate
            os.link(f, d / f.name)
        what = f"{', '.join(layers)} in float" if layers else "full int8"
        with self._step(f"accuracy budget: candidate {i + 1} ({what})"):
            got = self.convert_validate(replace(self._recipe, float_layers=layers), d)
            files = {fmt: p for fmt, (p, _) in got.items()}
            by_format = {}
            if self.price_files:
                by_format, self._label = self.price_files(files)
        agree = {fmt: float(v.top1_agreement) for fmt, (_, v) in got.items()}
        ms = max(by_format.values()) if by_format else self.pricer.ms(layers)
        c = Candidate(layers, agree, {fmt: float(v.sqnr_db) for fmt, (_, v) in got.items()}, ms,
                      min(agree.values()) >= self.min_agreement, by_format)
        self._tried.append((c, files))
        return c.meets


def _shared_correction(calibration):
    """``calibration`` whose bias-corrected sources are derived from one correction of every layer.

    Each layer's correction is measured on the float model's own activations (``equalize.correct_bias``),
    so the correction with some layers kept in float is the full one with those layers' weights (and their
    batch-norms') put back: computed once per weight grid instead of once per candidate and grid."""
    from mobiledeploy.export import equalize as E
    from mobiledeploy.export.recipes import Calibration

    class _Shared(Calibration):
        def __init__(self):
            super().__init__(calibration.x)
            self._derived = {}

        def quant_source(self, model, recipe, weights="int8"):
            full = calibration.quant_source(model, replace(recipe, float_layers=()), weights)
            if full is model or not recipe.float_layers:
                return full
            key = (id(model), weights, recipe.per_channel, recipe.float_layers, recipe.equalize)
            if key not in self._derived:
                out = E.clone(full)
                base = calibration.equalized(model, recipe.equalize)  # an equalized pair stays equalized in float
                bns = {layer.name: bn for layer, bn in E.conv_targets(base)}
                for name in recipe.float_layers:
                    for lyr in (base.get_layer(name), bns.get(name)):
                        if lyr is not None:
                            out.get_layer(lyr.name).set_weights(lyr.get_weights())
                self._derived[key] = (model, out)
            return self._derived[key][1]

    return _Shared()


def kernel_pricer(target):
    """``files -> ({format: ms}, label)``: each artifact's estimate from its emulated kernels on ``target``
    (``kernels.estimate.estimate_kernels``, cached per artifact). A failure is the export's, one line."""
    from mobiledeploy.kernels.estimate import estimate_kernels

    def price(files: dict) -> tuple[dict, str]:
        by_format, label = {}, None
        for fmt, path in files.items():
            try:
                e = estimate_kernels(path, target)
            except MobiledeployError:
                raise
            except Exception as err:  # noqa: BLE001 - a crash under emulation: this export's one line
                raise ConversionError(f"accuracy budget: the kernel-count estimate of {Path(path).name} on "
                                      f"{target.name} failed: {one_line(err, typed=True)}") from err
            by_format[fmt], label = e.latency_ms, e.label
        return by_format, label

    return price


def search_recipe(model, recipe, calibration, cal, reference, config, staging: Path, stem: str, step):
    """Run the budget search for ``config`` (``--min-agreement`` with ``--target``): the recipe with the
    chosen float layers, the ``BudgetSearch`` and the chosen candidate's int8 files by format."""
    fmts = [f for f in config.formats if FORMATS[f].per_precision and "int8" in FORMATS[f].precisions]

    shared = _shared_correction(calibration)

    def convert_validate(rec, out_dir: Path) -> dict:
        got = {}
        for f in fmts:
            path = FORMATS[f].converter()(model, "int8", rec, shared, out_dir, stem)
            with quiet_converter():
                got[f] = (path, validate_artifact(path, fmt=f, precision="int8", x=cal.validation,
                                                  reference=reference, int8_io=config.int8_io,
                                                  inputs=cal.validation_inputs, emulate=config.emulate))
        return got

    target = load_target(config.target)
    pricer = Pricer(model, target)
    layers = tuple(lyr.name for lyr in weighted_layers(model))
    with step("accuracy budget: layer sensitivity"):
        sens = sensitivities(model, layers, cal.validation, reference.values, recipe, calibration, pricer)
    search = Search(config.min_agreement, convert_validate, pricer, int(cal.validation.shape[0]),
                    cal.validation_inputs,
                    price_files=kernel_pricer(target) if config.estimate_method == "kernels" else None,
                    judged_on=config.emulate)
    result = search.run(recipe, sens, staging, step=step)
    return replace(recipe, float_layers=result.result.float_layers), result, search.files

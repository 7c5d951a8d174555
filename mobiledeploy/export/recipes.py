"""Quantization recipe: what post-training quantization uses, decided once, recorded.

``QuantRecipe`` is the one definition of the recipe: every choice that affects quantized
artifacts, split as ONNX Runtime's quantizer splits its configs: what every backend shares
(per-channel or per-tensor weights, bias correction, layers kept in float) and what one
backend takes (``TfliteQuant``: int8 I/O; ``OnnxQuant``: activation/weight types and
calibration method). The calibration samples are not part of it: a ``Calibration`` is
passed beside it, and caches what is computed from the samples per model. The exporter
converts with both and writes ``to_json()`` into the manifest; ``eval --per-layer`` rebuilds
the same recipe from the manifest (``from_manifest``) and re-runs the same converter. The ONNX
types follow ONNX Runtime's own guidance (docs: "Quantize ONNX models", data type
selection): S8S8 in QDQ format is the default and the fastest on CPUs with VNNI and on
ARM; on x86-64 CPUs *without* VNNI, U8S8 with ``reduce_range`` avoids the saturation
of the AVX2 u8*s8 instruction (vpmaddubsw) that S8S8/U8U8 can hit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from mobiledeploy.errors import UsageError
from mobiledeploy.export import float_layers as fl
from mobiledeploy.export.equalize import cle_chains, correct_bias, equalize_model
from mobiledeploy.export.ranges import describe as describe_ranges
from mobiledeploy.machine import arch, cpu_flags
from mobiledeploy.options import EQUALIZE_METHODS, ONNX_CALIBRATION, ROUNDING, TFLITE_CALIBRATION  # noqa: F401 - re-exported

ONNX_QUANT_TYPES = ("s8s8", "u8s8")
ORT_INT8_ENV = "MOBILEDEPLOY_ORT_INT8"  # s8s8|u8s8: stands in for this CPU's choice (to test the other one)
ADAROUND_ITERATIONS, ADAROUND_SAMPLES = 300, 48  # per layer; calibration samples used (export.adaround)
CALIB_BATCH = 10  # MinMax statistics are the same however samples are batched; batches run faster
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "avx10")
X86 = ("x86_64", "amd64", "i386", "i686")


@dataclass(frozen=True)
class OnnxQuantTypes:
    name: str  # "s8s8" | "u8s8"
    reduce_range: bool
    reason: str
    # S8S8 judged on an x86-64 CPU without VNNI, whose arithmetic saturates: what this export's validation
    # means, not part of the recipe (not recorded, not compared)
    host_understates: bool = field(default=False, compare=False)

    @property
    def activation(self) -> str:
        return "int8" if self.name == "s8s8" else "uint8"

    @property
    def weight_grid(self) -> str:
        """The int8 weight grid ONNX Runtime rounds to (``equalize.WEIGHT_QMAX``)."""
        return "int8_reduce_range" if self.reduce_range else "int8"

    def to_json(self) -> dict:
        return {"types": self.name, "activation": self.activation, "weight": "int8",
                "reduce_range": self.reduce_range, "format": "QDQ", "reason": self.reason}


@dataclass(frozen=True)
class TfliteQuant:
    """What only the TFLite converter takes."""

    int8_io: bool = False  # full int8: int8 input and output tensors
    calibration: str = "minmax"  # activation ranges: the converter's min/max, or export.ranges (TFLITE_CALIBRATION)


@dataclass(frozen=True)
class OnnxQuant:
    """What only ONNX Runtime's quantizer takes."""

    types: OnnxQuantTypes | None = None  # None: no ONNX int8 artifact in this export (nothing chosen)
    calibration: str = "minmax"  # ONNX Runtime's activation calibration method (ONNX_CALIBRATION)


@dataclass(frozen=True)
class QuantRecipe:
    """The choices every quantizer shares, and one part per backend (``tflite``, ``onnx``)."""

    per_channel: bool = True  # weights: one scale per output channel (else one per tensor)
    bias_correction: bool = False  # empirical bias correction of int8 weights (export.equalize.correct_bias)
    float_layers: tuple[str, ...] = ()  # conv/dense layers kept in float in full int8 (export.float_layers)
    rounding: str = "nearest"  # int8 weights rounded to nearest, or "adaround" (export.adaround; ROUNDING)
    equalize: str = "none"  # cross-layer equalization before the other steps (EQUALIZE_METHODS; Calibration.equalized)
    tflite: TfliteQuant = TfliteQuant()
    onnx: OnnxQuant = OnnxQuant()

    def to_json(self, calibration_samples: int) -> dict:
        """The manifest's ``quantization`` record."""
        out = {"tflite": {"int8_io": self.tflite.int8_io, "per_channel": self.per_channel,
                          "calibration_samples": int(calibration_samples)},
               "bias_correction": {"enabled": self.bias_correction, "applies_to": "int8",
                                   "method": "empirical, on the calibration samples (Nagel et al., 2019)"},
               "float_layers": {"layers": list(self.float_layers), "applies_to": "int8"}}
        if self.rounding != "nearest":  # absent: round to nearest (manifests before the option read the same)
            out["weight_rounding"] = {"method": self.rounding, "applies_to": "int8", "iterations": ADAROUND_ITERATIONS,
                                      "samples": ADAROUND_SAMPLES, "bias_correction": (
                                          "along the quantized path" if self.bias_correction else "off")}
        if self.tflite.calibration != "minmax":  # absent: min/max (manifests before the option read the same)
            out["tflite"]["calibrate_method"] = self.tflite.calibration
            out["tflite"]["activation_ranges"] = describe_ranges(self.tflite.calibration)
        if self.equalize != "none":  # absent: none; the exporter adds the chains and the float change measured
            out["equalize"] = {"method": self.equalize, "applies_to": "int8", "relu6": (
                "replaced by ReLU in the equalized chains" if self.equalize == "cle-relu" else
                "chains ending in ReLU6 left alone")}
        if self.onnx.types is not None:
            out["onnx"] = {**self.onnx.types.to_json(), "per_channel": self.per_channel,
                           "calibrate_method": self.onnx.calibration}
        return out

    @classmethod
    def from_manifest(cls, quantization: dict | None) -> "QuantRecipe":
        """The recipe an export recorded (defaults for what older manifests did not record)."""
        q = quantization or {}
        tfl, onx = q.get("tflite") or {}, q.get("onnx") or {}
        types = (OnnxQuantTypes(onx["types"], bool(onx.get("reduce_range")), onx.get("reason", ""))
                 if onx.get("types") in ONNX_QUANT_TYPES else None)
        method = onx.get("calibrate_method", "minmax")
        rounding = (q.get("weight_rounding") or {}).get("method", "nearest")
        tfl_cal, equalize = tfl.get("calibrate_method", "minmax"), (q.get("equalize") or {}).get("method", "none")
        return cls(per_channel=bool(tfl.get("per_channel", True)),
                   bias_correction=bool((q.get("bias_correction") or {}).get("enabled", False)),
                   float_layers=tuple(str(n) for n in (q.get("float_layers") or {}).get("layers", ())),
                   rounding=rounding if rounding in ROUNDING else "nearest",
                   equalize=equalize if equalize in EQUALIZE_METHODS else "none",
                   tflite=TfliteQuant(int8_io=bool(tfl.get("int8_io")),
                                      calibration=tfl_cal if tfl_cal in TFLITE_CALIBRATION else "minmax"),
                   onnx=OnnxQuant(types, method if method in ONNX_CALIBRATION else "minmax"))


class Calibration:
    """The calibration samples the quantizers read, passed beside the recipe (never part of it),
    and what is computed from them once per model: the equalized and the bias-corrected weights."""

    def __init__(self, x: np.ndarray):
        self.x = x  # (N, H, W, 3) float32, preprocessed
        self._sources: dict = {}

    @property
    def samples(self) -> int:
        return int(self.x.shape[0])

    def representative(self):
        """TFLite representative_dataset: one sample (batch 1) per step."""
        for i in range(self.x.shape[0]):
            yield [self.x[i:i + 1]]

    def quant_source(self, model, recipe: QuantRecipe, weights: str = "int8"):
        """The Keras model full-int8 weights are quantized from: ``model`` itself, or with the recipe's bias
        correction or learned rounding for the weight grid ``weights`` (computed once per model, grid and recipe),
        after the recipe's cross-layer equalization."""
        model = self.equalized(model, recipe.equalize)
        if not recipe.bias_correction and recipe.rounding == "nearest":
            return model
        key = (id(model), weights, recipe.per_channel, recipe.float_layers, recipe.rounding, recipe.bias_correction)
        if key not in self._sources and recipe.rounding == "adaround":
            from mobiledeploy.export.adaround import adaround

            self._sources[key] = (model, adaround(model, self.x, weights=weights, iterations=ADAROUND_ITERATIONS,
                                                  samples=ADAROUND_SAMPLES, bias_correction=recipe.bias_correction,
                                                  skip=recipe.float_layers))
        if key not in self._sources:
            self._sources[key] = (model, correct_bias(model, self.x, per_channel=recipe.per_channel,
                                                      weights=weights, skip=recipe.float_layers))
        return self._sources[key][1]  # the model is kept beside it so that its id is not reused

    def equalized(self, model, method: str):
        """``model`` after cross-layer equalization ``method`` (EQUALIZE_METHODS; computed once per model): cle scales
        the chains ending in ReLU (``equalize_model(relu6="skip")``), cle-relu replaces ReLU6 by ReLU in every chain
        first (``relu6="relu"``). ``model`` itself when there is nothing to equalize."""
        relu6 = {"cle": "skip", "cle-relu": "relu"}.get(method)
        if relu6 is None or not cle_chains(model, relu6=relu6):
            return model
        key = ("equalize", id(model), method)
        if key not in self._sources:
            self._sources[key] = (model, equalize_model(model, relu6=relu6))
        return self._sources[key][1]


def int8_choices(model, *, trained: bool, bias_correction: bool | None,
                 float_layers: tuple[str, ...] | None) -> tuple[bool, tuple[str, ...], dict[str, str]]:
    """Bias correction and the layers kept in float for ``model`` (None: the defaults, on and the stem
    for trained weights, off and none for random init), with the reasons the manifest records."""
    opaque = not fl.stem(model, 1)  # no conv/dense layer visible to Keras (a wrapped SavedModel)
    bias = not opaque and (trained if bias_correction is None else bias_correction)
    layers = fl.resolve(model, float_layers) if float_layers is not None else fl.stem(model) if trained else ()
    reasons = {
        "bias_correction": (
            "no convolution or dense layer visible to Keras (a SavedModel): nothing to correct" if opaque else
            "set by --bias-correction/--no-bias-correction" if bias_correction is not None else
            "default for trained weights" if trained else "default off for random weights (nothing to preserve)"),
        "float_layers": (
            "set by --float-layers" if float_layers is not None else
            "default for trained weights: the stem (first convolutions) in float" if trained else
            "default for random weights: every layer int8")}
    return bias, layers, reasons


def calibration_reader(input_name: str, x: np.ndarray, *, batch: int = CALIB_BATCH):
    """An ONNX Runtime ``CalibrationDataReader`` feeding ``x`` in batches (the ONNX batch is dynamic)."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter([{input_name: np.ascontiguousarray(x[i:i + batch], np.float32)}
                             for i in range(0, x.shape[0], batch)])

        def get_next(self):
            return next(self._it, None)

    return _Reader()


def choose_onnx_types(override: str | None = None, *, machine: str | None = None,
                      flags: set[str] | None = None, judged_on: str | None = None) -> OnnxQuantTypes:
    """S8S8 by default; U8S8 + reduce_range on x86-64 without VNNI; ``override`` wins.

    When neither ``machine`` nor ``flags`` is given, ``$MOBILEDEPLOY_ORT_INT8`` (s8s8 or
    u8s8), if set, replaces this CPU's choice: the other choice can be exercised on any CPU.
    ``judged_on``: the emulated ARM CPU the artifacts are validated on (``export --emulate``): S8S8
    unless chosen explicitly, and an explicit choice's reason names it instead of this host.
    """
    if override is not None:
        if override not in ONNX_QUANT_TYPES:
            raise UsageError(f"unknown ONNX quantization types {override!r} (--onnx-quant-types); "
                             f"choose from {', '.join(ONNX_QUANT_TYPES)}")
        return _explicit(override, "set by --onnx-quant-types", machine, flags, judged_on)
    if judged_on is not None:  # validated on an emulated ARM CPU: ARM's choice, not this host's
        return OnnxQuantTypes("s8s8", False, f"judged on {judged_on} (emulated aarch64): S8S8 (ONNX Runtime's "
                                             "default on ARM)")
    forced = os.environ.get(ORT_INT8_ENV, "").strip().lower() if machine is None and flags is None else ""
    if forced:
        if forced not in ONNX_QUANT_TYPES:
            raise UsageError(f"unknown ONNX quantization types {forced!r} (${ORT_INT8_ENV}); "
                             f"choose from {', '.join(ONNX_QUANT_TYPES)}")
        return _explicit(forced, f"set by ${ORT_INT8_ENV}")
    machine = (machine or arch()).lower()
    if machine in X86:
        flags = cpu_flags() if flags is None else flags  # read once
    if s8s8_saturates(machine, flags):
        return OnnxQuantTypes("u8s8", True, "x86-64 host without VNNI: U8S8 with reduce_range "
                              "(ONNX Runtime guidance)")
    if machine in X86:
        vnni = sorted(f for f in flags if f in VNNI_FLAGS)
        return OnnxQuantTypes("s8s8", False, f"x86-64 host with {vnni[0]}: S8S8 (ONNX Runtime default)")
    return OnnxQuantTypes("s8s8", False, f"{machine} host: S8S8 (ONNX Runtime default)")


def s8s8_saturates(machine: str | None = None, flags: set[str] | None = None) -> bool:
    """True on an x86-64 CPU without VNNI, where ONNX Runtime's u8 x s8 kernel can saturate with
    S8S8 activations: an S8S8 artifact validated there understates what ARM and VNNI CPUs give."""
    if (machine or arch()).lower() not in X86:
        return False
    return not any(f in VNNI_FLAGS for f in (cpu_flags() if flags is None else flags))


S8S8_HOST_NOTE = ("this x86-64 CPU has no VNNI, where ONNX Runtime's S8S8 arithmetic can saturate, so the "
                  "agreement measured here understates ARM and VNNI CPUs (`--emulate cortex-a76` judges it on "
                  "ARM's runtime)")


def _explicit(name: str, source: str, machine: str | None = None, flags: set[str] | None = None,
              judged_on: str | None = None) -> OnnxQuantTypes:
    """Types chosen explicitly (``source``), with what that means for their validation: on an emulated ARM
    CPU, or on this host, which understates S8S8 where its arithmetic saturates."""
    if judged_on is not None:
        return OnnxQuantTypes(name, name == "u8s8", f"{source}; judged on {judged_on} (emulated aarch64)")
    understated = name == "s8s8" and s8s8_saturates(machine, flags)
    return OnnxQuantTypes(name, name == "u8s8", source + (f"; {S8S8_HOST_NOTE}" if understated else ""),
                          understated)

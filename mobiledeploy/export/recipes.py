"""Quantization recipe: what post-training quantization uses, decided once, recorded.

``QuantRecipe`` is the one definition of the recipe: the calibration samples and every
choice that affects quantized artifacts (per-channel or per-tensor weights, int8 I/O for
TFLite, activation/weight types and calibration method for ONNX Runtime). The exporter
converts with it and writes ``to_json()`` into the manifest; ``eval --per-layer`` rebuilds
the same recipe from the manifest (``from_manifest``) and re-runs the same converter. The ONNX
types follow ONNX Runtime's own guidance (docs: "Quantize ONNX models", data type
selection): S8S8 in QDQ format is the default and the fastest on CPUs with VNNI and on
ARM; on x86-64 CPUs *without* VNNI, U8S8 with ``reduce_range`` avoids the saturation
of the AVX2 u8*s8 instruction (vpmaddubsw) that S8S8/U8U8 can hit.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mobiledeploy.errors import UsageError

ONNX_QUANT_TYPES = ("s8s8", "u8s8")
ORT_INT8_ENV = "MOBILEDEPLOY_ORT_INT8"  # s8s8|u8s8: stands in for this CPU's choice (to test the other one)
ONNX_CALIBRATION = ("minmax", "entropy", "percentile")  # onnxruntime.quantization.CalibrationMethod
CALIB_BATCH = 10  # MinMax statistics are the same however samples are batched; batches run faster
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "avx10")


@dataclass(frozen=True)
class OnnxQuantTypes:
    name: str  # "s8s8" | "u8s8"
    reduce_range: bool
    reason: str

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
class QuantRecipe:
    calib: np.ndarray = field(repr=False)  # (N, H, W, 3) float32, preprocessed
    int8_io: bool = False
    onnx: OnnxQuantTypes | None = None
    per_channel: bool = True  # weights: one scale per output channel (else one per tensor)
    onnx_calibration: str = "minmax"  # ONNX Runtime's activation calibration method
    bias_correction: bool = False  # empirical bias correction of int8 weights (export.equalize.correct_bias)
    float_layers: tuple[str, ...] = ()  # conv/dense layers kept in float in full int8 (export.float_layers)
    _sources: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def quant_source(self, model, weights: str = "int8"):
        """The Keras model full-int8 weights are quantized from: ``model`` itself, or with bias
        correction for the weight grid ``weights`` (computed once per model and grid)."""
        if not self.bias_correction:
            return model
        key = (id(model), weights)
        if key not in self._sources:
            from mobiledeploy.export.equalize import correct_bias

            self._sources[key] = (model, correct_bias(model, self.calib, per_channel=self.per_channel,
                                                      weights=weights, skip=self.float_layers))
        return self._sources[key][1]  # the model is kept beside it so that its id is not reused

    def representative(self):
        """TFLite representative_dataset: one sample (batch 1) per step."""
        for i in range(self.calib.shape[0]):
            yield [self.calib[i:i + 1]]

    def to_json(self) -> dict:
        """The manifest's ``quantization`` record."""
        out = {"tflite": {"int8_io": self.int8_io, "per_channel": self.per_channel,
                          "calibration_samples": int(self.calib.shape[0])},
               "bias_correction": {"enabled": self.bias_correction, "applies_to": "int8",
                                   "method": "empirical, on the calibration samples (Nagel et al., 2019)"},
               "float_layers": {"layers": list(self.float_layers), "applies_to": "int8"}}
        if self.onnx is not None:
            out["onnx"] = {**self.onnx.to_json(), "per_channel": self.per_channel,
                           "calibrate_method": self.onnx_calibration}
        return out

    @classmethod
    def from_manifest(cls, quantization: dict | None, calib: np.ndarray) -> "QuantRecipe":
        """The recipe an export recorded (defaults for what older manifests did not record)."""
        q = quantization or {}
        tfl, onx = q.get("tflite") or {}, q.get("onnx") or {}
        onnx = (OnnxQuantTypes(onx["types"], bool(onx.get("reduce_range")), onx.get("reason", ""))
                if onx.get("types") in ONNX_QUANT_TYPES else None)
        method = onx.get("calibrate_method", "minmax")
        return cls(calib=calib, int8_io=bool(tfl.get("int8_io")), onnx=onnx,
                   per_channel=bool(tfl.get("per_channel", True)),
                   onnx_calibration=method if method in ONNX_CALIBRATION else "minmax",
                   bias_correction=bool((q.get("bias_correction") or {}).get("enabled", False)),
                   float_layers=tuple(str(n) for n in (q.get("float_layers") or {}).get("layers", ())))


def int8_choices(model, *, trained: bool, bias_correction: bool | None,
                 float_layers: tuple[str, ...] | None) -> tuple[bool, tuple[str, ...], dict[str, str]]:
    """Bias correction and the layers kept in float for ``model`` (None: the defaults, on and the stem
    for trained weights, off and none for random init), with the reasons the manifest records."""
    from mobiledeploy.export import float_layers as fl

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


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def choose_onnx_types(override: str | None = None, *, machine: str | None = None,
                      flags: set[str] | None = None) -> OnnxQuantTypes:
    """S8S8 by default; U8S8 + reduce_range on x86-64 without VNNI; ``override`` wins.

    When neither ``machine`` nor ``flags`` is given, ``$MOBILEDEPLOY_ORT_INT8`` (s8s8 or
    u8s8), if set, replaces this CPU's choice: the other choice can be exercised on any CPU.
    """
    if override is not None:
        if override not in ONNX_QUANT_TYPES:
            raise UsageError(f"unknown ONNX quantization types {override!r} (--onnx-quant-types); "
                             f"choose from {', '.join(ONNX_QUANT_TYPES)}")
        return OnnxQuantTypes(override, override == "u8s8", "set by --onnx-quant-types")
    forced = os.environ.get(ORT_INT8_ENV, "").strip().lower() if machine is None and flags is None else ""
    if forced:
        if forced not in ONNX_QUANT_TYPES:
            raise UsageError(f"unknown ONNX quantization types {forced!r} (${ORT_INT8_ENV}); "
                             f"choose from {', '.join(ONNX_QUANT_TYPES)}")
        return OnnxQuantTypes(forced, forced == "u8s8", f"set by ${ORT_INT8_ENV}")
    machine = (machine or platform.machine()).lower()
    if machine in ("x86_64", "amd64", "i386", "i686"):
        flags = cpu_flags() if flags is None else flags
        vnni = sorted(f for f in flags if f in VNNI_FLAGS)
        if not vnni:
            return OnnxQuantTypes("u8s8", True, "x86-64 host without VNNI: U8S8 with reduce_range "
                                  "(ONNX Runtime guidance)")
        return OnnxQuantTypes("s8s8", False, f"x86-64 host with {vnni[0]}: S8S8 (ONNX Runtime default)")
    return OnnxQuantTypes("s8s8", False, f"{machine} host: S8S8 (ONNX Runtime default)")

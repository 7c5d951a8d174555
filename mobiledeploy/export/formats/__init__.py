"""Formats as a registry: one module per format, one ``Format`` row each.

A format module exposes ``convert(model, precision, recipe, calibration, out_dir, stem) -> Path``:
it writes one artifact for one precision into ``out_dir`` (a staging directory) and
returns its path (``recipe``: ``export.recipes.QuantRecipe``; ``calibration``: its
``Calibration``, the samples the quantizers read). It raises ``ConversionError`` when the converter fails.

Adding a format is one module and one row in ``FORMATS``. TensorFlow and tf2onnx are
imported inside the converters only.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Precision:
    """A precision and how its artifacts are validated against the Keras model."""

    name: str
    tolerance_factor: float | None  # x (atol + rtol * max|reference|); None: quantized, reported, never failed


PRECISION_ROWS: dict[str, Precision] = {
    "fp32": Precision("fp32", 1.0),  # an exact float graph
    "fp16": Precision("fp16", 1000.0),  # weights in half precision (about 3 significant digits), float compute
    "dynamic": Precision("dynamic", None),
    "int8": Precision("int8", None),
}
PRECISIONS: tuple[str, ...] = tuple(PRECISION_ROWS)


@dataclass(frozen=True)
class Format:
    name: str
    suffix: str
    module: str  # module with convert(...)
    precisions: tuple[str, ...]  # what it can produce
    runtime: str | None  # mobiledeploy.runtimes name used to validate it (None: the Keras source itself)
    per_precision: bool = True  # False: one file whatever the precisions (the Keras source)
    opset: int | None = None  # the ONNX opset the converter targets (ONNX formats only)

    def converter(self):
        return importlib.import_module(self.module).convert

    def filename(self, stem: str, precision: str) -> str:
        return f"{stem}_{precision}{self.suffix}"


FORMATS: dict[str, Format] = {
    "tflite": Format("tflite", ".tflite", "mobiledeploy.export.formats.tflite", ("fp32", "fp16", "dynamic", "int8"),
                     "litert"),
    "onnx": Format("onnx", ".onnx", "mobiledeploy.export.formats.onnx", ("fp32", "fp16", "dynamic", "int8"),
                   "onnxruntime", opset=17),
    "keras": Format("keras", ".keras", "mobiledeploy.export.formats.keras", ("fp32",), None, per_precision=False),
}
DEFAULT_FORMATS = ("tflite", "onnx")
DEFAULT_PRECISIONS = ("fp32", "int8")

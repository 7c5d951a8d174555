"""Formats as a registry: one module per format, one ``Format`` row each.

A format module exposes ``convert(model, precision, recipe, out_dir, stem) -> Path``:
it writes one artifact for one precision into ``out_dir`` (a staging directory) and
returns its path. It raises ``ConversionError`` when the converter fails.

Adding a format is one module and one row in ``FORMATS``. TensorFlow and tf2onnx are
imported inside the converters only.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "dynamic", "int8")


@dataclass(frozen=True)
class Format:
    name: str
    suffix: str
    module: str  # module with convert(...)
    precisions: tuple[str, ...]  # what it can produce
    runtime: str | None  # mobiledeploy.runtimes name used to validate it (None: the Keras source itself)
    per_precision: bool = True  # False: one file whatever the precisions (the Keras source)

    def converter(self):
        return importlib.import_module(self.module).convert

    def filename(self, stem: str, precision: str) -> str:
        return f"{stem}_{precision}{self.suffix}"


FORMATS: dict[str, Format] = {
    "tflite": Format("tflite", ".tflite", "mobiledeploy.export.formats.tflite", ("fp32", "fp16", "dynamic", "int8"),
                     "litert"),
    "onnx": Format("onnx", ".onnx", "mobiledeploy.export.formats.onnx", ("fp32", "dynamic", "int8"), "onnxruntime"),
    "keras": Format("keras", ".keras", "mobiledeploy.export.formats.keras", ("fp32",), None, per_precision=False),
}
DEFAULT_FORMATS = ("tflite", "onnx")
DEFAULT_PRECISIONS = ("fp32", "int8")

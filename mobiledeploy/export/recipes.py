"""Quantization recipe: what post-training quantization uses, decided once, recorded.

``QuantRecipe`` carries the calibration samples and the choices that affect int8
artifacts (int8 I/O for TFLite, activation/weight types for ONNX Runtime). The ONNX
types follow ONNX Runtime's own guidance (docs: "Quantize ONNX models", data type
selection): S8S8 in QDQ format is the default and the fastest on CPUs with VNNI and on
ARM; on x86-64 CPUs *without* VNNI, U8S8 with ``reduce_range`` avoids the saturation
of the AVX2 u8*s8 instruction (vpmaddubsw) that S8S8/U8U8 can hit.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mobiledeploy.errors import UsageError

ONNX_QUANT_TYPES = ("s8s8", "u8s8")
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "avx10")


@dataclass(frozen=True)
class OnnxQuantTypes:
    name: str  # "s8s8" | "u8s8"
    reduce_range: bool
    reason: str

    @property
    def activation(self) -> str:
        return "int8" if self.name == "s8s8" else "uint8"

    def to_json(self) -> dict:
        return {"types": self.name, "activation": self.activation, "weight": "int8",
                "reduce_range": self.reduce_range, "format": "QDQ", "per_channel": True, "reason": self.reason}


@dataclass(frozen=True)
class QuantRecipe:
    calib: np.ndarray = field(repr=False)  # (N, H, W, 3) float32, preprocessed
    int8_io: bool = False
    onnx: OnnxQuantTypes | None = None

    def representative(self):
        """TFLite representative_dataset: one sample (batch 1) per step."""
        for i in range(self.calib.shape[0]):
            yield [self.calib[i:i + 1]]


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
    """S8S8 by default; U8S8 + reduce_range on x86-64 without VNNI; ``override`` wins."""
    if override is not None:
        if override not in ONNX_QUANT_TYPES:
            raise UsageError(f"unknown ONNX quantization types {override!r} (--onnx-quant-types); "
                             f"choose from {', '.join(ONNX_QUANT_TYPES)}")
        return OnnxQuantTypes(override, override == "u8s8", "set by --onnx-quant-types")
    machine = (machine or platform.machine()).lower()
    if machine in ("x86_64", "amd64", "i386", "i686"):
        flags = cpu_flags() if flags is None else flags
        vnni = sorted(f for f in flags if f in VNNI_FLAGS)
        if not vnni:
            return OnnxQuantTypes("u8s8", True, "x86-64 host without VNNI: U8S8 with reduce_range "
                                  "(ONNX Runtime guidance)")
        return OnnxQuantTypes("s8s8", False, f"x86-64 host with {vnni[0]}: S8S8 (ONNX Runtime default)")
    return OnnxQuantTypes("s8s8", False, f"{machine} host: S8S8 (ONNX Runtime default)")

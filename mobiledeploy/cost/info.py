"""Parameters and multiply-accumulates, total and per layer (``mobiledeploy info``).

``model_stats`` takes a Keras model object, a ``.keras``/``.h5`` file (needs TensorFlow),
a ``.tflite`` or an ``.onnx`` file (no TensorFlow) and returns a frozen ``ModelStats``.
``config_stats`` counts an architecture config (the built-in ones without TensorFlow,
see ``mobiledeploy.cost.arch_layers``). The counting
convention (the MobileNet paper's) is described in ``mobiledeploy.cost.graph``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from mobiledeploy.cost import graph
from mobiledeploy.cost.arch_layers import COVERED, arch_layers
from mobiledeploy.cost.graph import keras_layers
from mobiledeploy.cost.graph_onnx import onnx_layers
from mobiledeploy.cost.ir import LayerStats
from mobiledeploy.errors import UsageError, one_line
from mobiledeploy.models import inspect
from mobiledeploy.quiet import import_keras

__all__ = ["LayerStats", "ModelStats", "keras_stats", "model_stats", "config_stats", "keras_config_stats",
           "build_config_model"]


@dataclass(frozen=True)
class ModelStats:
    arch: str | None
    alpha: float | None
    resolution: int | None
    params: int
    macs: int
    layers: tuple[LayerStats, ...] = field(default_factory=tuple)
    format: str = "keras"  # keras | tflite | onnx
    precision: str = "fp32"  # fp32 | fp16 | dynamic | int8 (from the file; Keras models are fp32)
    source: str = ""  # a path, or "build" for a config
    input_shape: tuple[int, ...] = ()

    def by_class(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for layer in self.layers:
            c = out.setdefault(layer.op_class, {"layers": 0, "params": 0, "macs": 0})
            c["layers"] += 1
            c["params"] += layer.params
            c["macs"] += layer.macs
        return out

    def to_json(self) -> dict:
        return {"arch": self.arch, "alpha": self.alpha, "resolution": self.resolution,
                "params": self.params, "macs": self.macs, "format": self.format,
                "precision": self.precision, "source": self.source,
                "input_shape": list(self.input_shape), "by_class": self.by_class(),
                "layers": [layer.to_json() for layer in self.layers]}


def _totals(layers) -> tuple[int, int]:
    return sum(layer.params for layer in layers), sum(layer.macs for layer in layers)


_NAME_RE = re.compile(r"(mobilenet_v[123](?:_small|_large)?)_(\d+(?:\.\d+)?)_(\d+)")


def _guess_from_name(name: str) -> tuple[str | None, float | None]:
    """arch and alpha from names such as ``mobilenet_v1_0.25_128_int8.tflite``."""
    m = _NAME_RE.search(name.lower())
    if not m:
        return None, None
    return m.group(1), float(m.group(2))


def _keras_arch(model) -> tuple[str | None, float | None]:
    name = (model.name or "").lower()
    arch, alpha = _guess_from_name(name)
    if arch:
        return arch, alpha
    m = re.match(r"mobilenet(v2)?_(\d+\.\d+)_\d+", name)  # keras.applications names
    if m:
        return ("mobilenet_v2" if m.group(1) else "mobilenet_v1"), float(m.group(2))
    if name.startswith("mobilenetv3"):
        return ("mobilenet_v3_small" if "small" in name else "mobilenet_v3_large"), None
    return None, None


def keras_stats(model, *, arch: str | None = None, alpha: float | None = None,
                source: str = "build") -> ModelStats:
    """Per-layer statistics of an in-memory Keras model (no conversion, no data)."""
    layers = tuple(keras_layers(model))
    params, macs = _totals(layers)
    shape = tuple(int(d) if d is not None else 1 for d in model.inputs[0].shape)  # Keras: batch only
    g_arch, g_alpha = _keras_arch(model)
    return ModelStats(arch=arch or g_arch, alpha=alpha if alpha is not None else g_alpha,
                      resolution=int(shape[1]) if len(shape) == 4 else None,
                      params=params, macs=macs, layers=layers, format="keras", precision="fp32",
                      source=source, input_shape=shape)


def _file_stats(path: Path, shapes: dict | None = None) -> ModelStats:
    suffix = path.suffix.lower()
    if suffix in (".keras", ".h5") or path.is_dir():
        if not path.exists():
            raise UsageError(f"model file not found: {str(path)!r}")
        if shapes:
            raise UsageError("--shape applies to .tflite and .onnx files; a Keras model's input shape is fixed")
        return _nonempty(keras_stats(_load_keras(path), source=str(path)))
    fmt = inspect.detect_format(path)
    if fmt == "tflite":
        ins = inspect.inputs(path)
        layers = tuple(graph.tflite_layers(path, shapes))
        in_shape = inspect.concrete_shapes(ins, shapes, path)[ins[0].name] if ins else ()
    else:
        layers, in_shape = onnx_layers(path, shapes)
        layers = tuple(layers)
    precision = inspect.precision(path)
    params, macs = _totals(layers)
    if not layers or not params:
        raise UsageError(f"{path.name} has {'no layers' if not layers else 'no weights (0 parameters)'}: "
                         "not a model whose cost can be counted")
    arch, alpha = _guess_from_name(path.name)
    res = None
    if len(in_shape) == 4:  # NHWC (Keras, TFLite, tf2onnx) or NCHW
        res = in_shape[1] if in_shape[3] in (1, 3, 4) else in_shape[2]
    return ModelStats(arch=arch, alpha=alpha, resolution=res, params=params, macs=macs, layers=layers,
                      format=fmt, precision=precision, source=str(path), input_shape=tuple(in_shape))


def _load_keras(path: Path):
    try:
        from mobiledeploy.models.archs import load_model
    except ImportError:  # archs (H1) not there: the same safe default
        load_model = None
    if load_model is not None:
        return load_model(path)
    keras = import_keras()

    try:
        return keras.saving.load_model(str(path), safe_mode=True, compile=False)
    except Exception as e:
        raise UsageError(f"cannot load Keras model {str(path)!r}: {one_line(e, 200)}") from None


def _nonempty(stats: ModelStats) -> ModelStats:
    if not stats.layers or not stats.params:
        raise UsageError(f"{Path(stats.source).name} has no weights (0 parameters): not a model whose cost "
                         "can be counted")
    return stats


def model_stats(model_or_path, *, shapes: dict | None = None) -> ModelStats:
    """Statistics of a Keras model object or of a ``.keras``/``.h5``/``.tflite``/``.onnx`` file;
    ``shapes`` fixes dynamic input dimensions of a file (``--shape``)."""
    if isinstance(model_or_path, (str, os.PathLike)):
        return _file_stats(Path(model_or_path), shapes)
    if hasattr(model_or_path, "layers") and hasattr(model_or_path, "inputs"):
        return keras_stats(model_or_path)
    raise UsageError(f"expected a Keras model or a model path, got {type(model_or_path).__name__}")


# ---------------------------------------------------------------- configs

_KERAS_APPS = {  # fallback when mobiledeploy.models.archs is not available
    "mobilenet_v1": "MobileNet", "mobilenet_v2": "MobileNetV2",
    "mobilenet_v3_small": "MobileNetV3Small", "mobilenet_v3_large": "MobileNetV3Large",
}


def build_config_model(arch: str = "mobilenet_v1", *, alpha: float = 1.0, resolution: int = 224,
                       classes: int = 1000, depth_multiplier: int = 1):
    """An untrained Keras model for a config (H1's ``archs.build_model`` when present)."""
    try:
        from mobiledeploy.models.archs import build_model
    except ImportError:
        build_model = None
    if build_model is not None:
        return build_model(arch, alpha=alpha, resolution=resolution, classes=classes,
                           depth_multiplier=depth_multiplier)
    if arch not in _KERAS_APPS:
        raise UsageError(f"unknown architecture {arch!r} (--arch); choose from {', '.join(_KERAS_APPS)}")
    keras = import_keras()

    ctor = getattr(keras.applications, _KERAS_APPS[arch])
    kw = dict(input_shape=(resolution, resolution, 3), alpha=alpha, weights=None, classes=classes)
    if arch == "mobilenet_v1":
        kw["depth_multiplier"] = depth_multiplier
    try:
        return ctor(**kw)
    except ValueError as e:
        raise UsageError(f"cannot build {arch} alpha={alpha} resolution={resolution}: {one_line(e, None)}") from None


def config_stats(arch: str = "mobilenet_v1", *, alpha: float = 1.0, resolution: int = 224,
                 classes: int = 1000, depth_multiplier: int = 1) -> ModelStats:
    """Statistics of an architecture config. The built-in architectures are laid out without
    TensorFlow (``cost.arch_layers``: the same layers as the Keras model); others are built."""
    if arch not in COVERED:
        return keras_config_stats(arch, alpha=alpha, resolution=resolution, classes=classes,
                                  depth_multiplier=depth_multiplier)
    layers = tuple(arch_layers(arch, alpha=alpha, resolution=resolution, classes=classes,
                               depth_multiplier=depth_multiplier))
    params, macs = _totals(layers)
    return ModelStats(arch=arch, alpha=alpha, resolution=int(resolution), params=params, macs=macs,
                      layers=layers, format="keras", precision="fp32", source="build",
                      input_shape=(1, int(resolution), int(resolution), 3))


def keras_config_stats(arch: str = "mobilenet_v1", *, alpha: float = 1.0, resolution: int = 224,
                       classes: int = 1000, depth_multiplier: int = 1) -> ModelStats:
    """``config_stats`` from the Keras model itself (imports TensorFlow)."""
    model = build_config_model(arch, alpha=alpha, resolution=resolution, classes=classes,
                               depth_multiplier=depth_multiplier)
    return keras_stats(model, arch=arch, alpha=alpha, source="build")

"""How a model wants its image: the preprocessing registry, presets, explicit mean/std, layout.

``PREPROCESSING`` maps a name to a ``Preprocessing`` (float pixels 0..255 -> model input):
the Keras ones (``mobilenet``, ``raw``, ``unit``), the torchvision and Caffe presets
(``torch``, ``caffe``), and ``get_preprocessing("mean=a,b,c std=d,e,f")`` for an explicit
mean/std (what ``--mean/--std`` and model metadata become; values all <= 1 are taken on
the [0, 1] scale, pixels / 255 first, the torchvision way; larger values on the 0..255
pixel scale).

``layout_of(shape)``: a 4-D input with 1 or 3 channels in position 1 and not in position 3
is NCHW (PyTorch exports, most ONNX files in the wild); otherwise NHWC. ``--layout``
overrides. ``onnx_metadata(path)`` reads the conventions an ONNX file records in its
``metadata_props``: ``preprocessing`` (a preset name), ``mean``/``std`` (three numbers
each) and ``layout``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from mobiledeploy.errors import UsageError

AS_IS = "as-is"  # float data taken as already preprocessed (a float .npz)


@dataclass(frozen=True)
class Preprocessing:
    """Pixels 0..255 (float) -> model input. ``low``/``high`` is the output range."""

    name: str
    description: str
    fn: Callable[[np.ndarray], np.ndarray]
    low: float
    high: float

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return self.fn(pixels.astype(np.float32, copy=False)).astype(np.float32, copy=False)


PREPROCESSING: dict[str, Preprocessing] = {
    "mobilenet": Preprocessing("mobilenet", "x/127.5 - 1, i.e. [-1, 1] (Keras MobileNet V1/V2)",
                               lambda x: x / np.float32(127.5) - np.float32(1.0), -1.0, 1.0),
    "raw": Preprocessing("raw", "pixels 0..255 as float (Keras MobileNet V3 rescales inside the model)",
                         lambda x: x, 0.0, 255.0),
    "unit": Preprocessing("unit", "x/255, i.e. [0, 1]", lambda x: x / np.float32(255.0), 0.0, 1.0),
}


def get_preprocessing(name: str, *, flag: str = "--preprocessing") -> Preprocessing:
    if isinstance(name, str) and name.startswith("mean="):  # explicit --mean/--std
        return Preprocessing(*custom(name, flag))
    try:
        return PREPROCESSING[name]
    except KeyError:
        raise UsageError(f"unknown preprocessing {name!r} ({flag}); choose from "
                         f"{', '.join(PREPROCESSING)}") from None


# ---------------------------------------------------------------- presets and explicit mean/std

TORCH_MEAN, TORCH_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def presets() -> dict[str, tuple]:
    """{name: (name, description, fn, low, high)}: the fields of ``Preprocessing``."""
    tm, ts = np.float32(TORCH_MEAN), np.float32(TORCH_STD)
    cm = np.float32(CAFFE_MEAN_BGR)
    return {
        "torch": ("torch", "(x/255 - ImageNet mean) / std, RGB (torchvision)",
                               lambda x: (x / np.float32(255.0) - tm) / ts,
                               float(((0 - tm) / ts).min()), float(((1 - tm) / ts).max())),
        "caffe": ("caffe", "RGB -> BGR, minus the ImageNet BGR mean (Caffe, Keras ResNet50/VGG)",
                               lambda x: x[..., ::-1] - cm, float(-cm.max()), float(255 - cm.min())),
    }


def spec(mean, std=None) -> str:
    """The canonical name for an explicit mean/std (each a number or a list of 3)."""
    m, s = _three(mean, "--mean"), _three(std if std is not None else 1.0, "--std")
    if any(v <= 0 for v in s):
        raise UsageError(f"--std values must be > 0, received {', '.join(f'{v:g}' for v in s)}")
    return f"mean={','.join(f'{v:g}' for v in m)} std={','.join(f'{v:g}' for v in s)}"


def _three(v, flag: str) -> tuple[float, ...]:
    if isinstance(v, str):
        parts = [p for p in re.split(r"[,\s]+", v.strip()) if p]
    elif isinstance(v, (list, tuple)):
        parts = list(v)
    else:
        parts = [v]
    try:
        vals = tuple(float(p) for p in parts)
    except (TypeError, ValueError):
        raise UsageError(f"{flag} must be one number or three comma-separated numbers, received {v!r}") from None
    if len(vals) == 1:
        vals = vals * 3
    if len(vals) != 3 or not all(np.isfinite(vals)):
        raise UsageError(f"{flag} must be one number or three comma-separated numbers, received {v!r}")
    return vals


def custom(name: str, flag: str = "--preprocessing") -> tuple:
    """The ``Preprocessing`` fields for ``"mean=a,b,c std=d,e,f"``; UsageError when it does not parse."""
    m = re.fullmatch(r"\s*mean=(\S+)(?:\s+std=(\S+))?\s*", name)
    if not m:
        raise UsageError(f"cannot read preprocessing {name!r} ({flag}); expected 'mean=a,b,c std=d,e,f'")
    canonical = spec(m.group(1), m.group(2))
    mean, std = (np.float32(_three(x, flag)) for x in canonical[5:].split(" std="))
    unit = bool(mean.max() <= 1.0 and std.max() <= 1.0)
    scale = np.float32(1 / 255.0 if unit else 1.0)
    top = 255.0 * float(scale)
    return (canonical, f"({'x/255' if unit else 'x'} - mean) / std, RGB",
                         lambda x: (x * scale - mean) / std, float(((0 - mean) / std).min()),
                         float(((top - mean) / std).max()))


# ---------------------------------------------------------------- layout and model metadata

LAYOUTS = ("nhwc", "nchw")


def layout_of(shape, override: str | None = None, *, name: str = "model") -> str:
    if override:
        if override not in LAYOUTS:
            raise UsageError(f"unknown layout {override!r} (--layout); choose from {', '.join(LAYOUTS)}")
        return override
    if len(shape) == 4 and shape[1] in (1, 3) and shape[3] not in (1, 3):
        return "nchw"
    return "nhwc"


def image_dims(shape, layout: str, *, name: str) -> tuple[int, int, int]:
    """(height, width, channels) of a 4-D image input in ``layout``."""
    if len(shape) != 4:
        raise UsageError(f"{name} input shape {tuple(shape)} is not an image batch; eval needs (N, H, W, C) "
                         "or (N, C, H, W)")
    h, w, c = (shape[2], shape[3], shape[1]) if layout == "nchw" else (shape[1], shape[2], shape[3])
    if h is None or w is None:
        raise UsageError(f"{name} input shape {tuple(shape)} has no fixed height/width ({layout.upper()}); "
                         "eval needs a fixed-size image input")
    if c not in (None, 1, 3):
        other = "nchw" if layout == "nhwc" else "nhwc"
        raise UsageError(f"{name} input shape {tuple(shape)} read as {layout.upper()} has {c} channels; "
                         f"pass --layout {other} if that is its layout")
    return int(h), int(w), int(c or 3)


def onnx_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file ({} when there are none or it cannot be read)."""
    try:
        from mobiledeploy.models.inspect import onnx_model

        return {p.key.lower(): p.value for p in onnx_model(Path(path)).metadata_props}
    except Exception:  # noqa: BLE001 - an unreadable file fails later, where it is loaded
        return {}


def metadata_preprocessing(meta: dict[str, str]) -> str | None:
    """A preprocessing name from metadata: ``preprocessing`` or ``mean``/``std``."""
    if meta.get("preprocessing"):
        return meta["preprocessing"].strip()
    if meta.get("mean"):
        return spec(meta["mean"], meta.get("std"))
    return None


PREPROCESSING.update({k: Preprocessing(*v) for k, v in presets().items()})  # torch (torchvision mean/std), caffe (BGR mean)

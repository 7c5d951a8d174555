"""Input conventions beyond the Keras ones: torchvision and Caffe presets, explicit mean/std.

``custom(name)`` parses ``"mean=123.7,116.3,103.5 std=58.4,57.1,57.4"`` (what ``--mean/--std``
and model metadata become). Values all <= 1 are taken on the [0, 1] scale (pixels / 255
first, the torchvision way); larger values on the 0..255 pixel scale.
"""

from __future__ import annotations

import re

import numpy as np

from mobiledeploy.errors import UsageError

TORCH_MEAN, TORCH_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def presets() -> dict[str, tuple]:
    """{name: (name, description, fn, low, high)}: the fields of ``data.Preprocessing``."""
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
    """The ``data.Preprocessing`` fields for ``"mean=a,b,c std=d,e,f"``; UsageError when it does not parse."""
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

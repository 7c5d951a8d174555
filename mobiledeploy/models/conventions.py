"""How a model wants its image: layout (NHWC/NCHW) from the input shape, preprocessing from metadata.

``layout_of(shape)``: a 4-D input with 1 or 3 channels in position 1 and not in position 3
is NCHW (PyTorch exports, most ONNX files in the wild); otherwise NHWC. ``--layout``
overrides. ``onnx_metadata(path)`` reads the conventions an ONNX file records in its
``metadata_props``: ``preprocessing`` (a preset name), ``mean``/``std`` (three numbers
each) and ``layout``.
"""

from __future__ import annotations

from pathlib import Path

from mobiledeploy.errors import UsageError

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
        from mobiledeploy.accuracy.presets import spec

        return spec(meta["mean"], meta.get("std"))
    return None

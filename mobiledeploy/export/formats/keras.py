"""The Keras source model, saved as ``.keras`` next to its exports."""

from __future__ import annotations

from pathlib import Path

from mobiledeploy.errors import ConversionError, one_line


def convert(model, precision: str, recipe, calibration, out_dir: Path, stem: str) -> Path:
    path = Path(out_dir) / f"{stem}_fp32.keras"
    try:
        model.save(str(path))
    except Exception as e:  # Keras raises many types for unserialisable models
        raise ConversionError(f"cannot save the Keras model: {one_line(e)}") from None
    return path

"""Calibration samples for int8 and held-out validation samples, from one ``--calib`` source.

- ``digits``: calibration from the fixed ``train`` split, validation from ``test``.
- ``random``: two different seeds (explicit only; int8 accuracy is then meaningless).
- a folder or ``.npz``: one seeded shuffle; ``validate`` samples are held out (a fifth
  of the data when there is not enough for both) and up to ``samples`` of the rest
  calibrate. Only a single-sample set is validated on its calibration sample, and says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mobiledeploy.accuracy import data

RANDOM_WARNING = ("--calib random: calibrating on uniform noise; int8 accuracy will be meaningless "
                  "(use digits, an image folder or a .npz of real inputs)")


@dataclass(frozen=True)
class CalibrationData:
    calib: np.ndarray  # (N, H, W, 3) float32, preprocessed
    validation: np.ndarray  # (M, H, W, 3)
    source: str
    preprocessing: str
    skipped: int
    validation_inputs: str  # how the validation samples were chosen
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {"source": self.source, "samples": int(self.calib.shape[0]), "preprocessing": self.preprocessing,
                "skipped": self.skipped, "validation_samples": int(self.validation.shape[0]),
                "validation_inputs": self.validation_inputs}


def load_calibration(source: str, *, resolution: int, preprocessing: str, samples: int, validate: int,
                     seed: int = 0) -> CalibrationData:
    """Raises UsageError / DataError (with the ``--calib`` flag named) for bad sources."""
    warnings: list[str] = []
    load = dict(resolution=resolution, preprocessing=preprocessing, flag="--calib")
    if source == "random":
        warnings.append(RANDOM_WARNING)
        cal = data.load_dataset("random", limit=samples, seed=seed, **load)
        val = data.load_dataset("random", limit=validate, seed=seed + 1, **load)
        return CalibrationData(cal.x, val.x, "random", cal.preprocessing, 0,
                               f"{validate} random samples (another seed)", tuple(warnings))
    if source == "digits":
        pre = data.get_preprocessing(preprocessing)
        cal = _digits("train", samples, resolution, pre, seed, warnings)
        val = _digits("test", validate, resolution, pre, seed, [])
        return CalibrationData(cal, val, "digits", pre.name, 0,
                               f"{len(val)} samples of the digits test split (held out)", tuple(warnings))
    ds = data.load_dataset(source, split="all", **load)
    if ds.skipped:
        warnings.append(f"--calib {source}: skipped {ds.skipped} unreadable file(s)")
    order = np.random.default_rng(seed).permutation(len(ds))
    # Hold out up to `validate` samples; when the data is short, a fifth of it.
    held = min(validate, max(len(ds) - samples, len(ds) // 5))
    n = _capped(samples, len(ds) - held, repr(source) + (" after holding out validation samples" if held else ""),
                warnings)
    cal_idx, rest = np.sort(order[:n]), np.sort(order[n:n + held])
    if len(rest):
        val_x, how = ds.x[rest], f"{len(rest)} held-out samples of {source!r}"
    else:
        val_x = ds.x[cal_idx[:validate]]
        how = f"{len(val_x)} calibration samples of {source!r} (no held-out data left)"
        warnings.append(f"--calib {source}: every sample is used for calibration, so validation reuses them")
    return CalibrationData(ds.x[cal_idx], val_x, ds.source, ds.preprocessing, ds.skipped, how, tuple(warnings))


def _digits(split: str, n: int, resolution: int, pre, seed: int, warnings: list[str]) -> np.ndarray:
    """The samples ``data.subset(load_dataset("digits", split=split), n, seed=seed)`` returns,
    preprocessing only those n images (the whole train split at 224x224 is 800 MB of float32)."""
    pixels, _ = data._digits_pixels(resolution)
    idx = data.digits_split_indices()[split]
    n = _capped(n, len(idx), f"the digits {split} split", warnings)
    pick = np.sort(np.random.default_rng(seed).permutation(len(idx))[:n]) if n < len(idx) else np.arange(len(idx))
    return pre(pixels[idx[pick]])


def _capped(want: int, have: int, what: str, warnings: list[str]) -> int:
    if want > have:
        warnings.append(f"--calib-samples {want}: only {have} samples in {what}; calibrating on {have}")
        return have
    return want

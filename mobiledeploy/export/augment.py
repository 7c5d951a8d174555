"""Calibration from a folder of real images: disjoint split, seeded augmentation, statistics.

A folder of photos is split, image by image, into calibration and validation images
(never the same image in both). When there are fewer distinct images than samples asked
for, each side is topped up with seeded random-resized crops (area 25-100 %, aspect 3:4
to 4:3) and horizontal flips of its own images; every image is used once whole first.
The per-channel mean/std of the preprocessed pixels of both sides is recorded, and a
warning is raised when the calibration set is small or its statistics are far from the
validation data's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from mobiledeploy.data.datasets import image_files
from mobiledeploy.errors import DataError, UsageError

if TYPE_CHECKING:
    from mobiledeploy.data.datasets import Dataset
    from mobiledeploy.models.artifacts import ModelRef

MIN_DISTINCT = 100  # fewer distinct calibration images than this: warn
CROP_AREA = (0.25, 1.0)
CROP_ASPECT = (3 / 4, 4 / 3)
AUGMENTATION = (f"random resized crops (area {CROP_AREA[0]:.0%}-{CROP_AREA[1]:.0%}, aspect 3:4-4:3) "
                "and horizontal flips, seeded; each image used whole once first")
MIN_STATS_IMAGES = 5  # fewer held-out images say nothing about the statistics
MEAN_SHIFT = 0.5  # |mean difference| in units of the validation std
STD_RATIO = 2.0


@dataclass(frozen=True)
class Split:
    calib: np.ndarray  # uint8 (N, res, res, 3)
    validation: np.ndarray
    calib_images: int
    validation_images: int
    augmented: bool
    unreadable: tuple[str, ...]


def read_images(folder: Path, flag: str = "--calib"):
    """(PIL RGB images, names of unreadable files) of every image under ``folder``."""
    from PIL import Image, UnidentifiedImageError

    images, bad = [], []
    for p in image_files(folder, recursive=True):
        try:
            with Image.open(p) as img:
                images.append(img.convert("RGB"))
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
            bad.append(p.name)
    if not images:
        what = f" ({len(bad)} unreadable files skipped: {', '.join(bad[:3])})" if bad else ""
        raise DataError(f"calibration data set {str(folder)!r} ({flag}) is empty{what}")
    return images, tuple(bad)


def crops(images: list, n: int, resolution: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples (uint8 N,res,res,3): each image whole once, then random crops/flips."""
    from PIL import Image

    out = np.empty((n, resolution, resolution, 3), np.uint8)
    for i in range(n):
        img = images[i % len(images)]
        w, h = img.size
        box = (0, 0, w, h)
        if i >= len(images):
            area = rng.uniform(*CROP_AREA) * w * h
            aspect = float(np.exp(rng.uniform(np.log(CROP_ASPECT[0]), np.log(CROP_ASPECT[1]))))
            cw = int(round(min(w, max(1.0, np.sqrt(area * aspect)))))
            ch = int(round(min(h, max(1.0, np.sqrt(area / aspect)))))
            left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            box = (left, top, left + cw, top + ch)
        sample = img.resize((resolution, resolution), Image.BILINEAR, box=box)
        if i >= len(images) and rng.random() < 0.5:
            sample = sample.transpose(Image.FLIP_LEFT_RIGHT)
        out[i] = np.asarray(sample, np.uint8)
    return out


def split_folder(folder: Path, *, resolution: int, samples: int, validate: int, seed: int,
                 flag: str = "--calib") -> Split:
    """Disjoint calibration / validation images of ``folder``, topped up by augmentation."""
    images, bad = read_images(folder, flag)
    n = len(images)
    if n < 2:
        raise UsageError(f"calibration folder {str(folder)!r} ({flag}) has {n} readable image; int8 calibration "
                         f"needs at least 2 (one held out to validate), and {MIN_DISTINCT}+ distinct real images "
                         "to be trusted")
    order = np.random.default_rng(seed).permutation(n)
    held = max(1, min(validate, max(n - samples, n // 5)))
    cal_idx, val_idx = order[held:held + samples], order[:held]
    rng = np.random.default_rng(seed + 1)
    cal_imgs, val_imgs = [images[i] for i in sorted(cal_idx)], [images[i] for i in sorted(val_idx)]
    return Split(calib=crops(cal_imgs, samples, resolution, rng), validation=crops(val_imgs, validate, resolution, rng),
                 calib_images=len(cal_imgs), validation_images=len(val_imgs),
                 augmented=len(cal_imgs) < samples or len(val_imgs) < validate, unreadable=bad)


def channel_stats(x: np.ndarray) -> dict:
    """Per-channel mean and std of preprocessed NHWC samples."""
    x = np.asarray(x, np.float64).reshape(-1, x.shape[-1]) if x.size else np.zeros((0, 3))
    return {"mean": [round(float(v), 4) for v in x.mean(axis=0)] if len(x) else None,
            "std": [round(float(v), 4) for v in x.std(axis=0)] if len(x) else None}


def stats_warning(calib: dict, other: dict, what: str) -> str | None:
    """A warning when the calibration statistics are far from ``other``'s (mean shift or spread)."""
    if not calib.get("mean") or not other.get("mean"):
        return None
    cm, cs = np.asarray(calib["mean"]), np.asarray(calib["std"])
    om, os_ = np.asarray(other["mean"]), np.asarray(other["std"])
    scale = np.maximum(os_, 1e-6)
    shift = np.abs(cm - om) / scale
    ratio = np.maximum(cs, 1e-6) / scale
    if shift.max() > MEAN_SHIFT or ratio.max() > STD_RATIO or ratio.min() < 1 / STD_RATIO:
        return (f"calibration pixels differ from {what} (per-channel mean {_fmt(cm)} vs {_fmt(om)}, std {_fmt(cs)} "
                f"vs {_fmt(os_)}): int8 ranges may not fit the data the model will see; calibrate on images like it")
    return None


def calibration_warnings(refs: Sequence[ModelRef], ds: Dataset) -> list[str]:
    """For ``eval``: a warning per export whose calibration pixels (manifest statistics) are far from the eval data's."""
    out, seen = [], set()
    for r in refs:
        stats = ((r.calibration or {}).get("stats") or {}).get("calibration")
        if not stats or r.manifest in seen:
            continue
        seen.add(r.manifest)
        w = stats_warning(stats, channel_stats(ds.x), f"the evaluation data {ds.source!r}")
        if w:
            out.append(f"{Path(r.manifest).parent.name}: {w}")
    return out


def _fmt(v) -> str:
    return "[" + ", ".join(f"{x:.2f}" for x in v) + "]"

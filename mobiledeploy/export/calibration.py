"""Calibration samples for int8 and held-out validation samples, from one ``--calib`` source.

- ``digits``: calibration from the fixed ``train`` split, validation from ``test``.
- ``random``: two different seeds (explicit only; int8 accuracy is then meaningless).
- a folder of images (``export/augment.py``): split image by image into calibration and
  held-out validation images (a fifth when there are not enough for both; never the same
  image on both sides), each side topped up with seeded crops and flips when it has fewer
  images than samples asked for. Fewer than 100 distinct calibration images, or
  statistics far from the validation images, are warned about. One image is an error.
- a ``.npz``: one seeded shuffle; ``validate`` samples are held out and up to ``samples``
  of the rest calibrate. Only a single-sample set is validated on its calibration sample.

``choose_source`` picks the source when ``--calib`` is not given: ``digits`` for random-init
and small models, the ``make assets`` photos for a trained ImageNet model (never digits).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mobiledeploy.data import datasets as data
from mobiledeploy.errors import UsageError
from mobiledeploy.export import augment
from mobiledeploy.models.preprocessing import get_preprocessing

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
    distinct_images: int | None = None  # real images behind the calibration samples
    augmentation: str | None = None  # how samples were added beyond the distinct images
    disjoint: bool = True  # no validation sample comes from a calibration image
    chosen: str | None = None  # why this source, when --calib was not given

    def to_json(self) -> dict:
        return {"source": self.source, "samples": int(self.calib.shape[0]), "preprocessing": self.preprocessing,
                "skipped": self.skipped, "validation_samples": int(self.validation.shape[0]),
                "validation_inputs": self.validation_inputs, "distinct_images": self.distinct_images,
                "augmentation": self.augmentation, "disjoint_from_validation": self.disjoint,
                "chosen": self.chosen,
                "stats": {"calibration": augment.channel_stats(self.calib),
                          "validation": augment.channel_stats(self.validation)}}


def assets_photos() -> Path:
    """The real photos ``make assets`` lays out (``$MOBILEDEPLOY_ASSETS/photos``)."""
    root = os.environ.get("MOBILEDEPLOY_ASSETS") or os.path.join(os.path.expanduser("~"), ".cache", "mobiledeploy",
                                                                 "assets")
    return Path(root) / "photos"


def choose_source(calib: str | None, *, trained: bool, classes: int) -> tuple[str, str | None, list[str]]:
    """(source, why it was chosen, warnings) for ``--calib`` (None when not given).

    Random-init models and small classifiers (the digits toy) calibrate on ``digits``. A
    trained ImageNet-size model (1000/1001 classes) never does: it takes the photos of
    ``make assets`` when they are there, else ``--calib`` is required.
    """
    imagenet = trained and classes in (1000, 1001)
    if calib is not None:
        warns = []
        if imagenet and calib == "digits":
            warns.append("--calib digits: calibrating an ImageNet model on upscaled 8x8 digits; int8 ranges will "
                         "not fit real photos (use a folder of real images)")
        return calib, None, warns
    if not imagenet:
        return "digits", None, []
    photos = assets_photos()
    if photos.is_dir():
        return str(photos), f"trained ImageNet model and no --calib: the real photos in {photos}", []
    raise UsageError("a trained ImageNet model needs real calibration images: pass --calib FOLDER (100+ real "
                     f"photos), or run `make assets` to get the sample photos in {photos}")


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
        pre = get_preprocessing(preprocessing)
        cal = _digits("train", samples, resolution, pre, seed, warnings)
        val = _digits("test", validate, resolution, pre, seed, [])
        return CalibrationData(cal, val, "digits", pre.name, 0,
                               f"{len(val)} samples of the digits test split (held out)", tuple(warnings))
    if Path(source).expanduser().is_dir():
        return _folder(Path(source).expanduser(), resolution, preprocessing, samples, validate, seed)
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
    return CalibrationData(ds.x[cal_idx], val_x, ds.source, ds.preprocessing, ds.skipped, how, tuple(warnings),
                           distinct_images=n, disjoint=bool(len(rest)))


def _folder(folder: Path, resolution: int, preprocessing: str, samples: int, validate: int,
            seed: int) -> CalibrationData:
    """Real images: split image by image (disjoint), augmented up to the sample counts."""
    pre = get_preprocessing(preprocessing)
    sp = augment.split_folder(folder, resolution=resolution, samples=samples, validate=validate, seed=seed)
    warnings = []
    if sp.unreadable:
        more = ", ..." if len(sp.unreadable) > 3 else ""
        warnings.append(f"--calib {folder}: skipped {len(sp.unreadable)} unreadable file(s): "
                        f"{', '.join(sp.unreadable[:3])}{more}")
    if sp.calib_images < augment.MIN_DISTINCT:
        warnings.append(f"--calib {folder}: only {sp.calib_images} distinct calibration images"
                        f"{f' (augmented to {samples} samples)' if sp.calib_images < samples else ''}; "
                        f"int8 ranges from fewer than {augment.MIN_DISTINCT} real images may not cover real "
                        "inputs: add photos like the ones the model will see")
    cal, val = pre(sp.calib), pre(sp.validation)
    shifted = sp.validation_images >= augment.MIN_STATS_IMAGES and augment.stats_warning(
        augment.channel_stats(cal), augment.channel_stats(val), "the held-out validation images")
    if shifted:
        warnings.append(shifted)
    crops = f" (+{len(val) - sp.validation_images} augmented crops of them)" if len(val) > sp.validation_images else ""
    how = (f"{len(val)} samples from {sp.validation_images} held-out images of {str(folder)!r}{crops}, "
           f"disjoint from the {sp.calib_images} calibration images")
    return CalibrationData(cal, val, str(folder), pre.name, len(sp.unreadable), how, tuple(warnings),
                           distinct_images=sp.calib_images,
                           augmentation=augment.AUGMENTATION if sp.augmented else None, disjoint=True)


def _digits(split: str, n: int, resolution: int, pre, seed: int, warnings: list[str]) -> np.ndarray:
    """The samples ``data.subset(load_dataset("digits", split=split), n, seed=seed)`` returns,
    preprocessing only those n images (the whole train split at 224x224 is 800 MB of float32)."""
    pixels, _ = data.digits_pixels(resolution)
    idx = data.digits_split_indices()[split]
    n = _capped(n, len(idx), f"the digits {split} split", warnings)
    pick = np.sort(np.random.default_rng(seed).permutation(len(idx))[:n]) if n < len(idx) else np.arange(len(idx))
    return pre(pixels[idx[pick]])


def _capped(want: int, have: int, what: str, warnings: list[str]) -> int:
    if want > have:
        warnings.append(f"--calib-samples {want}: only {have} samples in {what}; calibrating on {have}")
        return have
    return want

"""Data sets shared by calibration, training and evaluation.

``load_dataset(source, resolution=..., preprocessing=...)`` returns a ``Dataset`` of
float32 NHWC samples, already preprocessed, so every format (Keras, TFLite, ONNX) is fed
the very same arrays. Sources (docs/eval.md): ``"digits"`` (scikit-learn's 1,797 8x8
digits, upscaled with PIL, fixed stratified 80/20 split), ``"random"`` (unlabelled noise
over the preprocessing's output range), an image folder (class sub-folders give the
labels; unreadable files are skipped and counted) and a ``.npz`` (a uint8 ``x`` holds
pixels to resize and preprocess; a float ``x`` is used as-is, already at ``resolution``).
Preprocessings (``models/preprocessing.py``) apply to float pixels 0..255. This module
never imports TensorFlow.
"""

from __future__ import annotations

import functools
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mobiledeploy.data.labels import compile_pattern, pattern_entries
from mobiledeploy.errors import DataError, UsageError, one_line
from mobiledeploy.guards import regular_file
from mobiledeploy.machine import available_memory
from mobiledeploy.models.preprocessing import AS_IS, Preprocessing, get_preprocessing

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
SPLITS = ("train", "test", "all")
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0
RANDOM_DEFAULT_SAMPLES = 32


@dataclass(frozen=True)
class Dataset:
    """Preprocessed samples ``x`` (float32 N,H,W,3) and labels ``y`` (int64 N, or None)."""

    x: np.ndarray
    y: np.ndarray | None
    class_names: tuple[str, ...] | None
    source: str
    preprocessing: str
    skipped: int = 0
    split: str | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def labelled(self) -> bool:
        return self.y is not None

    @property
    def num_classes(self) -> int | None:
        if self.class_names is not None:
            return len(self.class_names)
        if self.y is not None and len(self.y):
            return int(self.y.max()) + 1
        return None

    def to_json(self) -> dict:
        return {"source": self.source, "split": self.split, "preprocessing": self.preprocessing,
                "samples": len(self), "shape": list(self.x.shape[1:]), "labelled": self.labelled,
                "classes": self.num_classes,
                "class_names": list(self.class_names) if self.class_names is not None else None,
                "skipped": self.skipped}


def load_dataset(source: str | os.PathLike, *, resolution: int, preprocessing: str = "mobilenet",
                 split: str = "test", limit: int | None = None, labelled: bool = False, seed: int = 0,
                 labels_file: str | os.PathLike | None = None, flag: str = "--data",
                 label_pattern: str | None = None) -> Dataset:
    """Load ``source`` at ``resolution`` with the named preprocessing.

    ``split`` applies to ``digits`` only. ``limit`` keeps a seeded random subset of that
    many samples (in their original order); it may not exceed the data set. With
    ``labelled=True`` a source without labels is an error. ``flag`` names the option the
    caller took ``source`` from, for error messages (e.g. ``--calib``).
    """
    if not isinstance(resolution, (int, np.integer)) or isinstance(resolution, bool) or resolution < 1:
        raise UsageError(f"resolution must be a positive integer, got {resolution!r} (--res)")
    resolution = int(resolution)
    check_options(source, preprocessing=preprocessing, split=split, limit=limit, seed=seed, flag=flag,
                  label_pattern=label_pattern)
    pre = get_preprocessing(preprocessing)
    name = str(source)
    if name == "digits":
        ds = _load_digits(resolution, pre, split)
    elif name == "random":
        ds = _load_random(resolution, pre, limit or RANDOM_DEFAULT_SAMPLES, seed)
    else:
        p = Path(name).expanduser()
        if p.is_dir() and label_pattern:  # class ids from file names (data/labels.py)

            x, labels, skipped = read_entries(pattern_entries(p, label_pattern, image_files(p, recursive=True)),
                                               resolution)
            ds = Dataset(x=pre(x), y=np.asarray(labels, np.int64), class_names=None, source=str(p),
                         preprocessing=pre.name, skipped=skipped)
        elif p.is_dir():
            ds = _load_folder(p, resolution, pre)
        else:  # a .npz (check_options refused any other file)

            try:  # no FIFO or device (np.load would block or read forever), no empty file
                regular_file(p, what="data file", max_bytes=available_memory())
            except UsageError as e:
                raise DataError(f"{e} ({flag})") from None
            ds = _load_npz(p, resolution, pre)
    if labels_file is not None:
        ds = _with_label_names(ds, Path(labels_file))
    if len(ds) == 0:
        extra = f" ({ds.skipped} unreadable files skipped)" if ds.skipped else ""
        raise DataError(f"data set {ds.source!r} is empty{extra}")
    if labelled and not ds.labelled:
        raise UsageError(f"data set {ds.source!r} has no labels, but accuracy needs them ({flag}): use class "
                         "sub-folders, a .npz with 'y', or 'digits'")
    if limit is not None and name != "random":
        if limit > len(ds):
            where = f"{ds.split} split of " if ds.split else ""
            raise UsageError(f"--limit {limit} is larger than the data set ({len(ds)} samples in the "
                             f"{where}{ds.source!r})")
        ds = subset(ds, limit, seed=seed)
    return ds


def check_options(source: str | os.PathLike, *, preprocessing: str | None = None, split: str = "test",
                  limit: int | None = None, seed: int = 0, flag: str = "--data",
                  label_pattern: str | None = None) -> None:
    """What ``load_dataset`` refuses without reading any data (a caller checks its options first):
    the preprocessing name (None: not chosen yet), split, limit, seed, label pattern and the
    source's kind."""
    if preprocessing is not None:
        get_preprocessing(preprocessing)
    if label_pattern is not None:
        compile_pattern(label_pattern)
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    if limit is not None and (isinstance(limit, bool) or int(limit) < 1):
        raise UsageError(f"--limit must be a positive number of samples, got {limit!r}")
    if seed is not None and (isinstance(seed, bool) or int(seed) < 0):
        raise UsageError(f"--seed must be a non-negative integer, got {seed!r}")
    name = str(source)
    if name in ("digits", "random"):
        return
    p = Path(name).expanduser()
    if not p.exists():
        raise UsageError(f"data source not found: {name!r} ({flag}); expected 'digits', 'random', "
                         "a folder of images or a .npz file")
    if not p.is_dir() and p.suffix.lower() != ".npz":
        raise UsageError(f"unsupported data source {name!r} ({flag}); expected 'digits', 'random', "
                         "a folder of images or a .npz file")


def subset(ds: Dataset, n: int, *, seed: int = 0) -> Dataset:
    """A seeded random subset of ``n`` samples, original order kept (class balance roughly kept)."""
    if n >= len(ds):
        return ds
    idx = np.sort(np.random.default_rng(seed).permutation(len(ds))[:n])
    return Dataset(x=ds.x[idx], y=None if ds.y is None else ds.y[idx], class_names=ds.class_names,
                   source=ds.source, preprocessing=ds.preprocessing, skipped=ds.skipped, split=ds.split)


# ---------------------------------------------------------------- sources


def resize_pixels(pixels: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 images (N,H,W) or (N,H,W,C) -> uint8 (N,res,res,3), PIL bilinear, grey replicated."""
    from PIL import Image

    if pixels.ndim == 4 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    n = pixels.shape[0]
    out = np.empty((n, resolution, resolution, 3), np.uint8)
    for i in range(n):
        img = Image.fromarray(pixels[i])
        if img.size != (resolution, resolution):
            img = img.resize((resolution, resolution), Image.BILINEAR)
        out[i] = np.asarray(img.convert("RGB"))
    return out


@functools.lru_cache(maxsize=4)
def digits_pixels(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images N,res,res,3, labels) of all 1,797 scikit-learn digits, resized."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - the [data] extra is installed in the venv
        raise UsageError("the 'digits' data set needs scikit-learn: pip install 'mobiledeploy[data]'") from None
    d = load_digits()
    pixels = np.clip(np.round(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    return resize_pixels(pixels, resolution), d.target.astype(np.int64)


@functools.lru_cache(maxsize=1)
def digits_split_indices() -> dict[str, np.ndarray]:
    """The fixed stratified split of the 1,797 digits: {'train': idx, 'test': idx, 'all': idx}."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    y = load_digits().target
    train, test = train_test_split(np.arange(len(y)), test_size=DIGITS_TEST_FRACTION,
                                   random_state=DIGITS_SPLIT_SEED, stratify=y)
    return {"train": train, "test": test, "all": np.arange(len(y))}


def _load_digits(resolution: int, pre: Preprocessing, split: str) -> Dataset:
    pixels, y = digits_pixels(resolution)
    idx = digits_split_indices()[split]
    return Dataset(x=pre(pixels[idx]), y=y[idx].copy(), class_names=tuple(str(i) for i in range(10)),
                   source="digits", preprocessing=pre.name, split=split)


def _load_random(resolution: int, pre: Preprocessing, n: int, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.uniform(pre.low, pre.high, size=(n, resolution, resolution, 3)).astype(np.float32)
    return Dataset(x=x, y=None, class_names=None, source="random", preprocessing=pre.name)


def image_files(folder: Path, *, recursive: bool = False) -> list[Path]:
    """The image files (by suffix; hidden files skipped) in ``folder``, sorted. ``recursive``
    takes sub-folders too (``--calib`` folders, ``--label-pattern``); without it, only the
    folder's own files: in a labelled data set the top level's sub-folders are its classes,
    and each class folder is read one level deep."""
    files = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in files if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)


def _read_image(path: Path, resolution: int) -> np.ndarray | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if img.size != (resolution, resolution):
                img = img.resize((resolution, resolution), Image.BILINEAR)
            return np.asarray(img, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None


def read_entries(entries, resolution: int) -> tuple[np.ndarray, list, int]:
    """(uint8 images N,res,res,3, their labels, unreadable count) of ``(path, label)`` pairs."""
    images, labels, skipped = [], [], 0
    for path, label in entries:
        img = _read_image(path, resolution)
        if img is None:
            skipped += 1
            continue
        images.append(img)
        labels.append(label)
    x = np.stack(images) if images else np.zeros((0, resolution, resolution, 3), np.uint8)
    return x, labels, skipped


def _load_folder(folder: Path, resolution: int, pre: Preprocessing) -> Dataset:
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    entries: list[tuple[Path, int | None]]
    if classes:
        entries = [(f, k) for k, c in enumerate(classes) for f in image_files(folder / c)]
    else:
        entries = [(f, None) for f in image_files(folder)]
    x, labels, skipped = read_entries(entries, resolution)
    y = np.asarray(labels, np.int64) if classes else None
    return Dataset(x=pre(x), y=y, class_names=tuple(classes) if classes else None, source=str(folder),
                   preprocessing=pre.name, skipped=skipped)


def _load_npz(path: Path, resolution: int, pre: Preprocessing) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except EOFError:  # numpy's answer to a zero-byte file (Click would read it as Ctrl-D)
        raise DataError(f"cannot read {str(path)!r} as a .npz file: the file is empty") from None
    except (OSError, ValueError, zipfile.BadZipFile, KeyError) as e:
        raise DataError(f"cannot read {str(path)!r} as a .npz file: {one_line(e, 200)}") from None
    if "x" not in arrays:
        raise DataError(f"{str(path)!r} has no array 'x' (found: {', '.join(arrays) or 'nothing'})")
    x = arrays["x"]
    if x.dtype == np.uint8:
        if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] not in (1, 3)):
            raise DataError(f"'x' in {str(path)!r} has shape {x.shape}; expected N,H,W,3 or N,H,W (uint8 pixels)")
        x, how = pre(resize_pixels(x, resolution)), pre.name
    elif np.issubdtype(x.dtype, np.floating):
        if x.ndim != 4 or tuple(x.shape[1:]) != (resolution, resolution, 3):
            raise DataError(f"float 'x' in {str(path)!r} has shape {x.shape}; float data is taken as already "
                            f"preprocessed and must be N,{resolution},{resolution},3 (or store uint8 pixels)")
        x, how = x.astype(np.float32), AS_IS
        if not np.isfinite(x).all():
            bad = int(np.count_nonzero(~np.isfinite(x)))
            raise DataError(f"float 'x' in {str(path)!r} holds {bad:,} NaN or infinite values; "
                            "data must be finite")
    else:
        raise DataError(f"'x' in {str(path)!r} has dtype {x.dtype}; expected uint8 pixels or float32")
    y = arrays.get("y")
    if y is not None:
        y = np.asarray(y).reshape(-1)
        if not np.issubdtype(y.dtype, np.integer) or len(y) != len(x) or (len(y) and y.min() < 0):
            raise DataError(f"'y' in {str(path)!r} must hold {len(x)} non-negative integer labels "
                            f"(got {y.dtype} of length {len(y)})")
        y = y.astype(np.int64)
    names = arrays.get("class_names")
    return Dataset(x=x, y=y, class_names=tuple(str(n) for n in names) if names is not None else None,
                   source=str(path), preprocessing=how)


def read_labels_file(path: Path) -> tuple[str, ...]:
    """One class name per line (blank lines ignored)."""
    regular_file(path, what="labels file (--labels)")
    try:
        names = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    except OSError as e:
        raise UsageError(f"cannot read labels file {str(path)!r} (--labels): {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise UsageError(f"labels file {str(path)!r} (--labels) is not UTF-8 text") from None
    if not names:
        raise UsageError(f"labels file {str(path)!r} (--labels) has no class names")
    if len(set(names)) != len(names):
        raise UsageError(f"labels file {str(path)!r} (--labels) repeats a class name")
    return names


def _with_label_names(ds: Dataset, path: Path) -> Dataset:
    """Apply a labels file: it names the classes (and, for folders, fixes their ids)."""
    names = read_labels_file(path)
    y = ds.y
    if ds.class_names is not None and ds.source not in ("digits",) and Path(ds.source).is_dir():
        missing = [c for c in ds.class_names if c not in names]
        if missing:
            raise UsageError(f"class folder {missing[0]!r} is not in the labels file {str(path)!r} (--labels)")
        remap = np.asarray([names.index(c) for c in ds.class_names], np.int64)
        y = remap[ds.y] if ds.y is not None else None
    elif y is not None and len(y) and int(y.max()) >= len(names):
        raise UsageError(f"labels file {str(path)!r} (--labels) names {len(names)} classes, but the data "
                         f"has label {int(y.max())}")
    return Dataset(x=ds.x, y=y, class_names=names, source=ds.source, preprocessing=ds.preprocessing,
                   skipped=ds.skipped, split=ds.split)


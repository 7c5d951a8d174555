"""Train (or fine-tune) a MobileNet on a labelled data set: ``mobiledeploy train``.

The recipe that is known to work for MobileNet on small images: Adam (or Nadam),
categorical cross-entropy, random shifts of up to 10 % of the image, and horizontal
flips only where they make sense (never for digits, where a flipped 2 is not a 2).
Augmentation is numpy with a seeded generator and Keras is seeded too, so a run is
repeatable with ``seed``. The test accuracy is measured on held-out data: the fixed
``digits`` test split, or a seeded stratified hold-out of any other data set.

The model is saved without optimizer state (small file), atomically.
TensorFlow/Keras are imported inside ``train`` only.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mobiledeploy import guards
from mobiledeploy.data.datasets import Dataset, load_dataset
from mobiledeploy.errors import DataError, UsageError
from mobiledeploy.metrics import topk_accuracy
from mobiledeploy.models import archs
from mobiledeploy.options import AtLeast, Finite, OneOf, check_fields, option
from mobiledeploy.progress import OnProgress, emit
from mobiledeploy.quiet import import_keras, import_tensorflow

OPTIMIZERS = ("adam", "nadam")


@dataclass(frozen=True)
class TrainConfig:
    """What ``train`` does. Fields declared with ``option`` are also ``train`` options (``mobiledeploy.options``)."""

    out: str = option(help="Where to save the model (.keras).", path="file", show_default=False)
    data: str = option("digits", metavar="SOURCE",
                       help="'digits', an image folder with class sub-folders, or a .npz with x and y.")
    arch: str = option("mobilenet_v1", help="Architecture (see mobiledeploy.models.archs).")
    alpha: float = option(0.25, help="Width multiplier.")
    resolution: int = option(32, flag="--res", help="Input resolution (pixels).")
    epochs: int = option(60, check=AtLeast(1), help=None)
    batch_size: int = option(32, check=AtLeast(1), help=None)
    learning_rate: float = option(5e-3, flag="--lr", check=Finite(0.0, low_open=True),
                                  help="Peak learning rate (cosine decay to 1% of it).")
    optimizer: str = option("adam", check=OneOf(OPTIMIZERS, "optimizer"), help=None)
    shift: float = option(0.1, check=Finite(0.0, 0.5, high_open=True),
                          help="Random translation, as a fraction of the image side.")
    flip: bool | None = option(None, flag="--flip/--no-flip",  # None: on, except for digits
                               help="Random horizontal flips (default: on, except for digits).")
    val_fraction: float = option(  # hold-out for sources without a fixed test split
        0.2, check=Finite(0.0, 1.0, low_open=True, high_open=True),
        help="Held-out fraction for the test accuracy (digits uses its fixed test split).")
    preprocessing: str | None = option(None, help="Input preprocessing (default: the architecture's).")
    labels_file: str | None = option(None, flag="--labels", path="file", exists=True,
                                     help="Class names, one per line.")
    init: str | None = option(None, path="any", exists=True,  # fine-tune this Keras model instead of building one
                              help="Fine-tune this Keras model instead of a new one.")
    limit: int | None = option(None, type=int, help="Train on a seeded subset of this many samples.")
    dropout: float = 1e-3
    seed: int = option(0, help="Seed for init, shuffling and augmentation.")

    def check(self) -> None:
        check_fields(self)  # the declared checks: ranges and choices
        if not str(self.out).endswith(".keras"):
            raise UsageError(f"--out must be a .keras file, received {str(self.out)!r}")

        guards.finite(self.dropout, "--dropout")
        guards.check_output_file(self.out)  # before training, not after: a read-only --out loses nothing
        if self.init is None:
            archs.check_build_args(self.arch, alpha=self.alpha, resolution=self.resolution, dropout=self.dropout)


@dataclass(frozen=True)
class TrainResult:
    out: str
    arch: str
    alpha: float
    resolution: int
    classes: int
    preprocessing: str
    data: dict
    epochs: int
    train_samples: int
    test_samples: int
    test_split: str
    train_top1: float  # on the un-augmented training data, after training
    test_top1: float
    test_top5: float | None
    loss_history: tuple[float, ...]
    seconds: float
    size_bytes: int
    config: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        d = asdict(self)
        d["loss_history"] = list(self.loss_history)
        return {"schema_version": 1, **d}


def shift_batch(x: np.ndarray, fraction: float, rng: np.random.Generator, *, flip: bool = False) -> np.ndarray:
    """Random translations of up to ``fraction`` of each side (edge pixels fill in), optional h-flip."""
    n, h, w, _ = x.shape
    dy, dx = int(round(h * fraction)), int(round(w * fraction))
    out = np.empty_like(x)
    padded = np.pad(x, ((0, 0), (dy, dy), (dx, dx), (0, 0)), mode="edge") if (dy or dx) else x
    oy = rng.integers(0, 2 * dy + 1, size=n)
    ox = rng.integers(0, 2 * dx + 1, size=n)
    flips = rng.random(n) < 0.5 if flip else np.zeros(n, bool)
    for i in range(n):
        img = padded[i, oy[i]:oy[i] + h, ox[i]:ox[i] + w]
        out[i] = img[:, ::-1] if flips[i] else img
    return out


def _split(cfg: TrainConfig, pre: str) -> tuple[Dataset, Dataset, str]:
    common = dict(resolution=cfg.resolution, preprocessing=pre, labelled=True, seed=cfg.seed,
                  labels_file=cfg.labels_file)
    if cfg.data == "digits":
        train = load_dataset("digits", split="train", limit=cfg.limit, **common)
        return train, load_dataset("digits", split="test", **common), "digits test split"
    ds = load_dataset(cfg.data, limit=cfg.limit, **common)
    from sklearn.model_selection import train_test_split

    counts = np.bincount(ds.y)
    stratify = ds.y if counts[counts > 0].min() >= 2 else None
    n_test = max(1, int(round(len(ds) * cfg.val_fraction)))
    if len(ds) - n_test < 1:
        raise DataError(f"data set {ds.source!r} has {len(ds)} samples: too few to hold out a test set")
    try:
        tr, te = train_test_split(np.arange(len(ds)), test_size=n_test, random_state=cfg.seed, stratify=stratify)
    except ValueError:  # too few samples per class to stratify
        tr, te = train_test_split(np.arange(len(ds)), test_size=n_test, random_state=cfg.seed)

    def take(idx):
        return Dataset(x=ds.x[idx], y=ds.y[idx], class_names=ds.class_names, source=ds.source,
                       preprocessing=ds.preprocessing, skipped=ds.skipped)

    return take(np.sort(tr)), take(np.sort(te)), f"{cfg.val_fraction:.0%} seeded hold-out"


def train(cfg: TrainConfig, *, progress: OnProgress | None = None) -> TrainResult:
    """Train per ``cfg``, save the model to ``cfg.out``; a ``Progress`` per epoch (its loss and accuracy)."""
    cfg.check()
    arch = archs.get_arch(cfg.arch)
    pre = cfg.preprocessing or arch.preprocessing
    out = Path(cfg.out)
    if out.parent and not out.parent.exists():
        raise UsageError(f"output directory {str(out.parent)!r} (--out) does not exist")
    train_ds, test_ds, test_split = _split(cfg, pre)
    classes = train_ds.num_classes
    if classes is None or classes < 2:
        raise DataError(f"data set {train_ds.source!r} has fewer than 2 classes; nothing to train")
    flip = cfg.flip if cfg.flip is not None else cfg.data != "digits"
    t0 = time.perf_counter()
    tf, keras = import_tensorflow(), import_keras()

    tf.config.experimental.enable_op_determinism()  # same seed, same model (CPU)
    if cfg.init:
        model = archs.load_model(cfg.init)
        keras.utils.set_random_seed(cfg.seed)
        got = (tuple(model.inputs[0].shape[1:]), int(model.outputs[0].shape[-1]))
        want = ((cfg.resolution, cfg.resolution, 3), classes)
        if got != want:
            raise UsageError(f"--init model takes {got[0]} and has {got[1]} classes; the data needs "
                             f"{want[0]} and {want[1]} classes (--res / labels)")
    else:
        model = archs.build_model(cfg.arch, alpha=cfg.alpha, resolution=cfg.resolution, classes=classes,
                                  dropout=cfg.dropout, seed=cfg.seed)
    opt_cls = {"adam": keras.optimizers.Adam, "nadam": keras.optimizers.Nadam}[cfg.optimizer]
    steps = cfg.epochs * int(np.ceil(len(train_ds) / cfg.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps=steps, alpha=0.01)
    model.compile(optimizer=opt_cls(learning_rate=schedule), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    y_onehot = np.eye(classes, dtype=np.float32)[train_ds.y]
    rng = np.random.default_rng(cfg.seed)
    losses = []
    for epoch in range(cfg.epochs):
        order = rng.permutation(len(train_ds))
        x_aug = shift_batch(train_ds.x[order], cfg.shift, rng, flip=flip)
        hist = model.fit(x_aug, y_onehot[order], batch_size=cfg.batch_size, epochs=1, shuffle=False, verbose=0)
        logs = {k: float(v[-1]) for k, v in hist.history.items()}
        losses.append(logs["loss"])
        emit(progress, "train", f"epoch {epoch + 1}/{cfg.epochs}: loss {logs['loss']:.4f}, "
                                f"accuracy {logs.get('accuracy', 0):.3f}", done=epoch + 1, total=cfg.epochs,
             metrics=dict(logs))

    test_scores = model.predict(test_ds.x, batch_size=256, verbose=0)
    train_scores = model.predict(train_ds.x, batch_size=256, verbose=0)
    save_keras(model, out)
    return TrainResult(
        out=str(out), arch=cfg.arch, alpha=cfg.alpha, resolution=cfg.resolution, classes=classes,
        preprocessing=pre, data={"source": train_ds.source, "preprocessing": pre, "classes": classes,
                                 "class_names": list(train_ds.class_names or ()), "skipped": train_ds.skipped},
        epochs=cfg.epochs, train_samples=len(train_ds), test_samples=len(test_ds), test_split=test_split,
        train_top1=topk_accuracy(train_scores, train_ds.y, 1), test_top1=topk_accuracy(test_scores, test_ds.y, 1),
        test_top5=topk_accuracy(test_scores, test_ds.y, 5) if classes >= 5 else None,
        loss_history=tuple(losses), seconds=time.perf_counter() - t0, size_bytes=out.stat().st_size,
        config=asdict(cfg))


def save_keras(model, dest: str | os.PathLike) -> Path:
    """Save ``model`` as ``.keras`` without optimizer state; atomic (temp file, then rename)."""
    keras = import_keras()

    dest = Path(dest)
    # an uncompiled twin built from the config: the file then holds no optimizer variables
    bare = model.__class__.from_config(model.get_config())
    bare.set_weights(model.get_weights())
    with tempfile.TemporaryDirectory(prefix=f".{dest.name}.", dir=dest.parent or ".") as tmp:
        path = Path(tmp) / dest.name
        bare.save(path)
        os.replace(path, dest)
    return dest

"""MobileNet architectures as a registry, a checked builder and a safe loader.

``ARCHS`` maps a name (``mobilenet_v1`` ...) to an ``Arch`` row: the
``keras.applications`` constructor, which optional arguments it takes and the input
preprocessing it expects (a name in ``mobiledeploy.models.preprocessing.PREPROCESSING``). Adding an
architecture is one row.

Every argument is checked before Keras is imported, with a message naming the value
received and the flag that fixes it. Keras (and so TensorFlow) is imported only inside
``build_model`` / ``load_model``.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from mobiledeploy.errors import UsageError, one_line
from mobiledeploy.guards import check_model_file
from mobiledeploy.models.limits import check_fits, check_keras_archive
from mobiledeploy.models.preprocessing import get_preprocessing
from mobiledeploy.models.weights import check_hdf5, resolve_weights
from mobiledeploy.quiet import import_keras, import_tensorflow

MIN_RESOLUTION = 32


@dataclass(frozen=True)
class Arch:
    name: str
    keras_fn: str  # attribute of keras.applications
    preprocessing: str  # a name in mobiledeploy.models.preprocessing.PREPROCESSING
    depth_multiplier: bool = False  # takes depth_multiplier=
    dropout_kw: str | None = None  # name of its dropout keyword, None when it has no dropout
    extra: tuple[tuple[str, object], ...] = ()  # fixed keyword arguments
    name_pattern: str = ""  # regex matching the Keras model name it builds

    def to_json(self) -> dict:
        return {"name": self.name, "keras": f"keras.applications.{self.keras_fn}",
                "preprocessing": self.preprocessing}


ARCHS: dict[str, Arch] = {
    "mobilenet_v1": Arch("mobilenet_v1", "MobileNet", "mobilenet", depth_multiplier=True,
                         dropout_kw="dropout", name_pattern=r"^mobilenet_(?P<alpha>[0-9.]+)_\d+$"),
    "mobilenet_v2": Arch("mobilenet_v2", "MobileNetV2", "mobilenet",
                         name_pattern=r"^mobilenetv2_(?P<alpha>[0-9.]+)_\d+$"),
    # Keras' MobileNetV3 rescales inside the model (include_preprocessing): it takes 0..255.
    "mobilenet_v3_small": Arch("mobilenet_v3_small", "MobileNetV3Small", "raw", dropout_kw="dropout_rate",
                               extra=(("include_preprocessing", True),), name_pattern=r"^MobileNetV3Small"),
    "mobilenet_v3_large": Arch("mobilenet_v3_large", "MobileNetV3Large", "raw", dropout_kw="dropout_rate",
                               extra=(("include_preprocessing", True),), name_pattern=r"^MobileNetV3Large"),
}

#: suffixes ``--weights`` accepts (what ``keras.Model.load_weights`` reads)
WEIGHTS_SUFFIXES = (".weights.h5", ".h5", ".hdf5", ".keras")


def get_arch(name: str, *, flag: str = "--arch") -> Arch:
    if name not in ARCHS:
        raise UsageError(f"unknown architecture {name!r} ({flag}); choose from {', '.join(ARCHS)}")
    return ARCHS[name]


def check_build_args(arch: str = "mobilenet_v1", *, alpha: float = 1.0, resolution: int = 224,
                     classes: int = 1000, depth_multiplier: int = 1, dropout: float = 1e-3,
                     weights: str | os.PathLike | None = None) -> Arch:
    """Validate builder arguments without importing Keras; returns the ``Arch`` row."""
    a = get_arch(arch)
    if not _is_number(alpha) or not math.isfinite(alpha) or alpha <= 0:
        raise UsageError(f"alpha (width multiplier, --alpha) must be > 0, received alpha={alpha!r}")
    if not _is_int(resolution) or resolution < MIN_RESOLUTION:
        raise UsageError(f"resolution (--res) must be an integer >= {MIN_RESOLUTION}, "
                         f"received resolution={resolution!r}")
    if not _is_int(classes) or classes < 1:
        raise UsageError(f"classes (--classes) must be an integer >= 1, received classes={classes!r}")
    if not _is_int(depth_multiplier) or depth_multiplier < 1:
        raise UsageError(f"depth multiplier (--depth-multiplier) must be an integer >= 1, "
                         f"received depth_multiplier={depth_multiplier!r}")
    if depth_multiplier != 1 and not a.depth_multiplier:
        raise UsageError(f"{a.name} has no depth multiplier (--depth-multiplier); only mobilenet_v1 does, "
                         f"received depth_multiplier={depth_multiplier!r}")
    if not _is_number(dropout) or not (0.0 <= dropout < 1.0):
        raise UsageError(f"dropout (--dropout) must be in [0, 1), received dropout={dropout!r}")

    check_fits(a.name, alpha=float(alpha), resolution=int(resolution), classes=int(classes),
               depth_multiplier=int(depth_multiplier))
    if weights is not None and str(weights) == "imagenet":
        resolve_weights(weights, arch=a.name, alpha=alpha, resolution=resolution, classes=classes)
    elif weights is not None:
        p = Path(weights)
        if not p.exists():
            raise UsageError(f"weights file not found (--weights): {str(p)!r}")
        if not p.is_file() or not os.access(p, os.R_OK):
            raise UsageError(f"weights file is not a readable file (--weights): {str(p)!r}")
        if not str(p).lower().endswith(WEIGHTS_SUFFIXES):
            raise UsageError(f"weights file {str(p)!r} (--weights) must end in one of "
                             f"{', '.join(WEIGHTS_SUFFIXES)}")

        resolve_weights(p, arch=a.name, alpha=alpha, resolution=resolution, classes=classes)
        check_hdf5(p)
    return a


def build_model(arch: str = "mobilenet_v1", *, alpha: float = 1.0, resolution: int = 224, classes: int = 1000,
                depth_multiplier: int = 1, dropout: float = 1e-3, weights: str | os.PathLike | None = None,
                seed: int = 0, vary_batch_norm: bool = False):
    """A ``keras.applications`` MobileNet with random init (``seed``) or trained ``weights``
    (a local file, or ``"imagenet"``: Keras' official file from its cache, see ``models/weights.py``).

    With ``vary_batch_norm`` a randomly initialised model (no ``weights``) also gets
    non-degenerate batch-norm parameters (``seeded_batch_norm``), so that its outputs
    depend on its input. Raises ``UsageError`` for bad arguments and for a weights file that does not fit the
    built architecture. Nothing is downloaded.
    """
    a = check_build_args(arch, alpha=alpha, resolution=resolution, classes=classes,
                         depth_multiplier=depth_multiplier, dropout=dropout, weights=weights)
    keras = import_keras()

    keras.utils.set_random_seed(int(seed))
    kwargs: dict = dict(input_shape=(int(resolution), int(resolution), 3), alpha=float(alpha), weights=None,
                        classes=int(classes))
    if a.depth_multiplier:
        kwargs["depth_multiplier"] = int(depth_multiplier)
    if a.dropout_kw:
        kwargs[a.dropout_kw] = float(dropout)
    kwargs.update(dict(a.extra))
    try:
        model = getattr(keras.applications, a.keras_fn)(**kwargs)
    except ValueError as e:
        raise UsageError(f"keras cannot build {a.name} with alpha={alpha}, resolution={resolution}: "
                         f"{one_line(e, None)}") from None
    if weights is not None:
        w = resolve_weights(weights, arch=a.name, alpha=alpha, resolution=resolution, classes=classes)
        _load_weights(model, w.path, a, alpha=alpha, resolution=resolution, classes=classes)
    elif vary_batch_norm:
        seeded_batch_norm(model, seed=int(seed), preprocessing=a.preprocessing)
    return model


# ------------------------------------------------------------------ random init that is not degenerate

BN_GAMMA = (0.5, 1.5)  # uniform range of the drawn batch-norm scales
BN_BETA = (-0.5, 0.5)  # ... and offsets
BN_STAT_VALUES = 512  # values per channel (images x positions) the moving statistics are measured on, at least
BN_STAT_MIN_IMAGES = 16
BN_VARIANCE_FLOOR = 0.1  # a channel's moving variance is at least this fraction of its layer's mean


def bn_stat_images(resolution: int) -> int:
    """Synthetic images for the statistics: the last feature map (stride 32) must still hold enough values."""
    last = max(1, int(resolution) // 32) ** 2
    return max(BN_STAT_MIN_IMAGES, -(-BN_STAT_VALUES // last))


def random_init_json(seed: int) -> dict:
    """How ``build_model(..., vary_batch_norm=True)`` initialised a model (for the manifest)."""
    return {"weights": "keras default initializers", "seed": int(seed),
            "batch_norm": {"gamma": f"uniform{BN_GAMMA}", "beta": f"uniform{BN_BETA}",
                           "moving_mean_variance": "measured on seeded synthetic images (smooth colour fields "
                                                   f"plus pixel noise), at least {BN_STAT_VALUES} values per "
                                                   f"channel; variance floored at {BN_VARIANCE_FLOOR} x the "
                                                   "layer's mean"}}


def seeded_batch_norm(model, *, seed: int, preprocessing: str = "mobilenet") -> None:
    """Give a randomly initialised model batch-norm parameters under which signals survive.

    Keras' default initialisers shrink the activations of a deep MobileNet layer after
    layer (the depthwise kernels' Glorot scale assumes a fan-in of 9 x channels), and
    batch norm at its defaults (mean 0, variance 1) does not undo it: every input then
    gives the same output. Here gamma and beta are drawn per channel (seeded), and each
    layer's moving mean and variance are set to the statistics of its input over
    seeded synthetic images (one training-mode pass with momentum 0, layers in order), so
    every batch norm hands on activations of unit order. A channel whose variance is tiny
    on those images (a ReLU that rarely fires) would blow up on other inputs: its
    variance is floored at ``BN_VARIANCE_FLOOR`` x the layer's mean.
    """
    keras = import_keras()
    import numpy as np

    rng = np.random.default_rng(seed)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for bn in bns:
        channels = int(bn.gamma.shape[0])
        bn.gamma.assign(rng.uniform(*BN_GAMMA, channels).astype("float32"))
        bn.beta.assign(rng.uniform(*BN_BETA, channels).astype("float32"))
    size = tuple(int(d) for d in model.inputs[0].shape[1:3])
    x = _synthetic_images(rng, size, bn_stat_images(min(size)), preprocessing)
    momenta = [bn.momentum for bn in bns]
    try:
        for bn in bns:
            bn.momentum = 0.0  # the pass sets moving statistics to this batch's
        model(x, training=True)
    finally:
        for bn, m in zip(bns, momenta):
            bn.momentum = m
    for bn in bns:
        var = bn.moving_variance.numpy()
        bn.moving_variance.assign(np.maximum(var, BN_VARIANCE_FLOOR * var.mean()).astype("float32"))


def _synthetic_images(rng, size: tuple[int, int], n: int, preprocessing: str):
    """``n`` RGB images: bilinear-upsampled 8x8 colour fields plus pixel noise, preprocessed."""
    import numpy as np
    from PIL import Image

    h, w = size
    fields = rng.uniform(0, 255, (n, 8, 8, 3)).astype(np.uint8)
    smooth = np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.BILINEAR)) for f in fields])
    pixels = np.clip(smooth + rng.normal(0, 24, smooth.shape), 0, 255).astype(np.float32)
    return get_preprocessing(preprocessing).fn(pixels)


def _load_weights(model, path: Path, a: Arch, *, alpha, resolution, classes) -> None:
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Keras warns per layer before it raises
            model.load_weights(str(path))
    except (ValueError, KeyError, OSError, TypeError) as e:
        msg = one_line(e, None)
        m = (re.search(r"variable\.shape=(\([^)]*\)), Received: value\.shape=(\([^)]*\))", msg)
             or re.search(r"expects shape (\([^)]*\))\. Received saved weight with shape (\([^)]*\))", msg))
        detail = f"a layer expects shape {m.group(1)}, the file has {m.group(2)}" if m else msg[:200]
        raise UsageError(
            f"weights file {path.name!r} (--weights) does not fit {a.name} alpha={alpha} res={resolution} "
            f"classes={classes}: {detail}") from None


# ------------------------------------------------------------------ loading


def check_model_path(path: str | os.PathLike, *, flag: str = "--model") -> Path:
    """The model path exists, is readable and is .keras / .h5 / a SavedModel directory."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"model not found ({flag}): {str(p)!r}")
    if p.is_dir():
        if not (p / "saved_model.pb").is_file():
            raise UsageError(f"directory {str(p)!r} ({flag}) is not a SavedModel (no saved_model.pb)")
        return p
    if not os.access(p, os.R_OK):
        raise UsageError(f"model file is not readable ({flag}): {str(p)!r}")
    if p.suffix.lower() not in (".keras", ".h5", ".hdf5"):
        raise UsageError(f"model {str(p)!r} ({flag}) must be a .keras or .h5 file or a SavedModel directory")

    check_model_file(p)  # no FIFO, device or empty file
    if p.suffix.lower() == ".keras":
        check_keras_archive(p)  # a complete zip whose contents do not inflate to gigabytes
    return p


def load_model(path: str | os.PathLike, *, unsafe: bool = False, flag: str | None = None):
    """Load a Keras model from ``.keras``, ``.h5`` or a SavedModel directory.

    Keras ``safe_mode=True`` unless ``unsafe``: a model that needs arbitrary code to
    deserialize (Lambda layers) is refused with a message naming ``--unsafe-load``.
    A SavedModel directory is wrapped in a ``TFSMLayer`` (its serving signature).
    Errors name the path as given, and ``flag`` (e.g. ``--model``) when the path came from one.
    """
    p = check_model_path(path, flag=flag or "MODEL")
    named = f" ({flag})" if flag else ""
    keras = import_keras()

    if p.is_dir():
        return _load_saved_model(p)
    try:
        return keras.models.load_model(str(p), compile=False, safe_mode=not unsafe)
    except ValueError as e:
        msg = one_line(e, None)
        if "safe_mode=False" in msg or "arbitrary code execution" in msg:  # Keras' own wording
            raise UsageError(f"{p.name} needs unsafe deserialization (it contains a Lambda layer or other "
                             f"Python code); pass --unsafe-load only if you trust this file") from None
        raise UsageError(f"cannot load Keras model {str(p)!r}{named}: {msg[:300]}") from None
    except (OSError, KeyError, TypeError, AttributeError, ImportError) as e:
        raise UsageError(f"cannot load Keras model {str(p)!r}{named}: {one_line(e)}") from None
    except Exception as e:  # corrupt archives raise zipfile/h5py errors of their own
        raise UsageError(f"cannot load Keras model {str(p)!r}{named}: "
                         f"{one_line(e, typed=True)}") from None


def _load_saved_model(p: Path):
    keras = import_keras()

    try:
        layer = keras.layers.TFSMLayer(str(p), call_endpoint="serving_default")
        tf = import_tensorflow()

        loaded = getattr(layer, "_reloaded_obj", None) or tf.saved_model.load(str(p))  # load once if we can
        sig = loaded.signatures["serving_default"]
        (spec,) = sig.structured_input_signature[1].values()
        inp = keras.Input(shape=tuple(spec.shape[1:]), name=spec.name or "input")
        out = layer(inp)
        if isinstance(out, dict):
            if len(out) != 1:
                raise UsageError(f"SavedModel {str(p)!r} has {len(out)} outputs; export needs exactly one")
            out = next(iter(out.values()))
        return keras.Model(inp, out, name=p.name)
    except UsageError:
        raise
    except Exception as e:
        raise UsageError(f"cannot load SavedModel {str(p)!r} (--model): {one_line(e)}") from None


@dataclass(frozen=True)
class ModelInfo:
    """What the manifest says about a model: its arch and shape, built or loaded."""

    arch: str | None
    alpha: float | None
    resolution: int
    classes: int
    input_shape: tuple[int, int, int, int]
    preprocessing: str

    def to_json(self) -> dict:
        return {"arch": self.arch, "alpha": self.alpha, "resolution": self.resolution, "classes": self.classes,
                "input_shape": list(self.input_shape), "preprocessing": self.preprocessing}


def describe(model, *, arch: str | None = None, alpha: float | None = None,
             preprocessing: str | None = None) -> ModelInfo:
    """Shape facts of a Keras image classifier; arch/alpha guessed from its name if not given.

    Raises ``UsageError`` unless the model has one NHWC image input with 3 channels and
    one (N, classes) output.
    """
    ins = model.inputs
    if len(ins) != 1:
        raise UsageError(f"model {model.name!r} has {len(ins)} inputs; export needs one image input")
    shape = tuple(ins[0].shape)
    if len(shape) != 4 or shape[3] != 3 or shape[1] is None or shape[2] is None:
        raise UsageError(f"model {model.name!r} input shape {shape} is not a fixed-size NHWC RGB image "
                         f"(None, H, W, 3)")
    outs = model.outputs
    if len(outs) != 1 or len(outs[0].shape) != 2:
        raise UsageError(f"model {model.name!r} must have one (batch, classes) output, "
                         f"has {[tuple(o.shape) for o in outs]}")
    if arch is None:
        for a in ARCHS.values():
            m = re.match(a.name_pattern, model.name or "")
            if m:
                arch = a.name
                if alpha is None and "alpha" in m.groupdict():
                    alpha = float(m.group("alpha"))
                break
    if preprocessing is None:
        preprocessing = ARCHS[arch].preprocessing if arch in ARCHS else "mobilenet"
    h, w = int(shape[1]), int(shape[2])
    return ModelInfo(arch=arch, alpha=alpha, resolution=h if h == w else max(h, w), classes=int(outs[0].shape[1]),
                     input_shape=(1, h, w, 3), preprocessing=preprocessing)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)

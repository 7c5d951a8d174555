"""Up-front model limits: models that fit in memory, Keras archives that do not inflate past
sane sizes. Checked before TensorFlow is imported, so a bad option fails in milliseconds
with the estimate that refused it, not minutes later out of memory. The generic file and
number guards (regular files, outputs that can be written) are in ``mobiledeploy/guards.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

from mobiledeploy.errors import UsageError, one_line
from mobiledeploy.guards import MAX_MODEL_BYTES, fmt_bytes
from mobiledeploy.machine import available_memory

# Parameters at alpha 1 without the classifier, and the classifier's input width, per
# architecture (Keras applications; rounded up: the estimate is an upper bound).
_BASE_PARAMS = {"mobilenet_v1": 3.3e6, "mobilenet_v2": 2.3e6, "mobilenet_v3_small": 1.0e6,
                "mobilenet_v3_large": 3.0e6}
_HEAD = {"mobilenet_v1": 1024, "mobilenet_v2": 1280, "mobilenet_v3_small": 1024, "mobilenet_v3_large": 1280}
_WIDEST = 96  # the widest activation at half resolution, per alpha (V2's first expansion)
_COPIES = 6  # weights live in Keras, the converter's graph, the flatbuffer, the runtime ...
BATCH = 8  # export runs the Keras model on batches of 8


def model_bytes(arch: str, *, alpha: float, resolution: int, classes: int, depth_multiplier: int = 1,
                samples: int = 0) -> tuple[float, float]:
    """(parameters, bytes) an export of this config needs, roughly from above: weights in a few
    copies, the widest activations of a batch, and ``samples`` float32 images of calibration data."""
    params = _BASE_PARAMS.get(arch, 4e6) * alpha * alpha * depth_multiplier \
        + _HEAD.get(arch, 1280) * max(1.0, alpha) * (classes + 1)
    act = BATCH * (resolution / 2) ** 2 * _WIDEST * alpha * depth_multiplier * 4 * 3
    data = samples * resolution * resolution * 3 * 4
    return params, params * 4 * _COPIES + act + data


def check_fits(arch: str, *, alpha: float, resolution: int, classes: int, depth_multiplier: int = 1,
               samples: int = 0) -> None:
    """UsageError, naming the estimate, when a config cannot fit in this machine's memory."""
    params, need = model_bytes(arch, alpha=alpha, resolution=resolution, classes=classes,
                               depth_multiplier=depth_multiplier, samples=samples)
    have = available_memory()
    if need > have:
        raise UsageError(f"{arch} alpha {alpha:g} at {resolution}x{resolution} with {classes} classes needs about "
                         f"{fmt_bytes(need)} ({params:.3g} parameters), more than this machine's "
                         f"{fmt_bytes(have)} of memory (--alpha / --res / --classes)")


MAX_KERAS_CONFIG_BYTES = 64 * 2**20  # a MobileNet's config.json is ~100 KiB


def check_keras_archive(path: str | os.PathLike) -> None:
    """UsageError unless a ``.keras`` file is a complete zip archive with a ``config.json``
    whose uncompressed sizes are sane: config.json at most 64 MiB, everything at most 2 GiB.

    Read from the zip's central directory (nothing is inflated), before Keras opens it: a
    few megabytes on disk that inflate to gigabytes are refused, not loaded into memory.
    """
    import zipfile

    p = Path(path)
    try:
        with zipfile.ZipFile(p) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as e:
        raise UsageError(f"cannot load Keras model {str(p)!r}: not a valid or complete Keras archive (a .keras "
                         f"file is a zip archive: {one_line(e, 120)})") from None
    except OSError as e:
        raise UsageError(f"cannot read {str(p)!r}: {e.strerror or e}") from None
    config = [i.file_size for i in infos if i.filename == "config.json"]
    if not config:
        raise UsageError(f"cannot load Keras model {str(p)!r}: not a valid or complete Keras archive (no "
                         "config.json in it)")
    if max(config) > MAX_KERAS_CONFIG_BYTES:
        raise UsageError(f"{str(p)!r}: its config.json inflates to {fmt_bytes(max(config))}; more than "
                         f"{fmt_bytes(MAX_KERAS_CONFIG_BYTES)} is not supported")
    total = sum(i.file_size for i in infos)
    if total > MAX_MODEL_BYTES:
        raise UsageError(f"{str(p)!r} inflates to {fmt_bytes(total)}; more than {fmt_bytes(MAX_MODEL_BYTES)} "
                         "is not supported")

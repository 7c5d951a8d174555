"""Up-front limits: numbers that are finite and in range, models that fit in memory, outputs
that can be written. Checked before TensorFlow is imported, so a bad option fails in
milliseconds with the estimate that refused it, not minutes later out of memory.
"""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path

from mobiledeploy.errors import UsageError

# Parameters at alpha 1 without the classifier, and the classifier's input width, per
# architecture (Keras applications; rounded up: the estimate is an upper bound).
_BASE_PARAMS = {"mobilenet_v1": 3.3e6, "mobilenet_v2": 2.3e6, "mobilenet_v3_small": 1.0e6,
                "mobilenet_v3_large": 3.0e6}
_HEAD = {"mobilenet_v1": 1024, "mobilenet_v2": 1280, "mobilenet_v3_small": 1024, "mobilenet_v3_large": 1280}
_WIDEST = 96  # the widest activation at half resolution, per alpha (V2's first expansion)
_COPIES = 6  # weights live in Keras, the converter's graph, the flatbuffer, the runtime ...
BATCH = 8  # export runs the Keras model on batches of 8


def available_memory() -> int:
    """Bytes of physical memory on this machine."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not Linux
        return 1 << 40


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
                         f"{_fmt_bytes(need)} ({params:.3g} parameters), more than this machine's "
                         f"{_fmt_bytes(have)} of memory (--alpha / --res / --classes)")


def _fmt_bytes(n: float) -> str:
    if n >= 1024 ** 6:
        return f"{n:.2g} bytes"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024:
            return f"{n:.1f} {unit}" if unit != "B" else f"{n:.0f} B"
        n /= 1024
    return f"{n:.1f} PiB"


def finite(value, flag: str, *, low: float | None = None, high: float | None = None,
           low_open: bool = False) -> float:
    """``value`` as a float that is finite and inside [low, high] (``low_open``: > low)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{flag} must be a number, received {value!r}") from None
    if not math.isfinite(v):
        raise UsageError(f"{flag} must be a finite number, received {value!r}")
    if low is not None and (v <= low if low_open else v < low):
        raise UsageError(f"{flag} must be {'>' if low_open else '>='} {low:g}, received {value!r}")
    if high is not None and v > high:
        raise UsageError(f"{flag} must be <= {high:g}, received {value!r}")
    return v


def check_output_file(path: str | os.PathLike, flag: str = "--out") -> Path:
    """An output file that can be written: its directory exists and is writable, it is not a directory."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise UsageError(f"output path {str(p)!r} ({flag}) is a directory")
    if not parent.is_dir():
        raise UsageError(f"output directory {str(parent)!r} ({flag}) does not exist")
    try:
        mode = os.stat(p).st_mode
    except OSError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):  # it would be replaced, or block, or read forever
        raise UsageError(f"output path {str(p)!r} ({flag}) is {_kind(mode)}, not a regular file")
    if not os.access(parent, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise UsageError(f"cannot write {str(p)!r} ({flag}): permission denied")
    from mobiledeploy.io import probe_writable

    probe_writable(parent, flag=flag)
    return p


def _kind(mode: int) -> str:
    return "a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) \
        else "a socket" if stat.S_ISSOCK(mode) else "not a regular file"


MAX_TEXT_BYTES = 16 * 2**20  # manifests, budgets, target profiles, measurement CSVs


def regular_file(path: str | os.PathLike, *, what: str = "file", max_bytes: int = MAX_TEXT_BYTES) -> int:
    """The size of ``path`` if it is a regular, non-empty file of at most ``max_bytes``; UsageError
    otherwise. The file is opened non-blocking and checked on its descriptor: a FIFO, a device
    (a link to ``/dev/zero``) or a directory is refused before anything could block on it."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise UsageError(f"{what} not found: {str(p)!r}") from None
    except IsADirectoryError:
        raise UsageError(f"expected a {what}, got a directory: {str(p)!r}") from None
    except OSError as e:
        raise UsageError(f"cannot read {str(p)!r}: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if stat.S_ISDIR(st.st_mode):
        raise UsageError(f"expected a {what}, got a directory: {str(p)!r}")
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{str(p)!r} is {_kind(st.st_mode)}, not a regular {what}")
    if st.st_size == 0:
        raise UsageError(f"{what} {str(p)!r} is empty (0 bytes)")
    if st.st_size > max_bytes:
        raise UsageError(f"{what} {str(p)!r} is {_fmt_bytes(st.st_size)}; more than {_fmt_bytes(max_bytes)} "
                         "is not supported")
    return st.st_size


MAX_MODEL_BYTES = 2**31  # 2 GiB: the protobuf limit of ONNX, far above any mobile model


def check_model_file(path: str | os.PathLike) -> int:
    """The size of ``path`` if it is a regular, non-empty model file under 2 GiB; UsageError otherwise.

    Called before any model is opened, in the parent process (``runtimes.detect_format``
    calls it first): a FIFO, a device (a link to ``/dev/zero``), a directory or an empty
    file would block a reader, never end, or read as an empty model (``limits.regular_file``).
    """
    return regular_file(path, what="model file", max_bytes=MAX_MODEL_BYTES)


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
                         f"file is a zip archive: {' '.join(str(e).split())[:120]})") from None
    except OSError as e:
        raise UsageError(f"cannot read {str(p)!r}: {e.strerror or e}") from None
    config = [i.file_size for i in infos if i.filename == "config.json"]
    if not config:
        raise UsageError(f"cannot load Keras model {str(p)!r}: not a valid or complete Keras archive (no "
                         "config.json in it)")
    if max(config) > MAX_KERAS_CONFIG_BYTES:
        raise UsageError(f"{str(p)!r}: its config.json inflates to {_fmt_bytes(max(config))}; more than "
                         f"{_fmt_bytes(MAX_KERAS_CONFIG_BYTES)} is not supported")
    total = sum(i.file_size for i in infos)
    if total > MAX_MODEL_BYTES:
        raise UsageError(f"{str(p)!r} inflates to {_fmt_bytes(total)}; more than {_fmt_bytes(MAX_MODEL_BYTES)} "
                         "is not supported")

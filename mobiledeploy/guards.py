"""Generic input guards, checked before anything reads or writes: numbers that are finite and
in range, files that are regular, non-empty and not too large (a FIFO or a device would block
a reader or never end), outputs that can be written.
"""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path

from mobiledeploy.errors import UsageError
from mobiledeploy.io import probe_writable


def fmt_bytes(n: float) -> str:
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
        raise UsageError(f"{what} {str(p)!r} is {fmt_bytes(st.st_size)}; more than {fmt_bytes(max_bytes)} "
                         "is not supported")
    return st.st_size


MAX_MODEL_BYTES = 2**31  # 2 GiB: the protobuf limit of ONNX, far above any mobile model


def check_model_file(path: str | os.PathLike) -> int:
    """The size of ``path`` if it is a regular, non-empty model file under 2 GiB; UsageError otherwise.

    Called before any model is opened, in the parent process (``runtimes.detect_format``
    calls it first): a FIFO, a device (a link to ``/dev/zero``), a directory or an empty
    file would block a reader, never end, or read as an empty model (``regular_file``).
    """
    return regular_file(path, what="model file", max_bytes=MAX_MODEL_BYTES)

"""Atomic file output, and the one JSON encoding.

Every file the toolkit writes goes to a temporary path in the same directory first and
is renamed into place only when complete, so a failure or Ctrl-C leaves either the old
file or nothing.

Every JSON document is encoded by ``dumps``: JSON has no infinity or NaN, so non-finite
numbers are written as the strings ``"inf"``, ``"-inf"`` and ``"nan"`` (Python's
``float()`` reads them back; ``null`` always means "not measured"). Documents a command
emits carry ``stamp()``'s keys: the mobiledeploy version, when, and on what machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from mobiledeploy import __version__
from mobiledeploy.errors import UsageError
from mobiledeploy.machine import conditions


def ensure_writable_dir(path: str | os.PathLike, *, flag: str = "--out") -> Path:
    """Create ``path`` if needed and check that files can be written in it."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create output directory {str(p)!r} ({flag}): {e.strerror or e}") from None
    if not p.is_dir():
        raise UsageError(f"output path {str(p)!r} ({flag}) is not a directory")
    if not os.access(p, os.W_OK | os.X_OK):
        raise UsageError(f"output directory {str(p)!r} ({flag}) is not writable")
    probe_writable(p, flag=flag)
    return p


def probe_writable(directory: str | os.PathLike, *, flag: str = "--out") -> None:
    """UsageError unless a file can be created in ``directory``: one empty temporary file is
    created and removed. ``os.access`` alone says yes to root in ``/proc`` and ``/sys``,
    where creating a file then fails; read-only mounts and full quotas are caught too."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".mobiledeploy-probe-", dir=directory)
    except OSError as e:
        raise UsageError(f"cannot write files in {str(directory)!r} ({flag}): {e.strerror or e}") from None
    os.close(fd)
    os.unlink(tmp)


def sha256_file(path: str | os.PathLike) -> str:
    """The hex SHA-256 of a file's bytes (read in chunks), as the export manifest records it."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it onto ``dest`` on success.

    On any exception (KeyboardInterrupt included) the temporary file or directory is
    removed and ``dest`` is left untouched.
    """
    dest = Path(dest)
    parent = dest.parent if str(dest.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=parent)
    except OSError as e:
        raise UsageError(f"cannot write {str(dest)!r}: {e.strerror or e}") from None
    os.close(fd)
    os.unlink(tmp)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    except BaseException:
        _remove(tmp_path)
        raise


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def write_bytes(dest: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


def write_text(dest: str | os.PathLike, text: str) -> Path:
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(dest)


def dumps(obj: Any) -> str:
    """JSON text, indented; numpy values as plain numbers, non-finite floats as strings."""
    return json.dumps(_finite(obj), indent=2, sort_keys=False, default=_json_default, allow_nan=False)


def write_json(dest: str | os.PathLike, obj: Any) -> Path:
    return write_text(dest, dumps(obj) + "\n")


STAMP_KEYS = ("mobiledeploy_version", "created", "machine")


def stamp(doc: dict) -> dict:
    """``doc`` plus ``mobiledeploy_version``, ``created`` (UTC, ISO 8601) and ``machine``.

    ``machine`` is what the numbers depend on: CPU model, cores, load average at the time.
    Keys already in ``doc`` are kept as they are.
    """
    import time

    values = (__version__, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), conditions())
    return {**doc, **{k: v for k, v in zip(STAMP_KEYS, values) if k not in doc}}


def _finite(o: Any) -> Any:
    """Replace float infinities and NaN (also numpy's) by "inf", "-inf", "nan", recursively."""
    if isinstance(o, float):
        return o if math.isfinite(o) else str(o)  # 'inf', '-inf', 'nan'
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    if type(o).__module__ == "numpy" and hasattr(o, "tolist"):
        return _finite(o.tolist())
    return o


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")

"""Export's staging directory: what a killed export left behind, and the atomic move into ``--out``.

An export writes everything into a staging folder inside ``--out`` named after its process
(``.mobiledeploy-export-PID-...``) and moves it into place only when every artifact converted
and validated; a folder whose process is gone is removed by the next export.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import threading
from pathlib import Path

from mobiledeploy import io

MANIFEST = "manifest.json"
STAGING_PREFIX = ".mobiledeploy-export-"


def clean_stale_staging(out: Path) -> list[Path]:
    """Remove staging folders that earlier exports into ``out`` left behind (killed with SIGKILL,
    power loss). A folder whose process is still running is another export at work: kept."""
    removed = []
    for d in out.glob(STAGING_PREFIX + "*"):
        pid = d.name[len(STAGING_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and _alive(int(pid)):
            continue
        if d.is_dir() and not d.is_symlink():
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def _previous_files(out: Path) -> set[str]:
    """The files the manifest already in ``out`` lists (plain names inside ``out`` only)."""
    try:
        m = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        entries = list(m.get("artifacts") or []) + [m.get("source_model") or {}]
        names = {e.get("file") for e in entries if isinstance(e, dict)}
    except (OSError, ValueError, AttributeError, TypeError):
        return set()
    return {n for n in names if isinstance(n, str) and n and Path(n).name == n and n not in (".", "..", MANIFEST)}


def commit_staging(staging: Path, out: Path, files: list[Path], manifest: dict) -> None:
    """Move the artifacts, then the manifest, from staging into ``out``; then remove what the
    previous manifest listed and this one does not, so the directory equals its manifest.

    Each move is an atomic rename in the same directory tree; Ctrl-C is held back
    until the few renames are done, so ``out`` never holds half of an export.
    """
    io.write_json(staging / MANIFEST, io.stamp(manifest))
    stale = _previous_files(out) - {f.name for f in files}
    with sigint_deferred():
        for f in files:
            os.replace(f, out / f.name)
        os.replace(staging / MANIFEST, out / MANIFEST)
        for name in stale:
            p = out / name
            if p.is_file() or p.is_symlink():
                with contextlib.suppress(OSError):
                    p.unlink()


@contextlib.contextmanager
def sigint_deferred():
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda *a: received.append(a))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            raise KeyboardInterrupt

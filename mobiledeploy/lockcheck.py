"""The pinned install: do the installed converter and runtime versions match requirements.lock?

``requirements.lock`` (at the top of a source checkout) pins every dependency exactly and is
what ``make install`` installs with. A converter's minor version changes the exported graph
and a runtime's changes its kernels, so the commands whose results depend on them (export,
bench, eval, check, sweep) print one note on stderr when the installed versions differ from
the lock. This runs at start-up, so it is cheap: the standard library only, and the versions
are read from the ``*.dist-info`` directory names on ``sys.path`` (no importlib.metadata, no
TensorFlow). No lock found (an install from a wheel) means nothing is said.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from pathlib import Path

LOCK_NAME = "requirements.lock"
# The distributions whose version shapes an exported graph or a measured number.
CHECKED = ("tensorflow-cpu", "tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert", "numpy")
# The subcommands whose results depend on them (not --help, not info/targets/estimate).
COMMANDS = frozenset({"export", "bench", "eval", "check", "sweep"})

_PIN = re.compile(r"([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*==\s*([^\s;#]+)")


def normalize(name: str) -> str:
    """A distribution name in its canonical form (PEP 503): ``tensorflow_cpu`` -> ``tensorflow-cpu``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_path() -> Path | None:
    """requirements.lock of the source checkout this package runs from, or None (a wheel install)."""
    root = Path(__file__).resolve().parent.parent
    lock = root / LOCK_NAME
    return lock if lock.is_file() and (root / "pyproject.toml").is_file() else None


def read_lock(path: str | os.PathLike) -> dict[str, str]:
    """{canonical name: version} from a lock of ``name==version`` lines (comments and blanks skipped).

    Raises ValueError naming the line when a line is not an exact pin.
    """
    pins: dict[str, str] = {}
    for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        m = _PIN.fullmatch(text)
        if m is None:
            raise ValueError(f"{path}:{i}: not an exact pin (name==version): {text!r}")
        pins[normalize(m[1])] = m[2]
    return pins


def installed(names) -> dict[str, str]:
    """{canonical name: version} of those of ``names`` that are installed, first on sys.path winning."""
    want, found = {normalize(n) for n in names}, {}
    for entry in sys.path:
        try:
            items = os.listdir(entry or ".")
        except OSError:  # a zip, a missing directory
            continue
        for item in items:
            stem, dot, kind = item.rpartition(".")
            if not dot or kind not in ("dist-info", "egg-info"):
                continue
            parts = stem.split("-")  # name-version[-pyX.Y]: '-' is escaped to '_' inside both
            name = normalize(parts[0])
            if len(parts) >= 2 and name in want and name not in found:
                found[name] = parts[1]
    return found


def drift(lock: str | os.PathLike | None = None) -> dict[str, tuple[str, str]] | None:
    """{name: (installed, locked)} for the checked distributions that differ from the lock.

    ``lock`` defaults to the checkout's requirements.lock; None when there is none. A checked
    distribution that is not installed (an install without the convert extra) is not a difference.
    """
    path = lock if lock is not None else lock_path()
    if path is None:
        return None
    pins = read_lock(path)
    names = [n for n in CHECKED if n in pins]
    have = installed(names)
    return {n: (have[n], pins[n]) for n in names if n in have and have[n] != pins[n]}


@functools.lru_cache(maxsize=1)
def matches_lock() -> bool | None:
    """True/False: the checked versions match the checkout's lock; None: no (readable) lock."""
    try:
        d = drift()
    except (OSError, ValueError):
        return None
    return None if d is None else not d


def note(differs: dict[str, tuple[str, str]], lock_name: str = LOCK_NAME) -> str:
    listed = ", ".join(f"{name} {have} (locked {pin})" for name, (have, pin) in differs.items())
    return (f"note: installed versions differ from {lock_name}: {listed}; results may differ from "
            "ones measured with the locked set (`make install` installs it)")


def note_drift(args, lock: str | os.PathLike | None = None, stream=None) -> None:
    """At CLI start-up: one note on stderr if the subcommand in ``args`` depends on versions that differ.

    Says nothing for --help/--version, for other subcommands, without a lock, or when the lock
    cannot be read (the CLI never fails because of it).
    """
    args = list(args or ())
    head = args[:args.index("--")] if "--" in args else args
    if any(a in ("-h", "--help", "--version") for a in head):
        return
    if next((a for a in head if not a.startswith("-")), None) not in COMMANDS:
        return
    try:
        differs = drift(lock)
    except (OSError, ValueError):
        return
    if differs:
        path = lock if lock is not None else lock_path()
        print(note(differs, Path(path).name), file=stream or sys.stderr)

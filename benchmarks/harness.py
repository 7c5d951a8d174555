"""The benchmark harness: where results go and what every result file records.

A study is a module in ``benchmarks/`` with ``KIND`` ("study": a one-off measurement whose
figures the docs cite; "regression": a timing worth re-running after changes),
``add_arguments(parser)`` and ``run(args) -> dict``. ``python -m benchmarks run NAME`` parses
the arguments, calls ``run`` and writes the returned document with :func:`write_result`.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BUILD = ROOT / "build"


def result_path(name: str, tag: str | None = None, suffix: str = ".json") -> Path:
    """``benchmarks/results/<name>[_<tag>]<suffix>``: the one results layout."""
    return RESULTS / f"{name}{'_' + tag if tag else ''}{suffix}"


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode:
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def run_record(name: str, tag: str | None = None) -> dict:
    """What a result file says about how it was made: command, version, commit, machine and load."""
    import mobiledeploy
    from mobiledeploy.machine import conditions

    return {"study": name, "tag": tag, "command": " ".join(["python -m benchmarks", *sys.argv[1:]])
            if sys.argv and sys.argv[0].endswith("__main__.py") else " ".join(sys.argv),
            "mobiledeploy": mobiledeploy.__version__, "commit": git_commit(), "machine": conditions(),
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def write_result(name: str, doc: dict, *, tag: str | None = None, text: str | None = None,
                 suffix: str = ".md") -> Path:
    """Write a study's result to ``result_path(name, tag)`` (atomically), with its run record
    under ``"run"``; ``text`` (e.g. a Markdown rendering) goes beside it with ``suffix``."""
    from mobiledeploy import io

    path = result_path(name, tag)
    path.parent.mkdir(parents=True, exist_ok=True)
    io.write_json(path, {"run": run_record(name, tag), **doc})
    if text is not None:
        io.write_text(result_path(name, tag, suffix), text)
    return path

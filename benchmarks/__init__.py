"""Benchmarks and studies, run through one harness: ``python -m benchmarks list`` and
``python -m benchmarks run NAME [--tag TAG] [options]`` (from the repository root).

Each module here other than ``harness`` and the ``common`` package is a study; see
``benchmarks/harness.py`` for what a study module provides.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

NOT_STUDIES = {"harness", "common", "__main__"}


def study_names() -> list[str]:
    """Every study module in ``benchmarks/`` (by file name; nothing is imported)."""
    here = str(Path(__file__).resolve().parent)
    return sorted(m.name for m in pkgutil.iter_modules([here])
                  if not m.ispkg and not m.name.startswith("_") and m.name not in NOT_STUDIES)


def load(name: str):
    """The study module ``name`` (imports it: cheap, the heavy imports are inside ``run``)."""
    if name not in study_names():
        raise KeyError(name)
    return importlib.import_module(f"benchmarks.{name}")

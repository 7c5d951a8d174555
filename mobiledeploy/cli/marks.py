"""The export's ``degraded`` mark as every command shows it (bench, eval, sweep, check): a marker
next to the artifact's name in tables, and one note under them with the figures."""

from __future__ import annotations

from collections.abc import Iterable

MARK = "[degraded]"


def marked(name: str, degraded: dict | None) -> str:
    """``name``, followed by the marker when the export marked the artifact degraded."""
    return f"{name} {MARK}" if degraded else name


def degraded_notes(items: Iterable[tuple[str, dict | None]]) -> list[str]:
    """One line naming every marked artifact with its figures (``(name, degraded)`` pairs), or none."""
    named = [f"{name} {_figures(d)}".rstrip() for name, d in items if d]
    if not named:
        return []
    return [f"{MARK}: the export measured top-1 agreement with the float model below its floor on its validation "
            f"samples (manifest: agreement_floor): {', '.join(named)}"]


def _figures(d: dict) -> str:
    a, f = d.get("top1_agreement"), d.get("floor")
    return f"{a:.0%} < {f:.0%}" if a is not None and f is not None else ""

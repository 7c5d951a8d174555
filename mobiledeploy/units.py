"""How sizes are written, everywhere: IEC binary units (1 KiB = 1024 bytes).

Tables, Markdown reports and the docs all use ``format_size``; JSON keeps exact byte
counts (``size_bytes``). A budget file's ``max_size_kb`` is in KiB too.
"""

from __future__ import annotations

UNITS = ("B", "KiB", "MiB", "GiB")


def format_size(n: int | float | None) -> str:
    """``861.7 KiB``, ``1.2 MiB``, ``512 B``; ``-`` for an unknown size."""
    if n is None:
        return "-"
    for unit in UNITS:
        if abs(n) < 1024 or unit == UNITS[-1]:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")

"""Tables that fit the terminal, for every command (written once, used by all).

Each command describes its columns (``Column``: header, alignment, priority, whether the
text may fold onto several lines) and hands over rows of text; ``render`` lays them out:

- At its natural width when it fits.
- Otherwise headers wrap at spaces, free text (descriptions, layer names, details) folds,
  and whole columns are dropped, highest ``priority`` number first (the rightmost of equal
  priority first), until the table fits. One dim line then names the columns not shown.
  A model name, a file name or a figure is never cut or ellipsized: its column is shown
  whole or not at all.
- ``wide=True`` (the commands' ``--wide``) shows every column at its natural width,
  however wide the table gets.

The width is the terminal's when stdout is a terminal. When it is not (a pipe, a CI log,
a file), it is ``$COLUMNS`` if set, else 80 (``width()``). JSON and Markdown outputs always
hold every column.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence, Union

from rich.cells import cell_len
from rich.text import Text

PIPE_WIDTH = 80  # stdout is not a terminal and $COLUMNS is not set
FOLD_MIN = 16  # narrowest a folding column is made before columns are dropped

Cell = Union[str, Text]


@dataclass(frozen=True)
class Column:
    header: str
    justify: str = "left"  # "right" for figures
    priority: int = 0  # 0: always shown; when too wide, the highest numbers are dropped first
    fold: bool = False  # free text that may wrap onto several lines (never a name the user types)


def width() -> int | None:
    """Columns to lay tables out for: None (the terminal's own) when stdout is a terminal."""
    env = os.environ.get("COLUMNS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return None if os.isatty(1) else PIPE_WIDTH


def console():
    """The stdout console every command prints its tables on."""
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False, width=width())


def _text(cell: Cell) -> Text:
    return cell if isinstance(cell, Text) else Text(str(cell))


def _frame(widths: Sequence[int]) -> int:
    """Width of a rich table with these column widths: padding 1 each side, a border between."""
    return sum(widths) + 3 * len(widths) + 1


def layout(columns: Sequence, rows: Sequence[Sequence[Cell]], available: int, *,
           wide: bool = False) -> tuple[list[int], list[int] | None]:
    """(indices of the columns shown, their widths or None for natural widths)."""
    n = len(columns)
    longest = [max([_text(r[i]).cell_len for r in rows] or [0]) for i in range(n)]
    natural = _natural(columns, rows)
    shown = list(range(n))
    if wide or _frame(natural) <= available:
        return shown, None
    word = [max([cell_len(w) for w in columns[i].header.split()] or [0]) for i in range(n)]
    tight = [max(word[i], min(longest[i], FOLD_MIN) if columns[i].fold else longest[i]) for i in range(n)]
    order = sorted((i for i in range(n) if columns[i].priority > 0), key=lambda i: (columns[i].priority, i))
    while _frame([tight[i] for i in shown]) > available and order:
        shown.remove(order.pop())
    widths = {i: tight[i] for i in shown}
    spare = available - _frame(list(widths.values()))
    # The room left unwraps headers (essential columns first), then is shared among the
    # folding columns in proportion to what each still lacks.
    for i in sorted((i for i in shown if not columns[i].fold), key=lambda i: (columns[i].priority, i)):
        grow = max(0, min(spare, natural[i] - widths[i]))
        widths[i] += grow
        spare -= grow
    lacking = {i: natural[i] - widths[i] for i in shown if columns[i].fold and natural[i] > widths[i]}
    total = sum(lacking.values())
    for i, lack in lacking.items():
        widths[i] += min(lack, spare * lack // total)
    return shown, [widths[i] for i in shown]


def table(columns: Sequence, rows: Sequence[Sequence[Cell]], *, available: int, wide: bool = False,
          title: Cell | None = None, caption: str | None = None, title_justify: str = "center",
          row_styles: Sequence[str | None] | None = None):
    """(rich Table, headers of the columns not shown) for ``available`` columns."""
    from rich.table import Table

    shown, widths = layout(columns, rows, available, wide=wide)
    t = Table(title=title, caption=caption, title_justify=title_justify)
    for k, i in enumerate(shown):
        c = columns[i]
        t.add_column(Text(c.header, no_wrap=False, overflow="fold"), justify=c.justify, overflow="fold", no_wrap=not c.fold,
                     width=None if widths is None else widths[k])
    for j, r in enumerate(rows):
        t.add_row(*(_text(r[i]) for i in shown), style=row_styles[j] if row_styles else None)
    return t, [columns[i].header for i in range(len(columns)) if i not in shown]


def render(con, columns: Sequence, rows: Sequence[Sequence[Cell]], *, wide: bool = False, **kw) -> None:
    """Print the table on the console ``con``, then one dim line naming any columns left out."""
    available = 10**6 if wide else con.width
    t, dropped = table(columns, rows, available=available, wide=wide, **kw)
    if wide:  # as wide as it takes: the terminal (or the reader's pager) wraps, nothing is cut
        saved, con.width = con._width, max(con.width, _frame(_natural(columns, rows)))
        try:
            con.print(t)
        finally:
            con._width = saved
    else:
        con.print(t)
    if dropped:
        con.print(Text(f"not shown at {con.width} columns: {', '.join(dropped)} (--wide shows all)", style="dim"),
                  soft_wrap=True)


def _natural(columns: Sequence, rows: Sequence[Sequence[Cell]]) -> list[int]:
    return [max([cell_len(c.header)] + [_text(r[i]).cell_len for r in rows]) for i, c in enumerate(columns)]

"""The bench table, built from one list of column definitions (terminal and Markdown).

Adding a column is one ``Column`` appended to ``COLUMNS`` (or passed in ``columns=``).
Its ``priority`` says when it may be left out of a narrow terminal (0: never; the highest
numbers go first; see ``mobiledeploy.cli.table``); Markdown always has every column.
A column's ``value(result, extra)`` gets the ``BenchResult`` and ``extra``, a dict of
figures that other commands attach to that model (``extras={model_path: {...}}``), e.g.
an accuracy from ``eval`` or an estimate from ``estimate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from mobiledeploy.bench.core import BenchResult
from mobiledeploy.units import format_size


@dataclass(frozen=True)
class Column:
    header: str
    value: Callable[[BenchResult, dict], str]
    justify: str = "right"
    priority: int = 0
    fold: bool = False


def _ms(key: str) -> Callable[[BenchResult, dict], str]:
    return lambda r, x: f"{r.latency_ms[key]:.3f}" if r.ok and key in r.latency_ms else "-"


def _name(r: BenchResult) -> str:
    """The file's name, with the export's degraded mark."""
    from mobiledeploy.models.artifacts import marked

    return marked(Path(r.model).name, r.degraded)


def degraded_notes(results: Sequence[BenchResult]) -> list[str]:
    """The note under the table naming the artifacts their export marked degraded, with the figures."""
    from mobiledeploy.models.artifacts import degraded_notes as notes

    return notes((Path(r.model).name, r.degraded) for r in results)


def _num(v: float | None, fmt: str) -> str:
    return format(v, fmt) if v is not None else "-"


COLUMNS: list[Column] = [
    Column("model", lambda r, x: _name(r), "left"),
    Column("format", lambda r, x: r.format, "left", priority=3),  # the file name says it too
    Column("precision", lambda r, x: r.precision, "left", priority=1),
    Column("runtime", lambda r, x: r.runtime, "left", priority=4),
    Column("threads", lambda r, x: str(r.threads or "-"), priority=5),  # also in the title
    Column("status", lambda r, x: r.status, "left", priority=2),
    Column("size", lambda r, x: format_size(r.size_bytes), priority=1),
    Column("init ms", lambda r, x: _num(r.init_ms, ".1f") if r.ok else "-", priority=4),
    Column("p50 ms", _ms("p50")),
    Column("p90 ms", _ms("p90"), priority=3),
    Column("p99 ms", _ms("p99"), priority=2),
    Column("inf/s", lambda r, x: _num(r.throughput_ips, ".1f") if r.ok else "-", priority=5),
    Column("mem MiB", lambda r, x: _num(r.peak_rss_mb, ".1f") if r.ok else "-", priority=4),
]


def rows(results: Sequence[BenchResult], columns: Sequence[Column], extras: dict | None) -> list[list[str]]:
    extras = extras or {}
    return [[c.value(r, extras.get(r.model, {})) for c in columns] for r in results]


def md_escape(s: str) -> str:
    """Text safe inside a Markdown table cell or heading."""
    return s.replace("|", "\\|").replace("\n", " ")


def md_rows(headers: Sequence[str], justify: Sequence[str], cells: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table: header row, alignment row ("right" columns right-aligned), escaped cells."""
    align = "|" + "|".join("---:" if j == "right" else "---" for j in justify) + "|"
    return ["| " + " | ".join(headers) + " |", align, *("| " + " | ".join(md_escape(v) for v in row) + " |"
                                                       for row in cells)]


def markdown_table(results: Sequence[BenchResult], *, title: str, columns: Sequence[Column] | None = None,
                   extras: dict | None = None, notes: Sequence[str] = ()) -> str:
    columns = COLUMNS if columns is None else columns
    lines = [f"### {md_escape(title)}", "",
             *md_rows([c.header for c in columns], [c.justify for c in columns], rows(results, columns, extras))]
    errors = [f"- `{Path(r.model).name}`: {md_escape(r.error or '')}" for r in results if not r.ok]
    if errors:
        lines += ["", "Errors:", ""] + errors
    notes = [*notes, *degraded_notes(results)]
    if notes:
        lines += ["", *[f"Note: {md_escape(n)}" for n in notes]]
    return "\n".join(lines) + "\n"

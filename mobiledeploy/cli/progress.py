"""Where every command's progress events (``mobiledeploy.progress.Progress``) are drawn, on stderr.

On a terminal: a live status line showing the item under way (``"start"`` events), or with
``steps=True`` one row per step with its elapsed time (export); items that had no start
event (training epochs, sweep configs) and notes are printed as lines. When stderr is not
a terminal (a CI log): plain lines, one as each item starts and one as it ends, so a slow
step is never silent and a log shows where a run stopped.
"""

from __future__ import annotations

import contextlib
import time
from typing import Iterator

from rich.text import Text

from mobiledeploy.cli.common import stderr_console
from mobiledeploy.progress import OnProgress, Progress


class _Lines:
    """Status-line (terminal) or plain-line (CI) rendering."""

    def __init__(self, console, status=None, style: str | None = None):
        self.console, self._status, self._live, self._style = console, status, False, style

    def __call__(self, p: Progress) -> None:
        if p.kind == "note":
            self._print(p)
        elif p.kind == "start" and self._status is not None:
            self._live = True
            self._status.update(p.message)
        elif p.kind == "start" or self._status is None or not self._live:
            self._print(p)

    def _print(self, p: Progress) -> None:
        text = Text(p.message, style=self._style or "")
        if p.failed:
            text.highlight_words(["FAILED"], "red")
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)


class _Steps:
    """One row per step with its time: rich's progress display (terminal) or two plain lines (CI)."""

    def __init__(self, console, display=None):
        self.console, self._display, self._tasks, self._t0 = console, display, {}, {}

    def __call__(self, p: Progress) -> None:
        if p.kind == "note":
            self.console.print(p.message, markup=False, highlight=False, soft_wrap=True)
        elif self._display is None:
            if p.kind == "start":
                self._t0[p.message] = time.perf_counter()
                self.console.print(f"{p.message} ...", markup=False, highlight=False)
            elif not p.failed:  # a step that failed ends in the command's error line
                t0 = self._t0.pop(p.message, None)
                seconds = p.metrics.get("seconds", time.perf_counter() - t0 if t0 is not None else 0.0)
                self.console.print(f"{p.message}: done in {seconds:.1f} s", markup=False, highlight=False)
        elif p.kind == "start":
            self._tasks[p.message] = self._display.add_task(p.message, total=1)
            self._display.refresh()
        else:
            task = self._tasks.pop(p.message, None)
            if task is not None:
                self._display.update(task, completed=1)
                self._display.stop_task(task)
            self._display.refresh()


def progress_lines(*, style: str | None = None, console=None) -> OnProgress:
    """A ``progress`` callback printing every event as a line on stderr (no live display), in ``style``."""
    return _Lines(console or stderr_console(), style=style)


@contextlib.contextmanager
def progress_renderer(*, steps: bool = False, status: bool = True, console=None) -> Iterator[OnProgress]:
    """A ``progress`` callback drawing on stderr for the duration of the block.

    ``steps``: one row per step with its time (export); ``status`` False: lines only, no live
    status line (commands whose every event is a line: sweep, train)."""
    err = console or stderr_console()
    if not err.is_terminal or not status:
        yield _Steps(err) if steps else progress_lines(console=err)
    elif steps:
        from rich.progress import Progress as Display, SpinnerColumn, TextColumn, TimeElapsedColumn

        # Refreshed by hand at each step: converters silence fds 1/2 while they run, and a
        # background refresh into that silence would desynchronise the live display.
        with Display(SpinnerColumn(finished_text="[green]✓[/]"), TextColumn("{task.description}"),
                     TimeElapsedColumn(), console=err, transient=False, auto_refresh=False) as display:
            yield _Steps(err, display)
    else:
        with err.status("") as status:
            yield _Lines(err, status)

"""The one progress event every command's library call reports, and its callback type.

The library never prints. A long call (``export_model``, ``bench_models``, ``run_bench``,
``run_eval``, ``train``, ``run_sweep``, ``run_checks``) takes ``progress: OnProgress | None``
and calls it with a ``Progress`` as work starts and ends; the command line renders every
event in one place (``mobiledeploy.cli.progress``): a live line on a terminal, plain lines
in a CI log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

KINDS = ("start", "end", "note")


@dataclass(frozen=True)
class Progress:
    """One step of a long call.

    ``kind``: ``"start"`` (an item begins: a terminal shows it as the live line),
    ``"end"`` (it finished: ``message`` says how) or ``"note"`` (a line to keep in any
    case, such as a warning). ``done``/``total`` count the items of the stage when known;
    ``metrics`` holds the figures behind the message (seconds, loss, ...); ``failed``
    marks an item that ended in an error.
    """

    stage: str  # export, bench, profile, eval, per-layer, train, sweep, check
    message: str
    kind: str = "end"
    done: int | None = None
    total: int | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    failed: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Progress.kind must be one of {', '.join(KINDS)}, not {self.kind!r}")


OnProgress = Callable[[Progress], None]


def emit(progress: OnProgress | None, stage: str, message: str, kind: str = "end", **kw) -> None:
    """Call ``progress`` with one event, when there is a callback."""
    if progress is not None:
        progress(Progress(stage, message, kind, **kw))

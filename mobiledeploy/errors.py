"""One error hierarchy; the CLI turns these into one stderr line and an exit code.

- ``UsageError``  (exit 2): the user asked for something that cannot be: bad flag
  values, unknown names, missing or unreadable input paths, bad config files, and
  data sets that are empty, unreadable or not finite (``DataError``).
- ``MobiledeployError`` (exit 1): a failure while doing valid work: a conversion that
  failed, a validation out of tolerance, a runtime that crashed, a budget broken.

Library code raises these with a message that names the offending value and, where
there is one, the flag that fixes it. Everything else that escapes is a bug and is
reported as "internal error" (with the traceback only under ``--debug``).
"""

from __future__ import annotations


class MobiledeployError(Exception):
    """A failure while doing valid work (exit code 1)."""

    exit_code = 1


class UsageError(MobiledeployError):
    """Bad input from the user: flags, paths, config files (exit code 2)."""

    exit_code = 2


class ConversionError(MobiledeployError):
    """A converter (TFLite, tf2onnx, ONNX Runtime quantization) failed."""


class ValidationError(MobiledeployError):
    """An exported artifact is broken: shape or dtype differs from the source model."""


class ToleranceError(ValidationError):
    """An exported float artifact is numerically off by more than the tolerance."""


class RuntimeFailure(MobiledeployError):
    """A runtime could not load or run a model (or crashed / timed out in its child)."""


class DataError(UsageError):
    """A data set could not be read or has no usable samples (empty, not finite): bad input, exit 2."""


class BudgetError(MobiledeployError):
    """One or more budgets are broken (``mobiledeploy check``)."""


def one_line(e: BaseException, limit: int | None = 300, *, typed: bool = False) -> str:
    """``e``'s message for an error line: whitespace (newlines included) collapsed to single
    spaces, cut to ``limit`` characters (``None``: uncut), and the exception's type name
    when the message is empty. ``typed`` puts the type name in front (``"ValueError: ..."``),
    for exceptions raised by other libraries, where the type tells what went wrong."""
    msg = " ".join(str(e).split())
    if limit is not None:
        msg = msg[:limit]
    name = type(e).__name__
    if typed:
        return f"{name}: {msg}" if msg else name
    return msg or name

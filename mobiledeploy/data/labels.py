"""Labels from file names: ``--label-pattern 'imagenet_\\d+_(\\d+)'`` gives each image's class id.

The pattern is searched in each file name (sub-folders included); its first group (or
the group named ``label``) must be an integer class id. A file the pattern does not
match is an error naming it, never a silently dropped sample. Class names come from
``--labels``.
"""

from __future__ import annotations

import re
from pathlib import Path

from mobiledeploy.errors import DataError, UsageError


def compile_pattern(pattern: str) -> re.Pattern:
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise UsageError(f"--label-pattern {pattern!r} is not a regular expression: {e}") from None
    if rx.groups < 1:
        raise UsageError(f"--label-pattern {pattern!r} needs a group that captures the class id, "
                         r"e.g. 'imagenet_\d+_(\d+)'")
    return rx


def label_of(rx: re.Pattern, name: str) -> int:
    m = rx.search(name)
    if not m:
        raise UsageError(f"file {name!r} does not match --label-pattern {rx.pattern!r}")
    text = m.group("label") if "label" in rx.groupindex else m.group(1)
    try:
        return int(text)
    except (TypeError, ValueError):
        raise UsageError(f"--label-pattern {rx.pattern!r} captured {text!r} from {name!r}, "
                         "not an integer class id") from None


def pattern_entries(folder: Path, pattern: str, files: list[Path]) -> list[tuple[Path, int]]:
    """(image file, class id) for each of ``files``, the images under ``folder``."""
    rx = compile_pattern(pattern)
    if not files:
        raise DataError(f"no images in {str(folder)!r} (--data)")
    return [(f, label_of(rx, f.name)) for f in files]

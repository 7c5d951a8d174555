"""Options and output helpers shared by the subcommands (written once, used by all)."""

from __future__ import annotations

import functools
import os

import click


def csv_choice(value: str | None, allowed: tuple[str, ...], flag: str) -> tuple[str, ...]:
    """Parse a comma list such as ``fp32,int8`` and reject unknown names (usage error)."""
    if value is None:
        return ()
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    if not items:
        raise click.BadParameter(f"empty list; choose from {', '.join(allowed)}", param_hint=flag)
    bad = [v for v in items if v not in allowed]
    if bad:
        raise click.BadParameter(
            f"unknown value {bad[0]!r}; choose from {', '.join(allowed)}", param_hint=flag)
    return tuple(dict.fromkeys(items))


def json_option(f):
    return click.option("--json", "json_path", type=click.Path(dir_okay=False, writable=True),
                        help="Also write the results as JSON to this path ('-' for stdout).")(f)


def md_option(f):
    return click.option("--md", "md_path", type=click.Path(dir_okay=False, writable=True),
                        help="Also write the results as a Markdown table to this path.")(f)


def target_options(f):
    """--target NAME / --target-file PATH, shared by bench, check and estimate."""
    f = click.option("--target-file", type=click.Path(exists=True, dir_okay=False),
                     help="Use your own target profile (TOML) instead of a shipped one.")(f)
    f = click.option("--target", "target_name", default=None, metavar="NAME",
                     help="Target profile (see `mobiledeploy targets`); default: host.")(f)
    return f


def stdout_console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False, width=None if os.isatty(1) else 200)


def stderr_console():
    from rich.console import Console

    # Not a terminal (CI logs): never break a progress line in the middle.
    return Console(stderr=True, highlight=False, soft_wrap=not os.isatty(2))


def emit_json(path: str | None, obj) -> None:
    """Write ``obj`` as JSON to ``path`` atomically, or to stdout when path is '-'."""
    if not path:
        return
    import json

    from mobiledeploy import io

    if path == "-":
        click.echo(json.dumps(obj, indent=2, default=io._json_default))
    else:
        io.write_json(path, obj)


def _parse_shapes(ctx, param, values) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for v in values:
        name, sep, dims = v.rpartition("=")
        try:
            shape = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            shape = ()
        if not sep or not name or not shape or any(d < 1 or d > 2**31 - 1 for d in shape):
            raise click.BadParameter(f"expected NAME=DIMS such as input=1x224x224x3, got {v!r}", param_hint="--shape")
        if name in shapes:
            raise click.BadParameter(f"input {name!r} is given twice", param_hint="--shape")
        shapes[name] = shape
    return shapes


def shape_option(f):
    """--shape NAME=DIMS (repeatable, one per input): concrete dims for dynamic inputs."""
    return click.option("--shape", "shapes", multiple=True, callback=_parse_shapes, metavar="NAME=DIMS",
                        help="Concrete shape for a dynamic input, e.g. input=1x224x224x3 (repeatable).")(f)


class Seconds(click.ParamType):
    """A duration: a finite number of seconds > 0 and at most a day (no inf, nan, 0 or negatives)."""

    name = "SECONDS"
    MAX = 86400.0

    def convert(self, value, param, ctx):
        from mobiledeploy.models.limits import finite

        if isinstance(value, float) or value is None:
            return value
        try:
            return finite(value, "", low=0.0, low_open=True, high=self.MAX)
        except Exception as e:
            self.fail(str(e).lstrip(" ").replace(" must", "must", 1), param, ctx)

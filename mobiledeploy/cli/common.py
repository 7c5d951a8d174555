"""Options and output helpers shared by the subcommands (written once, used by all)."""

from __future__ import annotations

import contextlib
import os

import click

from mobiledeploy import io, options as opts
from mobiledeploy.cli.table import console
from mobiledeploy.guards import finite


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


def wide_option(f):
    return click.option("--wide", is_flag=True,
                        help="Show every table column, however wide (default: fit the terminal, "
                             "or $COLUMNS, else 80 columns when piped).")(f)


def stdout_console():
    return console()


def stderr_console():
    from rich.console import Console

    # Not a terminal (CI logs): never break a progress line in the middle.
    return Console(stderr=True, highlight=False, soft_wrap=not os.isatty(2))


@contextlib.contextmanager
def warnings_to_stderr():
    """Python warnings raised inside (an op the cost model does not know, ...) as one
    ``warning: MESSAGE`` line each on stderr, without ``warnings.warn``'s file and source line."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            err = stderr_console()
            for w in caught:
                err.print(f"warning: {w.message}", markup=False)


def emit_json(path: str | None, obj) -> None:
    """Write ``obj`` as JSON to ``path`` atomically, or to stdout when path is '-'.

    Every command's --json goes through here: the document gets the version, time and
    machine stamp (``io.stamp``) and the one encoding of non-finite numbers (``io.dumps``).
    """
    if not path:
        return

    doc = io.stamp(obj) if isinstance(obj, dict) else obj
    if path == "-":
        click.echo(io.dumps(doc))
    else:
        io.write_json(path, doc)


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
        if isinstance(value, float) or value is None:
            return value
        try:
            return finite(value, "", low=0.0, low_open=True, high=self.MAX)
        except Exception as e:
            self.fail(str(e).lstrip(" ").replace(" must", "must", 1), param, ctx)


def _click_kwargs(f) -> tuple[list[str], dict]:
    """The @click.option declarations and keywords for one ``options.option`` field."""
    m = f.metadata["option"]
    default = opts.default_of(f)
    spec = m["flag"] or "--" + f.name.replace("_", "-")
    decls = [spec] if spec.split("/")[0].lstrip("-").replace("-", "_") == f.name else [spec, f.name]
    kw: dict = {"help": m["help"]}
    check, flag = m["check"], opts.flag_of(f)
    if m["metavar"]:
        kw["metavar"] = m["metavar"]
    if m["multiple"]:
        kw["multiple"] = True
    if default is opts.MISSING:  # a field without a default: a required option, unless declared otherwise
        kw["required"], default = m["required"] is not False, None
    if m["flag_value"] is not opts.MISSING:
        kw.update(flag_value=m["flag_value"], default=default)
    elif "/" in spec:
        kw["default"] = default
    elif isinstance(default, bool):
        kw.update(is_flag=True, default=default)
    else:
        kw["default"] = default
        if m["cli_default"] is not opts.MISSING:
            parse = m["parse"]
            kw.update(default=m["cli_default"], callback=lambda ctx, param, value: parse(value))
        elif isinstance(check, opts.Names):
            kw.update(default=",".join(default) or None,
                      callback=lambda ctx, param, value: csv_choice(value, tuple(check.choices), flag))
        elif isinstance(check, opts.AtLeast):
            kw["type"] = click.IntRange(min=check.low)
        elif isinstance(check, opts.OneOf):
            kw["type"] = click.Choice(tuple(check.choices))
        elif isinstance(check, opts.Seconds):
            kw["type"] = Seconds()
        elif isinstance(check, opts.Finite):
            lo, hi = (int(b) if b is not None and float(b).is_integer() else b for b in (check.low, check.high))
            kw["type"] = click.FloatRange(lo, hi, min_open=check.low_open, max_open=check.high_open)
        elif m["path"]:
            kw["type"] = click.Path(exists=m["exists"], file_okay=m["path"] != "dir", dir_okay=m["path"] != "file")
        elif m["type"] is not None:
            kw["type"] = m["type"]
        elif isinstance(default, (int, float)):
            kw["type"] = type(default)
    show = m["show_default"]
    if show is None:
        show = kw.get("default") is not None and not kw.get("is_flag") and m["flag_value"] is opts.MISSING
    if show:
        kw["show_default"] = True
    return decls, kw


def click_options(config_cls, *names: str):
    """Decorator: one @click.option per named field of ``config_cls``, in this order, built from the
    field's declaration (``mobiledeploy.options.option``): flag, default, help and check written once."""
    declared = opts.declared(config_cls)
    missing = [n for n in names if n not in declared]
    if missing:
        raise TypeError(f"{config_cls.__name__} declares no option {missing[0]!r}")

    def decorate(fn):
        for name in reversed(names):
            decls, kw = _click_kwargs(declared[name])
            fn = click.option(*decls, **kw)(fn)
            fn.__click_params__[-1].declared_by = config_cls  # tests/test_options.py: built here, not by hand
        return fn

    return decorate

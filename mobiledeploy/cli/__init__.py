"""The command line: one thin Click layer over the library.

Subcommands live one per module in this package and are imported only when invoked
(or when ``--help`` lists them), so start-up never pays for TensorFlow. Every library
error is translated here, once, into one ``error: ...`` line on stderr and an exit code
(2 for usage errors, 1 for failures); tracebacks only with ``--debug``.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback

import click

from mobiledeploy import __version__
from mobiledeploy.errors import MobiledeployError, one_line
from mobiledeploy.quiet import quiet_tensorflow
from mobiledeploy.lockcheck import note_drift as note_lock_drift

# name -> (module, attribute, one-line help). Adding a command is one line here.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "export": ("mobiledeploy.cli.export", "export", "Build or load a model and export TFLite/ONNX artifacts."),
    "info": ("mobiledeploy.cli.info", "info", "Parameters and multiply-accumulates, per layer."),
    "bench": ("mobiledeploy.cli.bench", "bench", "Measure latency on LiteRT and ONNX Runtime."),
    "targets": ("mobiledeploy.cli.targets", "targets", "List the mobile CPU target profiles."),
    "target": ("mobiledeploy.cli.target", "target", "Work with target profiles (calibrate)."),
    "estimate": ("mobiledeploy.cli.estimate", "estimate", "Estimate on-device latency from a per-layer cost model."),
    "train": ("mobiledeploy.cli.train", "train", "Train a MobileNet on a labelled data set."),
    "eval": ("mobiledeploy.cli.eval", "eval_", "Accuracy and agreement of models on labelled data."),
    "check": ("mobiledeploy.cli.check", "check", "Check size, latency and accuracy budgets (for CI)."),
    "sweep": ("mobiledeploy.cli.sweep", "sweep", "Sweep alpha x resolution x precision: Pareto front, report."),
}

_debug = False


def _debug_requested(args) -> bool:
    return _debug or "--debug" in (args or ()) or os.environ.get("MOBILEDEPLOY_DEBUG") == "1"


class _Group(click.Group):
    """Lazy subcommands and the one place where errors become exit codes."""

    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        spec = COMMANDS.get(name)
        if spec is None:
            return None
        module = importlib.import_module(spec[0])
        return getattr(module, spec[1])

    def format_commands(self, ctx, formatter):
        # List commands from the table, without importing their modules.
        rows = [(name, spec[2]) for name, spec in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        global _debug
        _debug = False
        quiet_tensorflow()
        if args is None:
            args = sys.argv[1:]
        note_lock_drift(args)  # one stderr note when converter/runtime versions differ from requirements.lock
        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                              standalone_mode=False, **extra)
        except click.exceptions.Exit as e:
            code = e.exit_code
        except click.exceptions.Abort as e:
            if isinstance(e.__context__, EOFError):  # Click turns any EOFError into Abort: not a Ctrl-C
                if _debug_requested(args):
                    traceback.print_exception(e.__context__)
                click.echo(f"error: internal error: {one_line(e.__context__, None, typed=True)} "
                           "(run with --debug for the traceback)", err=True)
                code = 1
            else:
                click.echo("error: aborted", err=True)
                code = 130
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            code = 130
        except click.ClickException as e:
            click.echo(f"error: {e.format_message()}", err=True)
            code = e.exit_code
        except MobiledeployError as e:
            if _debug_requested(args):
                traceback.print_exc()
            click.echo(f"error: {e}", err=True)
            code = e.exit_code
        except Exception as e:  # a bug, not a user error: say so, briefly
            if _debug_requested(args):
                traceback.print_exc()
            click.echo(f"error: internal error: {one_line(e, None, typed=True)} (run with --debug for the traceback)",
                       err=True)
            code = 1
        else:
            code = rv if isinstance(rv, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mobiledeploy")
@click.option("--debug", is_flag=True, help="Show Python tracebacks on errors.")
def cli(debug: bool) -> None:
    """mobiledeploy: take an image model from Keras to a phone and prove what it costs.

    Host timings are host timings: under a --target profile they are the host's
    latency with that device's threads and runtime settings, never the phone's.
    """
    global _debug
    _debug = debug


def main() -> None:
    cli.main(prog_name="mobiledeploy")

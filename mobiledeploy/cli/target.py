"""`mobiledeploy target ...`: work with target profiles (calibrate)."""

from __future__ import annotations

import click

from mobiledeploy.cli.common import csv_choice, emit_json, json_option, stdout_console, target_options, wide_option
from mobiledeploy.cli.table import Column, render

# The cost model and its fit (numpy, scipy) are imported inside the commands: `target --help` loads neither.


SHOWN_ROWS = 50  # rows of the fit table on the terminal


@click.group("target")
def target() -> None:
    """Work with target profiles."""


@target.command("calibrate")
@target_options
@click.option("--measurements", required=True, multiple=True, metavar="[MODEL=]FILE",
              help="Device latencies (repeatable): a CSV (latency_ms plus model or arch,alpha,res; optional "
                   "precision, threads, classes), benchmark_model output or its op-profile CSV, an ONNX "
                   "Runtime profile JSON, or a `bench --json` file. MODEL= names the model file the "
                   "measurement is of, when the file does not.")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="Where to write the calibrated target profile (.toml).")
@click.option("--params", default=None,
              help="Comma list of parameters to fit (scale, compute, memory, int8, threads, overhead, "
                   "depthwise); default: 1 row scale, 2 compute+memory, 3+ adds overhead.")
@click.option("--name", default=None, help="Name of the new target (default: the --out file's stem).")
@json_option
@wide_option
def calibrate(target_name, target_file, measurements, out, params, name, json_path, wide):
    """Fit a target's cost model to latencies measured on the device; write a new target.

    Least squares on log latency, bounded to physical values; one measurement fits a
    global scale, two the compute and memory terms, three or more the per-op overhead too.
    The written target records the residuals and a leave-one-out error.
    """
    from mobiledeploy.cost.model import FIT_PARAMS
    from mobiledeploy.targets.calibrate import CalibrateConfig
    from mobiledeploy.targets.calibrate import calibrate as run_calibrate

    chosen = csv_choice(params, FIT_PARAMS + ("bandwidth",), "--params") or None
    result = run_calibrate(CalibrateConfig(measurements=measurements, out=out, target=target_name,
                                           target_file=target_file, params=chosen, name=name))
    emit_json(json_path, result.to_json())
    if json_path == "-":
        return

    fit = result.fit
    cols = (Column("model"), Column("precision", priority=1), Column("threads", "right", priority=2),
            Column("measured ms", "right"), Column("estimate ms", "right"), Column("error", "right"),
            Column("left-out error", "right", priority=1))
    loo = fit.loo_errors_pct or (None,) * len(fit.rows)
    rows = [(r.label, r.precision, str(r.threads), f"{r.latency_ms:.2f}", f"{e:.2f}", f"{err:+.1f}%",
             "-" if lo is None else f"{lo:+.1f}%")
            for r, e, err, lo in zip(fit.rows, fit.estimates_ms, fit.errors_pct, loo)]
    con = stdout_console()
    render(con, cols, rows[:SHOWN_ROWS], title=f"fit of {result.target} (in-sample)", wide=wide)
    if len(rows) > SHOWN_ROWS:
        con.print(f"... {len(rows) - SHOWN_ROWS} more row(s) (all of them: --json, and the written target)",
                  markup=False)
    held_out = f"{fit.loo_folds}-fold" if fit.loo_folds else "leave-one-out"
    con.print(f"fitted {', '.join(fit.params)} on {len(fit.rows)} row(s): median |error| "
              f"{fit.median_abs_error_pct:.1f}%, worst {fit.worst_abs_error_pct:.1f}%"
              + (f"; {held_out} median {fit.loo_median_abs_error_pct:.1f}%, worst {fit.loo_worst_abs_error_pct:.1f}%"
                 if fit.loo_errors_pct else "") + f"; wrote {result.out}", markup=False)

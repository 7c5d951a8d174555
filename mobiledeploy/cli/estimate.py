"""`mobiledeploy estimate`: on-device latency from the target's per-layer cost model."""

from __future__ import annotations

import click

from mobiledeploy.cli.common import (emit_json, json_option, shape_option, stderr_console, stdout_console,
                                     target_options, warnings_to_stderr, wide_option)
from mobiledeploy.cli.table import Column, render
from mobiledeploy.cli.info import ARCH_CHOICES


@click.command("estimate")
@click.argument("model", required=False, type=click.Path(exists=True))
@click.option("--arch", type=click.Choice(ARCH_CHOICES), default=None,
              help="Architecture to build (instead of a MODEL file).  [default: mobilenet_v1]")
@click.option("--alpha", type=click.FloatRange(min=0.0, min_open=True), default=None, help="Width multiplier.")
@click.option("--res", "resolution", type=click.IntRange(min=32), default=None, help="Input resolution.")
@click.option("--classes", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--precision", type=click.Choice(("fp32", "int8")), default=None,
              help="Precision to estimate a Keras model/config at (files: their own precision).")
@target_options
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Device threads (default: the target's [run].threads).")
@click.option("--layers/--no-layers", "show_layers", default=True, show_default=True,
              help="Print the per-layer breakdown.")
@shape_option
@json_option
@wide_option
def estimate(model, arch, alpha, resolution, classes, precision, target_name, target_file, threads,
             show_layers, shapes, json_path, wide):
    """Estimate MODEL's latency ON THE DEVICE of --target (a cost model, not a measurement).

    Per layer: max(MACs / (peak x efficiency), bytes moved / bandwidth) + overhead, with
    the target's fitted [cost_model] parameters (see `mobiledeploy target calibrate`).
    """
    from mobiledeploy.cost.estimate import EstimateConfig
    from mobiledeploy.cost.estimate import estimate as run_estimate

    if model is not None and (arch or alpha is not None or resolution is not None):
        raise click.UsageError("give either a MODEL file or --arch/--alpha/--res, not both")
    if shapes and model is None:
        raise click.UsageError("--shape applies to a MODEL file with dynamic inputs, not to --arch configs")
    cfg = EstimateConfig(model=model, arch=arch or "mobilenet_v1", alpha=1.0 if alpha is None else alpha,
                         resolution=224 if resolution is None else resolution, classes=classes,
                         precision=precision, target=target_name, target_file=target_file, threads=threads,
                         shapes=shapes or None)
    with warnings_to_stderr():
        result = run_estimate(cfg)
    err = stderr_console()
    emit_json(json_path, result.to_json())
    if json_path == "-":  # JSON on stdout: nothing else there
        return
    con = stdout_console()
    if show_layers:
        cols = (Column("layer", fold=True), Column("class", priority=1), Column("MACs", "right"),
                Column("bytes", "right", priority=2), Column("bound", priority=1), Column("est. µs", "right"))
        render(con, cols, [(x.name, x.op_class, f"{x.macs:,}", f"{x.bytes_moved:,}", x.bound, f"{x.estimate_us:.1f}")
                           for x in result.layers], wide=wide)
        con.print("by class (ms): " + ", ".join(f"{k} {v:.2f}" for k, v in result.by_class_ms.items()))
    for note in result.notes:
        err.print(f"note: {note}", markup=False)
    con.print(f"estimated latency on {result.target} ({result.precision}, {result.threads} thread(s)): "
              f"{result.latency_ms:.2f} ms  [{result.label}]", markup=False)

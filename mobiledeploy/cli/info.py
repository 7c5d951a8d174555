"""`mobiledeploy info`: parameters and multiply-accumulates, total and per layer."""

from __future__ import annotations

import click

from mobiledeploy.cli.common import (emit_json, json_option, shape_option, stdout_console, warnings_to_stderr,
                                     wide_option)
from mobiledeploy.cli.table import Column, render

# The layer readers (numpy, the runtimes) are imported inside the command: `info --help` loads neither.

ARCH_CHOICES = ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large")


def config_options(f):
    """--arch/--alpha/--res/--classes/--depth-multiplier (shared by info and estimate)."""
    f = click.option("--depth-multiplier", type=click.IntRange(min=1), default=1, show_default=True,
                     help="MobileNet V1 depthwise multiplier.")(f)
    f = click.option("--classes", type=click.IntRange(min=1), default=1000, show_default=True,
                     help="Number of output classes.")(f)
    f = click.option("--res", "resolution", type=click.IntRange(min=32), default=None,
                     help="Input resolution (square), e.g. 224.  [default: 224]")(f)
    f = click.option("--alpha", type=click.FloatRange(min=0.0, min_open=True), default=None,
                     help="Width multiplier, e.g. 0.25.  [default: 1.0]")(f)
    f = click.option("--arch", type=click.Choice(ARCH_CHOICES), default=None,
                     help="Architecture to build (instead of a MODEL file).  [default: mobilenet_v1]")(f)
    return f


def stats_for(model, arch, alpha, resolution, classes, depth_multiplier, shapes=None):
    """ModelStats for a MODEL file or a config; a usage error when both or neither are given."""
    from mobiledeploy.cost import info as info_lib

    if model is not None:
        if arch is not None or alpha is not None or resolution is not None:
            raise click.UsageError("give either a MODEL file or --arch/--alpha/--res, not both")
        return info_lib.model_stats(model, shapes=shapes)
    if shapes:
        raise click.UsageError("--shape applies to a MODEL file with dynamic inputs, not to --arch configs")
    return info_lib.config_stats(arch or "mobilenet_v1", alpha=1.0 if alpha is None else alpha,
                                 resolution=224 if resolution is None else resolution,
                                 classes=classes, depth_multiplier=depth_multiplier)


def fmt_shape(shape) -> str:
    return "x".join(str(d) for d in shape)


@click.command("info")
@click.argument("model", required=False, type=click.Path(exists=True))
@config_options
@click.option("--layers/--no-layers", "show_layers", default=True, show_default=True,
              help="Print the per-layer table.")
@shape_option
@json_option
@wide_option
def info(model, arch, alpha, resolution, classes, depth_multiplier, show_layers, shapes, json_path, wide):
    """Parameters and multiply-accumulates of MODEL (.keras/.h5/.tflite/.onnx) or of a config.

    Counting follows the MobileNet paper: MACs of convolutions and the classifier only;
    parameters as deployed (BatchNorm folded into one bias per channel). Activations
    fused into a conv are listed with it, as LiteRT runs them.
    """
    with warnings_to_stderr():
        stats = stats_for(model, arch, alpha, resolution, classes, depth_multiplier, shapes)
    emit_json(json_path, stats.to_json())
    if json_path == "-":  # JSON on stdout: nothing else there
        return
    con = stdout_console()
    if show_layers:
        cols = (Column("#", "right", priority=2), Column("layer", fold=True), Column("type", priority=2),
                Column("class", priority=1), Column("output", priority=1), Column("params", "right"),
                Column("MACs", "right"))
        rows = [(str(i), layer.name + (f" (+{len(layer.fused)} fused)" if layer.fused else ""), layer.type,
                 layer.op_class, fmt_shape(layer.output_shape), f"{layer.params:,}", f"{layer.macs:,}")
                for i, layer in enumerate(stats.layers)]
        render(con, cols, rows, wide=wide)
    what = stats.arch or stats.source
    detail = ", ".join(x for x in (
        f"alpha {stats.alpha:g}" if stats.alpha is not None else "",
        f"resolution {stats.resolution}" if stats.resolution else "",
        stats.format, stats.precision) if x)
    con.print(f"{what} ({detail}): {stats.params:,} parameters ({stats.params / 1e6:.2f} M), "
              f"{stats.macs:,} MACs ({stats.macs / 1e6:.1f} M), {len(stats.layers)} layers", markup=False)

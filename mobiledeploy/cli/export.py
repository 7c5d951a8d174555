"""`mobiledeploy export`: options -> ExportConfig -> export_model -> table."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import click

from mobiledeploy.cli.common import csv_choice, emit_json, json_option, stderr_console, stdout_console, wide_option
from mobiledeploy.export.formats import DEFAULT_FORMATS, DEFAULT_PRECISIONS, FORMATS, PRECISIONS
from mobiledeploy.export.recipes import ONNX_CALIBRATION, ONNX_QUANT_TYPES


@click.command("export")
@click.option("--model", "model_path", type=click.Path(), default=None,
              help="Load this model (.keras, .h5 or a SavedModel directory) instead of building one.")
@click.option("--unsafe-load", is_flag=True,
              help="Allow models that need unsafe deserialization (Lambda layers). Only for files you trust.")
@click.option("--arch", default="mobilenet_v1", show_default=True, metavar="NAME",
              help="mobilenet_v1, mobilenet_v2, mobilenet_v3_small or mobilenet_v3_large.")
@click.option("--alpha", type=float, default=1.0, show_default=True, help="Width multiplier (> 0).")
@click.option("--res", "resolution", type=int, default=224, show_default=True, help="Input resolution (>= 32).")
@click.option("--depth-multiplier", type=int, default=1, show_default=True, help="Depth multiplier (mobilenet_v1).")
@click.option("--classes", type=int, default=1000, show_default=True, help="Number of output classes.")
@click.option("--dropout", type=float, default=1e-3, show_default=True, help="Dropout before the classifier.")
@click.option("--weights", type=click.Path(), default=None,
              help="'imagenet' (Keras' official file from $KERAS_HOME/models, never downloaded) or a local Keras "
                   "weights file (.h5, .weights.h5); default random init.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for random init and data sampling.")
@click.option("--quant", default=",".join(DEFAULT_PRECISIONS), show_default=True,
              help=f"Comma list of precisions: {', '.join(PRECISIONS)}.")
@click.option("--formats", default=",".join(DEFAULT_FORMATS), show_default=True,
              help=f"Comma list of formats: {', '.join(FORMATS)} (keras saves the source model).")
@click.option("--int8-io", is_flag=True, help="int8 TFLite with int8 input and output tensors.")
@click.option("--onnx-quant-types", type=click.Choice(ONNX_QUANT_TYPES), default=None,
              help="ONNX int8 activation/weight types (default: chosen for this CPU, see docs/export.md).")
@click.option("--per-tensor", is_flag=True,
              help="int8 weights with one scale per tensor instead of per output channel (for comparison).")
@click.option("--onnx-calibration", type=click.Choice(ONNX_CALIBRATION), default="minmax", show_default=True,
              help="ONNX Runtime's activation calibration method for int8.")
@click.option("--bias-correction/--no-bias-correction", default=None,
              help="Correct the mean shift int8 weight rounding causes, per channel, on the calibration data "
                   "(default: on for trained weights, off for random init).")
@click.option("--float-layers", default="auto", show_default=True, metavar="auto|none|NAMES",
              help="Keras convolution layers kept in float inside int8 artifacts: auto (the first 3 for trained "
                   "weights, none for random init), none, or a comma list of layer names.")
@click.option("--calib", default=None, metavar="SOURCE",
              help="Calibration data: digits, random, an image folder or a .npz with an 'x' array. Default: digits; "
                   "for trained ImageNet weights the photos of `make assets` (never digits).")
@click.option("--calib-samples", type=click.IntRange(min=1), default=200, show_default=True,
              help="Number of calibration samples.")
@click.option("--preprocessing", default=None, metavar="NAME",
              help="Input preprocessing (mobilenet, raw, unit); default: the architecture's.")
@click.option("--validate-samples", type=click.IntRange(min=1), default=32, show_default=True,
              help="Held-out samples each artifact is validated on.")
@click.option("--atol", type=float, default=1e-4, show_default=True,
              help="Absolute part of the fp32 tolerance (fp16: x1000); see --rtol.")
@click.option("--rtol", type=float, default=1e-4, show_default=True,
              help="fp32 tolerance relative to the largest |reference| logit (fp16: x1000).")
@click.option("--strict/--no-strict", default=True, show_default=True,
              help="Fail the export when a float artifact is outside its tolerance.")
@click.option("--out", default="build", show_default=True, type=click.Path(file_okay=False),
              help="Output directory.")
@json_option
@wide_option
def export(model_path, unsafe_load, arch, alpha, resolution, depth_multiplier, classes, dropout, weights, seed,
           quant, formats, int8_io, onnx_quant_types, per_tensor, onnx_calibration, bias_correction, float_layers, calib, calib_samples,
           preprocessing, validate_samples, atol, rtol, strict, out, json_path, wide):
    """Build (or load) a MobileNet and export TFLite/ONNX artifacts, each validated against Keras."""
    from mobiledeploy.export.float_layers import parse_spec as parse_float_layers
    from mobiledeploy.export.pipeline import ExportConfig, export_model

    config = ExportConfig(
        arch=arch, alpha=alpha, resolution=resolution, classes=classes, depth_multiplier=depth_multiplier,
        dropout=dropout, weights=weights, seed=seed, model_path=model_path, unsafe_load=unsafe_load,
        formats=csv_choice(formats, tuple(FORMATS), "--formats"),
        precisions=csv_choice(quant, PRECISIONS, "--quant"),
        int8_io=int8_io, onnx_quant_types=onnx_quant_types, per_channel=not per_tensor,
        onnx_calibration=onnx_calibration, bias_correction=bias_correction,
        float_layers=parse_float_layers(float_layers), calib=calib, calib_samples=calib_samples,
        preprocessing=preprocessing, validate_samples=validate_samples, atol=atol, rtol=rtol, strict=strict,
        out=out)
    config.check()  # usage errors before the progress display starts
    err = stderr_console()
    with _progress(err) as step:
        result = export_model(config, progress=step,
                              warn=lambda msg: err.print(f"[yellow]warning:[/] {msg}", markup=True, soft_wrap=True))
    if json_path:  # the manifest as written, stamp included
        import json

        emit_json(json_path, json.loads(result.manifest_path.read_text()))
    if json_path != "-":  # JSON on stdout: nothing else there
        _print_table(result, wide)


@contextlib.contextmanager
def _progress(console):
    """A rich progress display on stderr: one line per slow step, with its time.

    When stderr is not a terminal (a CI log), plain lines: one as each step starts and one
    as it ends, so a slow step is never silent.
    """
    if not console.is_terminal:
        @contextlib.contextmanager
        def plain(name: str):
            t = time.perf_counter()
            console.print(f"{name} ...", markup=False, highlight=False)
            yield
            console.print(f"{name}: done in {time.perf_counter() - t:.1f} s", markup=False, highlight=False)

        yield plain
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(finished_text="[green]✓[/]"), TextColumn("{task.description}"),
                  TimeElapsedColumn(), console=console, transient=False,
                  auto_refresh=False) as progress:
        # Refreshed by hand at each step: converters silence fds 1/2 while they run, and a
        # background refresh into that silence would desynchronise the live display.

        @contextlib.contextmanager
        def step(name: str):
            task = progress.add_task(name, total=1)
            progress.refresh()
            try:
                yield
            finally:
                progress.update(task, completed=1)
                progress.stop_task(task)
                progress.refresh()

        yield step


def _print_table(result, wide: bool) -> None:
    from rich.text import Text

    from mobiledeploy.cli.table import Column, render
    from mobiledeploy.units import format_size

    m = result.model
    facts = " ".join(f"{k}={m[k]}" for k in ("alpha", "resolution", "classes") if m.get(k) is not None)
    title = Text(f"{m['arch'] or Path(m['source']).name} {facts} -> {result.out_dir}")
    cols = (Column("file"), Column("format", priority=3), Column("precision", priority=2), Column("size", "right"),
            Column("validation", fold=True))
    rows = [(a.file, a.format, a.precision, format_size(a.size_bytes), a.validation.summary) for a in result.artifacts]
    console = stdout_console()
    render(console, cols, rows, title=title, title_justify="left", wide=wide)
    cal = result.calibration
    console.print(f"calibration: {cal['samples']} samples of {cal['source']} ({cal['preprocessing']}); "
                  f"validation on {cal['validation_inputs']}; manifest: {result.manifest_path}", markup=False)

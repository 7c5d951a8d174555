"""`mobiledeploy export`: options -> ExportConfig -> export_model -> table."""

from __future__ import annotations

from pathlib import Path

import click

from mobiledeploy.cli.common import click_options, emit_json, json_option, stderr_console, stdout_console, wide_option
from mobiledeploy.cli.progress import progress_renderer
from mobiledeploy.cli.table import Column, render
from mobiledeploy.export.pipeline import ExportConfig, export_model
from mobiledeploy.models.artifacts import marked
from mobiledeploy.units import format_size


@click.command("export")
@click_options(ExportConfig, "model_path", "unsafe_load", "arch", "alpha", "resolution", "depth_multiplier", "classes",
               "dropout", "weights", "seed", "precisions", "formats", "int8_io", "onnx_quant_types", "per_channel",
               "onnx_calibration", "bias_correction", "float_layers", "weight_rounding", "equalize",
               "tflite_calibration", "calib", "calib_samples", "preprocessing",
               "validate_samples", "atol", "rtol", "strict", "min_agreement", "target", "estimate_method", "emulate",
               "out")
@json_option
@wide_option
def export(json_path, wide, **fields):
    """Build (or load) a MobileNet and export TFLite/ONNX artifacts, each validated against Keras."""
    config = ExportConfig(**fields)
    config.check()  # usage errors before the progress display starts
    err = stderr_console()
    with progress_renderer(steps=True, console=err) as progress:
        result = export_model(config, progress=progress,
                              warn=lambda msg: err.print(f"[yellow]warning:[/] {msg}", markup=True, soft_wrap=True))
    if json_path:  # the manifest as written, stamp included
        import json

        emit_json(json_path, json.loads(result.manifest_path.read_text()))
    if json_path != "-":  # JSON on stdout: nothing else there
        _print_table(result, wide)


def _print_table(result, wide: bool) -> None:
    from rich.text import Text

    m = result.model
    facts = " ".join(f"{k}={m[k]}" for k in ("alpha", "resolution", "classes") if m.get(k) is not None)
    title = Text(f"{m['arch'] or Path(m['source']).name} {facts} -> {result.out_dir}")
    cols = (Column("file"), Column("format", priority=3), Column("precision", priority=2), Column("size", "right"),
            Column("validation", fold=True))
    rows = [(marked(a.file, a.degraded), a.format, a.precision, format_size(a.size_bytes), a.validation.summary)
            for a in result.artifacts]
    console = stdout_console()
    render(console, cols, rows, title=title, title_justify="left", wide=wide)
    cal = result.calibration
    console.print(f"calibration: {cal['samples']} samples of {cal['source']} ({cal['preprocessing']}); "
                  f"validation on {cal['validation_inputs']}; manifest: {result.manifest_path}", markup=False)
    budget = (result.quantization or {}).get("budget_search")
    if budget and budget.get("summary"):
        console.print(budget["summary"], markup=False, soft_wrap=True)

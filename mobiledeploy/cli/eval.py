"""`mobiledeploy eval`: top-1/top-5, throughput and agreement of models on labelled data."""

from __future__ import annotations

import click

from mobiledeploy.cli.common import Seconds, emit_json, json_option, md_option, stdout_console

COLUMNS = ("model", "format", "precision", "runtime", "top-1", "top-5", "samples", "img/s (host)",
           "top-1 agree", "max abs diff", "SQNR dB")


@click.command("eval")
@click.argument("models", nargs=-1, required=True, type=click.Path())
@click.option("--data", default="digits", show_default=True, metavar="SOURCE",
              help="'digits', an image folder with class sub-folders, or a .npz with x and y.")
@click.option("--split", default="test", show_default=True, type=click.Choice(["test", "train", "all"]),
              help="Split of the digits set.")
@click.option("--limit", type=int, help="Evaluate a seeded subset of this many samples.")
@click.option("--reference", type=click.Path(),
              help="Model to compare outputs with (default: the float model of the same export).")
@click.option("--preprocessing", help="Input preprocessing (default: from the manifest or the Keras model).")
@click.option("--labels", "labels_file", type=click.Path(exists=True, dir_okay=False),
              help="Class names, one per line.")
@click.option("--threads", type=click.IntRange(min=1), help="Runtime threads (default: the runtime's).")
@click.option("--timeout", "timeout_s", default=600.0, show_default=True, type=Seconds(),
              help="Seconds per model before it is reported as failed.")
@click.option("--per-layer", is_flag=True, help="Per-layer quantization error of int8 artifacts.")
@click.option("--source-model", type=click.Path(exists=True),
              help="Float Keras model for --per-layer of a TFLite file without a manifest.")
@click.option("--unsafe-load", is_flag=True, help="Allow Keras models with Lambda layers (trusted files only).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed for the --limit subset.")
@json_option
@md_option
def eval_(models, json_path, md_path, **kwargs) -> None:
    """Top-1/top-5 of MODEL... (.keras, .tflite, .onnx files or export directories) on --data.

    Every model sees the same preprocessed samples. Agreement columns compare each
    model's outputs with the reference (top-1 agreement, max absolute difference of the
    class scores, SQNR in dB). Throughput is this host's, not a phone's.
    """
    from mobiledeploy.errors import RuntimeFailure
    from mobiledeploy.accuracy.evaluate import EvalConfig, run_eval

    report = run_eval(EvalConfig(models=tuple(models), **kwargs))
    emit_json(json_path, report.to_json())
    if md_path:
        from mobiledeploy import io

        io.write_text(md_path, markdown_table(report))
    if json_path != "-":
        _print(report)
    failed = [r for r in report.results if r.status != "ok"]
    if failed:
        raise RuntimeFailure(f"{len(failed)} of {len(report.results)} models failed; first: {failed[0].error}")


def rows(report) -> list[list[str]]:
    from pathlib import Path

    out = []
    for r in report.results:
        a = r.agreement
        out.append([Path(r.model).name, r.format, r.precision, r.runtime, _pct(r.top1), _pct(r.top5),
                    str(r.samples) if r.status == "ok" else "error",
                    f"{r.throughput_ips:.0f}" if r.throughput_ips else "-",
                    _pct(a.top1_agreement) if a else "-", f"{a.max_abs_diff:.4f}" if a else "-",
                    ("inf" if a.sqnr_db == float("inf") else f"{a.sqnr_db:.1f}") if a else "-"])
    return out


def markdown_table(report) -> str:
    lines = [_title(report.data), "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in rows(report)]
    return "\n".join(lines) + "\n"


def _title(d: dict) -> str:
    split = f" ({d['split']} split)" if d.get("split") else ""
    skipped = f", {d['skipped']} unreadable files skipped" if d.get("skipped") else ""
    return f"{d['source']}{split}: {d['samples']} samples, preprocessing {d['preprocessing']}{skipped}"


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _print(report) -> None:
    from rich.table import Table

    con = stdout_console()
    table = Table(title=_title(report.data))
    for c in COLUMNS:
        table.add_column(c, justify="left" if c in ("model", "format", "precision", "runtime") else "right")
    for row in rows(report):
        table.add_row(*row)
    con.print(table)
    for r in report.results:
        if r.status != "ok":
            con.print(f"[red]{r.model}: {r.error}[/red]")
        if r.per_layer is not None:
            from mobiledeploy.accuracy.perlayer import render_table

            con.print(render_table(r.per_layer))

"""`mobiledeploy eval`: top-1/top-5, throughput and agreement of models on labelled data."""

from __future__ import annotations

import click

from mobiledeploy import io
from mobiledeploy.accuracy.emulated import vs_host
from mobiledeploy.accuracy.evaluate import EvalConfig, run_eval
from mobiledeploy.cli.common import (click_options, emit_json, json_option, md_option, stderr_console, stdout_console,
                                     wide_option)
from mobiledeploy.cli.progress import progress_renderer
from mobiledeploy.cli.table import Column, render
from mobiledeploy.errors import RuntimeFailure, UsageError
from mobiledeploy.models.artifacts import degraded_notes, marked
from mobiledeploy.models.preprocessing import spec
from mobiledeploy.runtimes.emulate import EMULATED_LABEL, cpu

COLUMNS = (Column("model"), Column("format", priority=3), Column("precision", priority=1),
           Column("runtime", priority=4), Column("top-1", "right"), Column("top-5", "right", priority=2),
           Column("samples", "right", priority=4), Column("img/s (host)", "right", priority=3),
           Column("top-1 agree", "right", priority=1), Column("max abs diff", "right", priority=2),
           Column("SQNR dB", "right", priority=1))


@click.command("eval")
@click.argument("models", nargs=-1, required=True, type=click.Path())
@click_options(EvalConfig, "data", "split", "limit", "reference", "preprocessing", "labels_file", "label_pattern",
               "layout")
@click.option("--mean", metavar="M[,M,M]", help="Explicit preprocessing: (x - mean) / std; values <= 1 act on x/255.")
@click.option("--std", metavar="S[,S,S]", help="Explicit preprocessing: standard deviation (with --mean).")
@click_options(EvalConfig, "threads", "timeout_s", "per_layer", "source_model", "unsafe_load", "seed", "emulate")
@json_option
@md_option
@wide_option
def eval_(models, json_path, md_path, wide, mean, std, **kwargs) -> None:
    """Top-1/top-5 of MODEL... (.keras, .tflite, .onnx files or export directories) on --data.

    Every model sees the same preprocessed samples. Agreement columns compare each
    model's outputs with the reference (top-1 agreement, max absolute difference of the
    class scores, SQNR in dB). Throughput is this host's, not a phone's. With --emulate,
    each artifact also runs under qemu on an ARM CPU model: its top-1 there, its top-1
    agreement with the host run, and '=' when its raw outputs are bit-identical to the
    host's (else the largest output difference).
    """
    if mean is not None or std is not None:
        if kwargs.get("preprocessing"):
            raise UsageError("--mean/--std and --preprocessing both set the preprocessing; pass one of them")
        kwargs["preprocessing"] = spec(mean if mean is not None else 0.0, std)
    with progress_renderer() as progress:
        report = run_eval(EvalConfig(models=tuple(models), **kwargs, progress=progress))
    if report.warnings and json_path != "-":
        for w in report.warnings:
            stderr_console().print(f"[yellow]warning:[/] {w}", markup=True, soft_wrap=True)
    emit_json(json_path, report.to_json())
    if md_path:
        io.write_text(md_path, markdown_table(report))
    if json_path != "-":
        _print(report, wide)
    failed = [r for r in report.results if r.status != "ok"]
    if failed:
        raise RuntimeFailure(f"{len(failed)} of {len(report.results)} models failed; first: {failed[0].error}")
    failed = [e for e in report.emulated if e.status == "error"]
    if failed:
        raise RuntimeFailure(f"{len(failed)} of {len(report.emulated)} models failed under emulation; "
                             f"first: {failed[0].note}")


def columns(report) -> tuple[Column, ...]:
    """COLUMNS, with --emulate three more after top-1: the emulated top-1 and the agreement with the host."""
    if not report.emulated:
        return COLUMNS
    cpu = report.emulated[0].cpu
    k = next(i for i, c in enumerate(COLUMNS) if c.header == "top-1") + 1
    return (*COLUMNS[:k], Column(f"top-1 {cpu}", "right"), Column("agree w/ host", "right"),
            Column("vs host", "right"), *COLUMNS[k:])


def rows(report) -> list[list[str]]:
    from pathlib import Path

    emulated = {e.model: e for e in report.emulated}
    out = []
    for r in report.results:
        a = r.agreement
        row = [marked(Path(r.model).name, r.degraded), r.format, r.precision, r.runtime, _pct(r.top1), _pct(r.top5),
               str(r.samples) if r.status == "ok" else "error",
               f"{r.throughput_ips:.0f}" if r.throughput_ips else "-",
               _pct(a.top1_agreement) if a else "-", f"{a.max_abs_diff:.4f}" if a else "-",
               ("inf" if a.sqnr_db == float("inf") else f"{a.sqnr_db:.1f}") if a else "-"]
        if report.emulated:
            e = emulated.get(r.model)
            row[5:5] = [_pct(e.top1) if e else "-", _pct(e.top1_agreement) if e else "-", vs_host(e)]
        out.append(row)
    return out


def markdown_table(report) -> str:
    cols = columns(report)
    lines = [_title(report), "", "| " + " | ".join(c.header for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(row) + " |" for row in rows(report)]
    lines += [f"\n{n}" for n in _degraded_notes(report) + _emulation_notes(report)]
    return "\n".join(lines) + "\n"


def _title(report) -> str:
    d = report.data
    split = f" ({d['split']} split)" if d.get("split") else ""
    skipped = f", {d['skipped']} unreadable files skipped" if d.get("skipped") else ""
    emulated = f"; also on {report.emulated[0].cpu}, emulated (qemu)" if report.emulated else ""
    return f"{d['source']}{split}: {d['samples']} samples, preprocessing {d['preprocessing']}{skipped}{emulated}"


def _degraded_notes(report) -> list[str]:
    from pathlib import Path

    return degraded_notes((Path(r.model).name, r.degraded) for r in report.results)


def _emulation_notes(report) -> list[str]:
    """What the emulated columns mean, and each model skipped or failed under emulation."""
    if not report.emulated:
        return []
    from pathlib import Path

    model = cpu(report.emulated[0].cpu)
    notes = [f"Emulated: the aarch64 LiteRT and ONNX Runtime under qemu -cpu {model.qemu_cpu} ({model.name}), "
             f"compared with the same runs on this host: 'agree w/ host' is the top-1 agreement; 'vs host' is "
             f"'=' when the raw outputs are bit-identical, else the largest absolute output difference. "
             f"Emulated run times (JSON) are {EMULATED_LABEL}."]
    notes += [f"{Path(e.model).name} ({model.name}): {e.note}" for e in report.emulated if e.status != "ok"]
    return notes


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _print(report, wide: bool) -> None:
    from pathlib import Path

    from rich.text import Text

    con = stdout_console()
    render(con, columns(report), rows(report), title=_title(report), wide=wide)
    for r in report.results:
        if r.status != "ok":
            con.print(Text(f"{r.model}: {r.error}", style="red"))
    for note in _degraded_notes(report):
        con.print(Text(note, style="yellow"))
    failed = {Path(e.model).name for e in report.emulated if e.status == "error"}
    for note in _emulation_notes(report):
        con.print(Text(note, style="red" if note.split(" ", 1)[0] in failed else None))
    for r in report.results:
        if r.per_layer is not None:
            _print_per_layer(con, r.per_layer, wide)


PER_LAYER_TOP = 12  # worst layers shown; --json has them all


def _print_per_layer(con, report, wide: bool) -> None:
    from pathlib import Path

    from rich.text import Text

    worse = "higher" if report.metric == "rmse/scale" else "lower"
    flag = f"> {report.threshold}" if report.metric == "rmse/scale" else f"< {report.threshold:.0f} dB"
    shown = report.layers[:PER_LAYER_TOP]
    title = (f"{Path(report.model).name}: per-layer {report.metric} ({worse} is worse; flagged {flag}), "
             f"{len(report.flagged)} of {len(report.layers)} flagged, worst {len(shown)}")
    cols = (Column("layer", fold=True), Column("op", priority=1), Column(report.metric, "right"), Column("flag"))
    fmt = ".3f" if report.metric == "rmse/scale" else ".1f"
    rows_ = [(layer.name, layer.op, "inf" if layer.value == float("inf") else format(layer.value, fmt),
              Text("!!", style="red") if layer.flagged else "") for layer in shown]
    render(con, cols, rows_, title=title, caption=report.note or None, wide=wide)

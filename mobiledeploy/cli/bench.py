"""`mobiledeploy bench`: host latency on LiteRT and ONNX Runtime, one child process per model.

Maps options onto ``mobiledeploy.bench.service.run_bench`` and renders its result; never imports TensorFlow.
"""

from __future__ import annotations

import click

from mobiledeploy import io
from mobiledeploy.bench.request import BenchRequest
from mobiledeploy.cli.common import (click_options, emit_json, json_option, md_option, shape_option, stdout_console,
                                     target_options, wide_option)
from mobiledeploy.cli.progress import progress_renderer
from mobiledeploy.cli.table import Column, render
from mobiledeploy.errors import RuntimeFailure, UsageError

# The bench service, profiles and emulation (numpy, the runtimes) are imported inside the command:
# `bench --help` and its start load neither (tests/test_terminal.py).

EMULATED_COLUMNS = ("init ms", "p50 ms", "p90 ms", "p99 ms", "inf/s")  # emulated times, not latencies


@click.command()
@click.argument("models", nargs=-1, required=True, metavar="MODEL_OR_DIR...")
@target_options
@click_options(BenchRequest, "threads", "affinity", "xnnpack", "ort_opt_level", "warmup", "runs", "min_time_s",
               "timeout_s")
@shape_option
@click_options(BenchRequest, "samples", "emulate", "profile", "data")
@json_option
@md_option
@wide_option
def bench(models, target_name, target_file, threads, affinity, xnnpack, ort_opt_level, warmup, runs,
          min_time_s, timeout_s, shapes, samples, emulate, profile, data, json_path, md_path, wide) -> None:
    """Measure latency of .tflite/.onnx files, or of every model in an export directory.

    Each model runs in its own child process (a crash or a hang past --timeout becomes
    that model's error row). Numbers are the HOST's latency under the target profile's
    threads, pinned cores and runtime options, never the device's latency. With
    --emulate the child runs under qemu (timeout scaled): the table shows the ISA
    features the runtime saw, and its times are emulated, not a latency.
    """
    from mobiledeploy.bench.service import run_bench

    request = BenchRequest(models=tuple(models), target=target_name, target_file=target_file, threads=threads,
                           affinity=affinity, xnnpack=xnnpack, ort_opt_level=ort_opt_level, warmup=warmup,
                           runs=runs, min_time_s=min_time_s, timeout_s=timeout_s, shapes=shapes, samples=samples,
                           emulate=emulate, profile=profile, data=data)
    with progress_renderer() as progress:
        run = run_bench(request, progress=progress)
    emit_json(json_path, run.to_json())
    if md_path:
        _write_markdown(md_path, run)
    if json_path != "-":
        _print(run, wide)
    failed = run.failed
    if not failed:
        return
    if len(failed) == 1:  # one line: the model and why
        msg = f"{failed[0].model}: {failed[0].error}"
    else:  # one line per model, then the count
        for r in failed:
            click.echo(f"failed: {r.model}: {r.error}", err=True)
        msg = f"{len(failed)} of {len(run.results)} models failed"
    raise (UsageError if all(r.usage_error for r in failed) else RuntimeFailure)(msg)


def _title(run) -> str:
    from mobiledeploy.runtimes import emulate as emu

    settings = run.settings
    cores = ",".join(map(str, settings.affinity)) if settings.affinity else "not pinned"
    title = (f"{settings.label}: {settings.threads} thread(s), cores {cores}, "
             f"XNNPACK {'on' if settings.xnnpack else 'off'}, ORT opt {settings.ort_opt_level}")
    emulation = run.emulation
    if emulation:
        seen = emulation["hwcaps"]
        features = emu.describe_features({k: seen[k] for k in emu.KEY_FEATURES}) if seen else "unknown (no model ran)"
        title += f"; ISA features the runtime saw: {features}"
    return title


def _columns(run) -> list:
    """bench's table columns: device estimate and top-1 when measured, emulated times named so."""
    from mobiledeploy.bench import report as rep

    columns = list(rep.COLUMNS)
    if run.target.name != "host":  # the cost model's estimate for the device, in its own column
        columns.append(rep.Column(f"{run.target.name} est. ms (device estimate)",
                                  lambda r, x: f"{x['estimate_ms']:.2f}" if "estimate_ms" in x else "-"))
    if run.accuracy is not None:  # after size: format, precision, size, top-1, p50
        columns.insert(next(i for i, c in enumerate(columns) if c.header == "size") + 1, rep.Column(
            f"top-1 ({run.request.data})",
            lambda r, x: f"{100 * x['top1']:.2f}%" if x.get("top1") is not None else "-"))
    if run.emulation:  # every time column says what it is
        columns = [rep.Column(f"emulated {c.header}", c.value, c.justify, c.priority, c.fold)
                   if c.header in EMULATED_COLUMNS else c for c in columns]
    return columns


def _write_markdown(md_path: str, run) -> None:
    from mobiledeploy.bench import report as rep
    from mobiledeploy.bench.profile import profile_markdown

    io.write_text(md_path, rep.markdown_table(run.results, title=_title(run), notes=run.settings.notes,
                                              columns=_columns(run), extras=run.extras()) + "".join(
        profile_markdown(r.model, run.profiles[r.model], r.latency_ms.get("p50"))
        for r in run.results if r.model in run.profiles))


def _print(run, wide: bool) -> None:
    from mobiledeploy.bench import report as rep
    from mobiledeploy.runtimes.emulate import EMULATED_LABEL

    out = stdout_console()
    columns, target, emulation = _columns(run), run.target, run.emulation
    render(out, columns, rep.rows(run.results, columns, run.extras()), title=_title(run), wide=wide,
           row_styles=[None if r.ok else "red" for r in run.results])
    for note in rep.degraded_notes(run.results):
        out.print(note, style="yellow", markup=False, soft_wrap=True)
    _print_profiles(out, run.report, run.profiles, wide)
    if emulation:
        out.print(f"Emulated: the aarch64 runtimes ran under qemu -cpu {emulation['qemu_cpu']} "
                  f"({emulation['cpu']}: {emulation['notes']}). Their times are {EMULATED_LABEL}: qemu "
                  f"translates every instruction, so they are tens to hundreds of times the host's and "
                  f"distort the ratio between kernels." + (
                      f" The last column is the cost model's estimate for {target.name}."
                      if target.name != "host" else "") + (
                      f" {target.name}: {emulation['target_note']}." if "target_note" in emulation else ""))
    elif target.name != "host":
        out.print(f"These are host timings with {target.name}'s settings, not {target.name} latency; "
                  f"the last column is the cost model's estimate for the device (`mobiledeploy estimate`).")


def _print_profiles(out, report, profiles: dict, wide: bool) -> None:
    from mobiledeploy.bench.profile import COLUMNS, profile_rows

    cols = [Column(*c) for c in COLUMNS]
    for r in report.results:
        prof = profiles.get(r.model)
        if not prof:
            continue
        if prof.get("status") != "ok":
            out.print(f"profile of {r.model} failed: {prof.get('error')}")
            continue
        rows, summary = profile_rows(prof, r.latency_ms.get("p50"))
        render(out, cols, rows, title=f"{r.model}: per operator (host)", wide=wide)
        out.print(summary)

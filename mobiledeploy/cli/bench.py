"""`mobiledeploy bench`: host latency on LiteRT and ONNX Runtime, one child process per model.

Maps options onto ``mobiledeploy.bench.core`` and prints; never imports TensorFlow.
"""

from __future__ import annotations

import click

from mobiledeploy.cli.common import (Seconds, emit_json, json_option, md_option, progress, shape_option,
                                     stdout_console, target_options, wide_option)

EMULATED_COLUMNS = ("init ms", "p50 ms", "p90 ms", "p99 ms", "inf/s")  # emulated times, not latencies


@click.command()
@click.argument("models", nargs=-1, required=True, metavar="MODEL_OR_DIR...")
@target_options
@click.option("--threads", type=click.IntRange(min=1), help="Thread count (overrides the profile).")
@click.option("--affinity", metavar="POLICY", help="Cores to pin: none, first, or ids such as 0,1 (overrides the profile).")
@click.option("--xnnpack/--no-xnnpack", default=None,
              help="LiteRT: XNNPACK delegate (default on) or builtin kernels without default delegates.")
@click.option("--ort-opt-level", type=click.Choice(["disable", "basic", "extended", "all"]),
              help="ONNX Runtime graph optimization level (default from the profile: all).")
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True, help="Untimed runs after the first.")
@click.option("--runs", type=click.IntRange(min=1), help="Timed runs (alone: exactly N; with --min-time: at least N).")
@click.option("--min-time", "min_time_s", type=Seconds(),
              help="Time for at least S seconds. Default: at least 50 runs and at least 2 s.")
@click.option("--timeout", "timeout_s", type=Seconds(), default=300.0, show_default=True,
              help="Seconds per model (load + all runs) before its child process is killed (x50 under --emulate).")
@shape_option
@click.option("--samples", is_flag=True, help="Include every run's latency (samples_ms) in --json.")
@click.option("--emulate", metavar="CPU|target",
              help="Run on the real aarch64 runtimes under qemu on this CPU model (cortex-a53, cortex-a55, "
                   "cortex-a76, neoverse-n1, max, 'max,sme=off'), or 'target' for the profile's; needs "
                   "`make arm-env`. Times are emulated, not a latency.")
@click.option("--profile", is_flag=True,
              help="Also time every operator (ONNX Runtime's profiler; LiteRT by prefix differencing), host times.")
@click.option("--data", metavar="SOURCE",
              help="Also measure top-1 on this labelled data set (digits, image folder, .npz); see `eval`.")
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
    from mobiledeploy.bench import core as b
    from mobiledeploy.bench import report as rep
    from mobiledeploy.cli.table import render
    from mobiledeploy import io
    from mobiledeploy.errors import RuntimeFailure, UsageError
    from mobiledeploy.runtimes.emulate import EMULATED_LABEL
    from mobiledeploy.targets import load_target

    if profile and emulate:
        raise UsageError("--profile times host operators; it cannot be combined with --emulate")
    target = load_target(target_name, file=target_file)
    if emulate:  # a bad name or a missing environment: one line, before any model runs
        from mobiledeploy.runtimes import emulate as emu

        emulate = emu.for_target(emulate, target)
        emu.find_env()
    settings = b.settings_for_target(target, threads=threads, affinity=affinity, xnnpack=xnnpack,
                                     ort_opt_level=ort_opt_level, warmup=warmup, runs=runs,
                                     min_time_s=min_time_s, timeout_s=timeout_s, shapes=shapes,
                                     emulate=emulate)
    for note in settings.notes:
        click.echo(f"note: {note}", err=True)
    def finished(r) -> None:
        p50 = f"p50 {r.latency_ms['p50']:.3f} ms" if r.ok and "p50" in r.latency_ms else r.status
        steps.done(f"bench {r.model}: {p50}")  # a failure's reason: in the error line after the table

    with progress() as steps:
        report = b.bench_models(b.BenchConfig(models=tuple(models), settings=settings, target=target),
                                on_start=lambda p: steps.start(f"bench {p} ({settings.label})"),
                                on_result=finished)
    cores = ",".join(map(str, settings.affinity)) if settings.affinity else "not pinned"
    title = (f"{settings.label}: {settings.threads} thread(s), cores {cores}, "
             f"XNNPACK {'on' if settings.xnnpack else 'off'}, ORT opt {settings.ort_opt_level}")
    emulation = report.emulation()
    if emulation:
        seen = emulation["hwcaps"]
        features = emu.describe_features({k: seen[k] for k in emu.KEY_FEATURES}) if seen else "unknown (no model ran)"
        title += f"; ISA features the runtime saw: {features}"
    columns, extras, report_json = None, {}, report.to_json(samples=samples)
    if emulation and target.emulate == emulation["cpu"] and target.emulate_note:  # how close the model is
        report_json["emulation"]["target_note"] = target.emulate_note
    if target.name != "host":  # the cost model's estimate for the device, in its own column
        from mobiledeploy.cost.estimate import estimates_for

        extras = estimates_for([r.model for r in report.results if r.ok], target, threads=threads, shapes=shapes)
        report_json["device_estimates"] = extras
        for note in dict.fromkeys(n for x in extras.values() for n in x.get("notes", ())):
            click.echo(f"warning: {note}", err=True)  # e.g. a target with priors only, as `estimate` says
        columns = rep.COLUMNS + [rep.Column(
            f"{target.name} est. ms (device estimate)",
            lambda r, x: f"{x['estimate_ms']:.2f}" if "estimate_ms" in x else "-")]
    if data:  # accuracy from `eval` in its own column, after size: format, precision, size, top-1, p50
        from mobiledeploy.accuracy.evaluate import accuracy_for

        acc = accuracy_for([r.model for r in report.results if r.ok], data, threads=threads)
        extras = {m: {**extras.get(m, {}), **acc.get(m, {})} for m in set(extras) | set(acc)}
        report_json["accuracy"] = acc
        columns = list(columns or rep.COLUMNS)
        columns.insert(next(i for i, c in enumerate(columns) if c.header == "size") + 1, rep.Column(
            f"top-1 ({data})", lambda r, x: f"{100 * x['top1']:.2f}%" if x.get("top1") is not None else "-"))
    profiles = _profiles(report, settings) if profile else {}
    if profiles:
        report_json["profiles"] = profiles
    if emulation:  # every time column says what it is
        columns = [rep.Column(f"emulated {c.header}", c.value, c.justify, c.priority, c.fold)
                   if c.header in EMULATED_COLUMNS else c for c in (columns or rep.COLUMNS)]
    emit_json(json_path, report_json)
    if md_path:
        from mobiledeploy.bench.profile import profile_markdown

        io.write_text(md_path, rep.markdown_table(report.results, title=title, notes=settings.notes,
                                                  columns=columns, extras=extras) + "".join(
            profile_markdown(r.model, profiles[r.model], r.latency_ms.get("p50"))
            for r in report.results if r.model in profiles))
    if json_path != "-":
        out = stdout_console()
        columns = columns or rep.COLUMNS
        render(out, columns, rep.rows(report.results, columns, extras), title=title, wide=wide,
               row_styles=[None if r.ok else "red" for r in report.results])
        _print_profiles(out, report, profiles, wide)
        if emulation:
            out.print(f"Emulated: the aarch64 runtimes ran under qemu -cpu {emulation['qemu_cpu']} "
                      f"({emulation['cpu']}: {emulation['notes']}). Their times are {EMULATED_LABEL}: qemu "
                      f"translates every instruction, so they are tens to hundreds of times the host's and "
                      f"distort the ratio between kernels." + (
                          f" The last column is the cost model's estimate for {target.name}."
                          if target.name != "host" else "") + (
                          f" {target.name}: {report_json['emulation']['target_note']}."
                          if "target_note" in report_json["emulation"] else ""))
        elif target.name != "host":
            out.print(f"These are host timings with {target.name}'s settings, not {target.name} latency; "
                      f"the last column is the cost model's estimate for the device (`mobiledeploy estimate`).")
    failed = report.failed
    if not failed:
        return
    if len(failed) == 1:  # one line: the model and why
        msg = f"{failed[0].model}: {failed[0].error}"
    else:  # one line per model, then the count
        for r in failed:
            click.echo(f"failed: {r.model}: {r.error}", err=True)
        msg = f"{len(failed)} of {len(report.results)} models failed"
    raise (UsageError if all(r.usage_error for r in failed) else RuntimeFailure)(msg)


def _profiles(report, settings) -> dict:
    """Per-operator times of every model that benched, each in its own child process."""
    from mobiledeploy.bench.profile import profile_model

    out = {}
    with progress() as steps:
        for r in report.results:
            if r.ok:
                steps.start(f"profile {r.model}")
                out[r.model] = profile_model(r.model, settings)
                steps.done(f"profile {r.model}: {out[r.model].get('status')}")
    return out


def _print_profiles(out, report, profiles: dict, wide: bool) -> None:
    from mobiledeploy.bench.profile import COLUMNS, profile_rows
    from mobiledeploy.cli.table import Column, render

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

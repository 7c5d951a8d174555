"""`mobiledeploy estimate`: on-device latency from the target's per-layer cost model."""

from __future__ import annotations

import click

from mobiledeploy.cli.common import (click_options, emit_json, json_option, shape_option, stderr_console,
                                     stdout_console, target_options, warnings_to_stderr, wide_option)
from mobiledeploy.cli.table import Column, render
from mobiledeploy.cost.estimate import EstimateConfig, estimate as run_estimate
from mobiledeploy.kernels.estimate import check_artifact, core_of, estimate_kernels
from mobiledeploy.targets import load_target


@click.command("estimate")
@click.argument("model", required=False, type=click.Path(exists=True))
@click_options(EstimateConfig, "arch", "alpha", "resolution", "classes", "precision")
@target_options
@click_options(EstimateConfig, "threads")
@click.option("--layers/--no-layers", "show_layers", default=True, show_default=True,
              help="Print the per-layer breakdown.")
@click.option("--method", type=click.Choice(("cost", "kernels")), default="cost", show_default=True,
              help="cost: the per-layer cost model. kernels: count the runtime's aarch64 kernels under "
                   "qemu on the target's [kernels] core, schedule them with llvm-mca (needs `make arm-env`; "
                   "a .tflite/.onnx MODEL; docs/kernels.md).")
@shape_option
@json_option
@wide_option
def estimate(model, arch, alpha, resolution, classes, precision, target_name, target_file, threads,
             show_layers, method, shapes, json_path, wide):
    """Estimate MODEL's latency ON THE DEVICE of --target (a cost model, not a measurement).

    Per layer: max(MACs / (peak x efficiency), bytes moved / bandwidth) + overhead, with
    the target's fitted [cost_model] parameters (see `mobiledeploy target calibrate`).
    """
    source = click.get_current_context().get_parameter_source
    given = [n for n in ("arch", "alpha", "resolution") if source(n) != click.core.ParameterSource.DEFAULT]
    if model is not None and given:
        raise click.UsageError("give either a MODEL file or --arch/--alpha/--res, not both")
    if shapes and model is None:
        raise click.UsageError("--shape applies to a MODEL file with dynamic inputs, not to --arch configs")
    if method == "kernels":
        return _kernels(model, target_name, target_file, threads, json_path)
    cfg = EstimateConfig(model=model, arch=arch, alpha=alpha, resolution=resolution, classes=classes,
                         precision=precision, target=target_name, target_file=target_file, threads=threads,
                         shapes=shapes or None)

    target = load_target(target_name, file=target_file)
    with warnings_to_stderr():
        result = run_estimate(cfg, target)
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


def _kernels(model, target_name, target_file, threads, json_path):
    """--method kernels: the estimate from the emulated kernels (mobiledeploy.kernels)."""
    if model is None:
        raise click.UsageError("--method kernels needs a MODEL file (.tflite or .onnx), not --arch")
    target = load_target(target_name, file=target_file)
    core_of(target)  # no [kernels] table, or not an artifact: one line before anything runs
    check_artifact(model)
    err = stderr_console()
    if not json_path == "-":
        err.print(f"estimating from the kernels on {target.name}'s core (first time per artifact and core: one "
                  "emulated run, minutes; then cached)", markup=False)
    r = estimate_kernels(model, target, threads=threads)
    emit_json(json_path, r.to_json())
    if json_path == "-":
        return
    con = stdout_console()
    core = r.core
    con.print(f"core: qemu {core['cpu']}, MIDR {core['midr']}, llvm-mca {core['sched']}, {core['clock_ghz']:g} GHz; "
              f"{r.runtime} {r.runtime_version}{'' if r.xnnpack else ' (built-in kernels)'}", markup=False)
    con.print(f"per invoke: {r.instructions / 1e6:.2f} M instructions, {r.cycles / 1e6:.2f} M cycles "
              f"(critical path), IPC {r.ipc:.2f}", markup=False)
    con.print("mix: " + ", ".join(f"{k} {v:.1%}" for k, v in r.mix.items() if v >= 0.0005), markup=False)
    if r.threads > 1:
        con.print("threads: " + ", ".join(f"#{k} {v['instructions'] / 1e6:.2f} M instr / {v['cycles'] / 1e6:.2f} M cyc"
                                          for k, v in r.per_thread.items()), markup=False)
    if r.functions:
        con.print("kernels (share of cycles):", markup=False)
        for f in r.functions[:5]:
            con.print(f"  {f['cycles_share']:4.0%}  {f['function']}", markup=False)
    for note in r.notes:
        err.print(f"note: {note}", markup=False)
    con.print(f"estimated latency on {r.target} ({r.threads} thread(s)): {r.latency_ms:.2f} ms "
              f"(compute {r.compute_ms:.2f} + memory {r.memory_ms:.2f})  [{r.label}]"
              + ("  (cached)" if r.cached else ""), markup=False)

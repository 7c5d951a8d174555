"""`mobiledeploy estimate`: on-device latency from the target's per-layer cost model."""

from __future__ import annotations

import click

from mobiledeploy.cli.common import (click_options, emit_json, json_option, shape_option, stderr_console,
                                     stdout_console, target_options, warnings_to_stderr, wide_option)
from mobiledeploy.cli.table import Column, render
from mobiledeploy.cost.estimate import EstimateConfig, estimate as run_estimate
from mobiledeploy.kernels.estimate import estimate_kernels, preflight
from mobiledeploy.targets import load_target


@click.command("estimate")
@click.argument("model", required=False, type=click.Path(exists=True))
@click_options(EstimateConfig, "arch", "alpha", "resolution", "classes", "precision")
@target_options
@click_options(EstimateConfig, "threads")
@click.option("--layers/--no-layers", "show_layers", default=True, show_default=True,
              help="Print the per-layer breakdown (--method kernels: the per-operator table, the 10 "
                   "operators with the most cycles unless --layers is given).")
@click_options(EstimateConfig, "method")
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
        layers = "all" if source("show_layers") != click.core.ParameterSource.DEFAULT and show_layers else (
            TOP_OPERATORS if show_layers else 0)
        return _kernels(model, target_name, target_file, threads, json_path, layers, wide)
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


TOP_OPERATORS = 10  # --method kernels: operators shown unless --layers is given (then all)


def _operators_table(con, rows, layers, wide):
    """The per-operator table: the ``layers`` operators holding the most cycles ("all": every one, in
    execution order), then the work between operators."""
    ops = [r for r in rows if r["index"] is not None]
    shown = ops if layers == "all" else sorted(sorted(ops, key=lambda r: -r["cycles"])[:layers],
                                               key=lambda r: r["index"])
    title = "per operator" + ("" if layers == "all" or len(shown) == len(ops) else
                              f" (the {len(shown)} of {len(ops)} with the most cycles; all with --layers)")
    con.print(title + ":", markup=False)
    cols = (Column("#", "right"), Column("operator"), Column("output", fold=True, priority=2),
            Column("shape", priority=1), Column("kernel", priority=3), Column("instr.", "right"),
            Column("cycles", "right"), Column("ms", "right"))
    cells = [(str(r["index"]) if r["index"] is not None else "-", r["operator"], r["output"].split(";")[0],
              "x".join(map(str, r["shape"])), r["function"], f"{r['instructions']:,.0f}", f"{r['cycles_share']:.1%}",
              f"{r['ms']:.3f}") for r in [*shown, *(r for r in rows if r["index"] is None)]]
    render(con, cols, cells, wide=wide)


def _kernels(model, target_name, target_file, threads, json_path, layers=TOP_OPERATORS, wide=False):
    """--method kernels: the estimate from the emulated kernels (mobiledeploy.kernels)."""
    if model is None:
        raise click.UsageError("--method kernels needs a MODEL file (.tflite or .onnx), not --arch")
    target = load_target(target_name, file=target_file)
    _, _, env = preflight(model, target)  # not an artifact, no [kernels] table, no LLVM or ARM env: one line first
    err = stderr_console()
    if not json_path == "-":
        err.print(f"estimating from the kernels on {target.name}'s core (first time per artifact and core: one "
                  "emulated run, minutes; then cached)", markup=False)
    r = estimate_kernels(model, target, threads=threads, env=env)
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
    if r.operators and layers:
        _operators_table(con, r.operators, layers, wide)
    for note in r.notes:
        err.print(f"note: {note}", markup=False)
    con.print(f"estimated latency on {r.target} ({r.threads} thread(s)): {r.latency_ms:.2f} ms "
              f"(compute {r.compute_ms:.2f} + memory {r.memory_ms:.2f})  [{r.label}]"
              + ("  (cached)" if r.cached else ""), markup=False)

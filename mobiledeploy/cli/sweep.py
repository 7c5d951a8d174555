"""`mobiledeploy sweep`: options -> SweepConfig -> run_sweep -> front, recommendation, report."""

from __future__ import annotations

import click

from mobiledeploy.cli.common import click_options, emit_json, json_option, stderr_console, stdout_console, wide_option
from mobiledeploy.cli.progress import progress_renderer
from mobiledeploy.cli.table import Column, render
from mobiledeploy.errors import MobiledeployError
from mobiledeploy.sweep.grid import SweepConfig

# The sweep's executors and artifacts reader (numpy, the runtimes) are imported inside the command:
# `sweep --help` loads neither.


@click.command("sweep")
@click_options(SweepConfig, "archs", "alphas", "resolutions", "precisions", "formats", "targets", "estimate_method",
               "bench_target",
               "data", "eval_limit", "classes", "weights", "seed", "calib", "calib_samples", "weight_rounding",
               "equalize", "tflite_calibration", "onnx_calibration", "emulate", "samples", "warmup",
               "timeout_s", "out", "max_latency_ms", "max_size_kb", "min_top1", "executor", "ray_address", "jobs",
               "max_configs")
@json_option
@wide_option
def sweep(json_path, wide, **fields):
    """Export, bench, evaluate and estimate a grid of alpha x resolution x precision x format.

    Writes OUT/results.{json,csv,md} and OUT/report.html (Pareto plots, latency histograms,
    the table). Finished configs are kept: a rerun redoes only what is missing or failed.
    With --max-latency-ms / --max-size-kb / --min-top1 it recommends one artifact per target.
    """
    from mobiledeploy.sweep.core import run_sweep

    cfg = SweepConfig(**fields)
    cfg.check()  # every usage error before anything is written or TensorFlow imported
    err = stderr_console()
    if cfg.data and cfg.random_weights:
        err.print("[bold yellow]warning: RANDOM WEIGHTS[/]: the models are randomly initialised, so top-1 on "
                  f"{cfg.data!r} is chance level and says nothing about the configs; give trained weights with "
                  "--weights to compare accuracy", markup=True, soft_wrap=True)

    err.print(f"sweep: {cfg.size} configs into {cfg.out}", markup=False, soft_wrap=True)

    with progress_renderer(status=False, console=err) as progress:
        result = run_sweep(cfg, progress=progress, checked=True)
    s = result.summary
    emit_json(json_path, s)
    if json_path != "-":
        _print(s, result, wide=wide)
    failed = result.failed
    none_fit = [r for r in s["recommendations"] if r["file"] is None]
    if failed:
        raise MobiledeployError(f"{len(failed)} of {len(s['configs'])} configs failed (error rows in "
                                f"{result.out / 'results.md'}); rerun to retry them")
    if none_fit:
        raise MobiledeployError(none_fit[0]["reason"])


def _print(s: dict, result, *, wide: bool = False) -> None:
    from mobiledeploy.models.artifacts import degraded_notes, marked

    con = stdout_console()
    label = ("device estimate from emulated kernels" if s["sweep"].get("estimate_method") == "kernels"
             else "device estimate")
    for target, files in s["fronts"].items():
        # names whole or not at all (cli/table.py): when too narrow, the host figures go first
        columns = [Column("artifact"), Column("size KB", "right", 1), Column(f"{target} est. ms", "right"),
                   Column("host p50 ms", "right", 3), Column("top-1", "right", 1 if s["use_accuracy"] else 2)]
        rows = [(marked(r["file"], r.get("degraded")), f"{r['size_kb']:.0f}", f"{r['est_ms'][target]:.2f}",
                 f"{r['host_p50_ms']:.2f}" if r["host_p50_ms"] is not None else "-",
                 f"{100 * r['top1']:.2f} %" if r.get("top1") is not None else "-")
                for r in s["rows"] if r["file"] in files]
        render(con, columns, rows, wide=wide, title_justify="left",
               title=f"Pareto front on {target} ({label} vs size"
                     f"{' vs top-1' if s['use_accuracy'] else ' vs MACs, the accuracy proxy'})")
    for note in degraded_notes((r["file"], r.get("degraded")) for r in s["rows"]):
        con.print(note, markup=False, soft_wrap=True, style="yellow")
    for w in s["warnings"]:
        con.print(f"warning: {w}", markup=False, soft_wrap=True)
    for rec in s["recommendations"]:
        if rec["file"]:
            con.print(f"recommended for {rec['target']}: {rec['file']}", markup=False, soft_wrap=True)
            con.print(f"  why: {rec['reason']}", markup=False, soft_wrap=True)
    if s["sweep"].get("emulate"):  # what the exports' agreement (and degraded marks) were judged on
        con.print(f"int8 and dynamic exports judged on {s['sweep']['emulate']}'s runtimes (emulated aarch64); "
                  "top-1 and latency measured on this host", markup=False, soft_wrap=True)
    ex = s["executor"]
    con.print(f"{len(s['configs'])} configs ({ex['ran']} run, {ex['cached']} cached) in {s['wall_s']:.1f} s; "
              f"{s['bench_label']} (host timings, not phone timings); report: {result.out / 'report.html'}",
              markup=False, soft_wrap=True)

"""`mobiledeploy sweep`: options -> SweepConfig -> run_sweep -> front, recommendation, report."""

from __future__ import annotations

import click

from mobiledeploy.cli.common import (Seconds, csv_choice, emit_json, json_option, stderr_console, stdout_console,
                                     wide_option)
from mobiledeploy.cli.progress import progress_renderer
from mobiledeploy.export.formats import FORMATS, PRECISIONS
from mobiledeploy.sweep.grid import (DEFAULT_CALIB_SAMPLES, DEFAULT_SAMPLES, DEFAULT_TARGETS, EXECUTORS,
                                     MAX_CONFIGS, MAX_CONFIGS_LIMIT, PAPER_ALPHAS, PAPER_RESOLUTIONS)


def _numbers(kind):
    def parse(ctx, param, value):
        flag = param.opts[0]
        items = [v.strip() for v in (value or "").split(",") if v.strip()]
        if not items:
            raise click.BadParameter("empty list; give comma-separated values", param_hint=flag)
        try:
            return tuple(dict.fromkeys(kind(v) for v in items))
        except ValueError:
            raise click.BadParameter(f"expected comma-separated {kind.__name__}s, got {value!r}",
                                     param_hint=flag) from None
    return parse


def _names(ctx, param, values):
    items = tuple(dict.fromkeys(v.strip() for raw in values for v in raw.split(",") if v.strip()))
    if values and not items:
        raise click.BadParameter("empty list", param_hint=param.opts[0])
    return items


@click.command("sweep")
@click.option("--arch", default=("mobilenet_v1",), show_default=True, callback=_names, multiple=True,
              help="Architectures (comma list or repeated).")
@click.option("--alpha", default=",".join(map(str, PAPER_ALPHAS)), show_default=True, callback=_numbers(float),
              help="Width multipliers, comma list (the paper's Table 6 by default).")
@click.option("--res", default=",".join(map(str, PAPER_RESOLUTIONS)), show_default=True, callback=_numbers(int),
              help="Input resolutions, comma list (the paper's Table 7 by default).")
@click.option("--quant", default="fp32,int8", show_default=True, help=f"Precisions: {', '.join(PRECISIONS)}.")
@click.option("--formats", default="tflite,onnx", show_default=True, help="Formats: tflite, onnx.")
@click.option("--target", "targets", multiple=True, callback=_names, metavar="NAME",
              help=f"Device(s) to estimate latency for and pick for (repeat or comma list; default "
                   f"{','.join(DEFAULT_TARGETS)}). See `mobiledeploy targets`.")
@click.option("--bench-target", default="host", show_default=True, metavar="NAME",
              help="Profile whose threads/cores/runtime options the host latency is measured with.")
@click.option("--data", default=None, metavar="SOURCE",
              help="Labelled data for top-1 (digits, image folder, .npz); needs matching --classes.")
@click.option("--eval-limit", type=int, default=None, help="Evaluate on this many samples of --data.")
@click.option("--classes", type=int, default=1000, show_default=True, help="Output classes of the built models.")
@click.option("--weights", default=None, metavar="PATTERN",
              help="Trained weights per config, e.g. 'w/mobilenet_{alpha}_{res}.h5'; default random init.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--calib", default="digits", show_default=True, metavar="SOURCE", help="int8 calibration data.")
@click.option("--calib-samples", type=int, default=DEFAULT_CALIB_SAMPLES, show_default=True)
@click.option("--samples", type=int, default=DEFAULT_SAMPLES, show_default=True,
              help="Timed runs per artifact, all kept for the latency histograms.")
@click.option("--warmup", type=int, default=5, show_default=True)
@click.option("--timeout", "timeout_s", type=Seconds(), default=300.0, show_default=True,
              help="Seconds per bench child (at most a day).")
@click.option("--out", default="build/sweep", show_default=True, type=click.Path(file_okay=False),
              help="Output directory (exports, per-config results, tables, report.html).")
@click.option("--max-latency-ms", type=float, default=None, help="Recommend under this device estimate.")
@click.option("--max-size-kb", type=float, default=None, help="Recommend under this artifact size.")
@click.option("--min-top1", type=float, default=None, help="Recommend at least this top-1 (fraction, 0.7 = 70 %).")
@click.option("--executor", type=click.Choice(EXECUTORS), default="local", show_default=True,
              help="local: worker processes on this machine; ray: tasks on a Ray cluster.")
@click.option("--ray-address", default=None, metavar="HOST:PORT",
              help="Ray cluster to join (default: start a local Ray instance).")
@click.option("--jobs", type=int, default=None, help="Parallel workers (default: this machine's cores).")
@click.option("--max-configs", type=int, default=MAX_CONFIGS, show_default=True,
              help=f"Refuse a larger grid (archs x alphas x resolutions); at most {MAX_CONFIGS_LIMIT}.")
@json_option
@wide_option
def sweep(arch, alpha, res, quant, formats, targets, bench_target, data, eval_limit, classes, weights, seed, calib,
          calib_samples, samples, warmup, timeout_s, out, max_latency_ms, max_size_kb, min_top1, executor,
          ray_address, jobs, max_configs, json_path, wide):
    """Export, bench, evaluate and estimate a grid of alpha x resolution x precision x format.

    Writes OUT/results.{json,csv,md} and OUT/report.html (Pareto plots, latency histograms,
    the table). Finished configs are kept: a rerun redoes only what is missing or failed.
    With --max-latency-ms / --max-size-kb / --min-top1 it recommends one artifact per target.
    """
    from mobiledeploy.errors import MobiledeployError
    from mobiledeploy.sweep.core import run_sweep
    from mobiledeploy.sweep.grid import SweepConfig

    cfg = SweepConfig(archs=arch or ("mobilenet_v1",), alphas=alpha, resolutions=res,
                      precisions=csv_choice(quant, PRECISIONS, "--quant"),
                      formats=csv_choice(formats, tuple(f for f in FORMATS if f != "keras"), "--formats"),
                      targets=targets or DEFAULT_TARGETS, bench_target=bench_target, classes=classes,
                      weights=weights, seed=seed, calib=calib, calib_samples=calib_samples, data=data,
                      eval_limit=eval_limit, samples=samples, warmup=warmup, timeout_s=timeout_s, out=out,
                      max_latency_ms=max_latency_ms, max_size_kb=max_size_kb, min_top1=min_top1,
                      executor=executor, ray_address=ray_address, jobs=jobs, max_configs=max_configs)
    cfg.check()  # every usage error before anything is written or TensorFlow imported
    err = stderr_console()
    if data and cfg.random_weights:
        err.print("[bold yellow]warning: RANDOM WEIGHTS[/]: the models are randomly initialised, so top-1 on "
                  f"{data!r} is chance level and says nothing about the configs; give trained weights with "
                  "--weights to compare accuracy", markup=True, soft_wrap=True)

    err.print(f"sweep: {cfg.size} configs into {out}", markup=False, soft_wrap=True)

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
    from mobiledeploy.cli.table import Column, render

    con = stdout_console()
    for target, files in s["fronts"].items():
        # names whole or not at all (cli/table.py): when too narrow, the host figures go first
        columns = [Column("artifact"), Column("size KB", "right", 1), Column(f"{target} est. ms", "right"),
                   Column("host p50 ms", "right", 3), Column("top-1", "right", 1 if s["use_accuracy"] else 2)]
        rows = [(r["file"], f"{r['size_kb']:.0f}", f"{r['est_ms'][target]:.2f}",
                 f"{r['host_p50_ms']:.2f}" if r["host_p50_ms"] is not None else "-",
                 f"{100 * r['top1']:.2f} %" if r.get("top1") is not None else "-")
                for r in s["rows"] if r["file"] in files]
        render(con, columns, rows, wide=wide, title_justify="left",
               title=f"Pareto front on {target} (device estimate vs size"
                     f"{' vs top-1' if s['use_accuracy'] else ' vs MACs, the accuracy proxy'})")
    for w in s["warnings"]:
        con.print(f"warning: {w}", markup=False, soft_wrap=True)
    for rec in s["recommendations"]:
        if rec["file"]:
            con.print(f"recommended for {rec['target']}: {rec['file']}", markup=False, soft_wrap=True)
            con.print(f"  why: {rec['reason']}", markup=False, soft_wrap=True)
    ex = s["executor"]
    con.print(f"{len(s['configs'])} configs ({ex['ran']} run, {ex['cached']} cached) in {s['wall_s']:.1f} s; "
              f"{s['bench_label']} (host timings, not phone timings); report: {result.out / 'report.html'}",
              markup=False, soft_wrap=True)

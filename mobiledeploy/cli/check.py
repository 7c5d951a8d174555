"""`mobiledeploy check`: size, accuracy and latency budgets for CI (exit 0 / 1 / 2).

Maps options onto ``mobiledeploy.check.core.run_check`` and prints; never imports TensorFlow.
"""

from __future__ import annotations

import click

from mobiledeploy.check.budgets import LatencySpec, load_budgets
from mobiledeploy.check.core import ERROR, FAIL, INCONCLUSIVE, CheckConfig, run_check
from mobiledeploy.cli.common import (click_options, emit_json, json_option, md_option, stderr_console, stdout_console,
                                     target_options, wide_option)
from mobiledeploy.cli.progress import progress_lines
from mobiledeploy.cli.table import Column, render
from mobiledeploy.errors import BudgetError
from mobiledeploy.progress import OnProgress

# check's library (numpy, the runtimes) is imported inside the command: `check --help` loads neither.


@click.command()
@click_options(CheckConfig, "budget", "artifacts", "baseline", "data")
@target_options
@click_options(CheckConfig, "max_time_s", "strict", "skip")
@click.option("--junit", "junit_path", type=click.Path(dir_okay=False, writable=True),
              help="Also write JUnit XML (one test case per check) to this path.")
@click.option("--measure-yardstick", is_flag=True,
              help="Only measure the yardstick on this machine and print the [yardstick] line for a budget file.")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines on stderr.")
@json_option
@md_option
@wide_option
def check(budget, artifacts, baseline, data, target_name, target_file, max_time_s, strict, skip, junit_path,
          measure_yardstick, quiet, json_path, md_path, wide) -> None:
    """Check every budget in FILE: exit 0 when all hold, 1 when any is broken, 2 on a config error.

    Size and accuracy are exact. Latency is compared, in the same run, against a
    baseline (max_latency_ratio) or the built-in yardstick (max_latency_ms, scaled to
    this machine): candidate and reference alternate, each in its own child process,
    and a regression is reported only when the whole confidence interval of the ratio
    lies above the limit. Latencies are the HOST's, under the target's settings.
    """
    from mobiledeploy.check import report as rep

    err = stderr_console()
    progress = None if quiet else progress_lines(style="dim", console=err)
    if measure_yardstick:
        _measure_yardstick(budget, target_name, target_file, progress)
        return
    if not budget:
        raise click.UsageError("give the budget file with --budget FILE (or use --measure-yardstick)")
    report = run_check(CheckConfig(budget=budget, artifacts=artifacts, baseline=baseline, data=data,
                                   target=target_name, target_file=target_file, max_time_s=max_time_s,
                                   strict=strict, skip=skip, progress=progress))
    emit_json(json_path, report.to_json())
    rep.write_outputs(report, junit_path=junit_path, md_path=md_path)
    if json_path != "-":
        _print(report, wide)
    if not report.ok:
        names = ", ".join(o.name for o in report.broken())
        raise BudgetError(f"{len(report.broken())} of {len(report.outcomes)} budget checks broken: {names}")


def _print(report, wide: bool) -> None:
    """check, limit, measured, interval, verdict; then the detail of each broken check, the summary."""
    from rich.text import Text

    from mobiledeploy.check import report as rep

    con = stdout_console()
    rows = rep.rows(report)
    render(con, (Column("check", fold=True), Column("limit", "right"), Column("measured", "right"),
                 Column("interval", priority=1), Column("verdict", fold=True)),
           [(*r[:4], Text(r[4], style=rep.STYLE[o.verdict])) for o, r in zip(report.outcomes, rows)],
           title=Text(f"mobiledeploy check: {report.budget} ({rep.latency_label(report)})"), title_justify="left",
           wide=wide)
    for o, r in zip(report.outcomes, rows):
        if (o.verdict in (FAIL, ERROR, INCONCLUSIVE) or o.check.startswith("estimate_ms")) and r[5]:
            con.print(Text(f"  {o.name}: {r[5]}"))
    for note in rep.degraded_notes(report):
        con.print(Text(note, style="yellow"))
    con.print(Text(report.summary()))


def _measure_yardstick(budget, target_name, target_file, progress: OnProgress | None) -> None:
    """Measured with the budget file's [latency] settings when --budget is given."""
    from mobiledeploy.check.latency import measure_yardstick, resolve_target

    bf = load_budgets(budget) if budget else None
    target = resolve_target(target_name or (bf.target if bf else None), target_file)
    r = measure_yardstick(target, bf.latency if bf else LatencySpec(), progress=progress)
    click.echo(f"# yardstick v{r['version']}: percentile {r['quantile']:g} over {r['rounds']} child processes of "
               f"each one's {r['statistic']} (host latency, {r['target']} settings, {r['threads']} thread(s))")
    click.echo("[yardstick]")
    click.echo(f"reference_ms = {{ {r['target']} = {r['reference_ms']:.4f} }}")

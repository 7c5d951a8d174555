"""`mobiledeploy targets`: list the shipped target profiles, or show one in full."""

from __future__ import annotations

import click

from mobiledeploy.cli.common import emit_json, json_option, stdout_console


@click.command()
@click.argument("name", required=False)
@click.option("--target-file", type=click.Path(exists=True, dir_okay=False),
              help="Show this profile file instead of a shipped one.")
@json_option
def targets(name: str | None, target_file: str | None, json_path: str | None) -> None:
    """List the mobile CPU target profiles (or show NAME with its figures and sources).

    A profile sets the threads, pinned cores and runtime options the host uses when
    benchmarking with --target NAME. The numbers measured are host latency under the
    device's settings, never the device's own latency.
    """
    from rich.table import Table

    from mobiledeploy import targets as tg

    if name or target_file:
        t = tg.load_target(name, file=target_file)
        if json_path:
            emit_json(json_path, t.to_json())
            if json_path == "-":
                return
        _show_one(t)
        return
    profiles = tg.list_targets()
    if json_path:
        emit_json(json_path, {"schema_version": 1, "targets": [t.to_json() for t in profiles]})
        if json_path == "-":
            return
    table = Table(title="Target profiles (bench measures host latency under these settings)")
    for col in ("name", "threads", "affinity", "xnnpack", "ort opt", "device core", "clock GHz", "description"):
        table.add_column(col, justify="right" if col in ("threads", "clock GHz") else "left")
    for t in profiles:
        d = t.device
        table.add_row(t.name, str(t.threads or "all"), _affinity(t.affinity), "on" if t.xnnpack else "off",
                      t.ort_opt_level, f"{d.get('cores', '')} x {d['core']}" if d.get("cores") else d.get("core", ""),
                      str(d.get("clock_ghz", "")), t.description)
    stdout_console().print(table)


def _affinity(a) -> str:
    return ",".join(map(str, a)) if isinstance(a, tuple) else a


def _show_one(t) -> None:
    from rich.table import Table

    table = Table(title=f"{t.name}: {t.description}", show_header=True)
    table.add_column("setting / figure")
    table.add_column("value")
    table.add_column("source")
    table.add_row("threads", str(t.threads or "all host cores"), "")
    table.add_row("affinity", _affinity(t.affinity), "")
    table.add_row("xnnpack", "on" if t.xnnpack else "off", "")
    table.add_row("ort_opt_level", t.ort_opt_level, "")
    sources = t.device.get("sources", {})
    for key, value in t.device.items():
        if key in ("sources", "assumptions"):
            continue
        table.add_row(key, str(value), str(sources.get(key, "")))
    for a in t.device.get("assumptions", []):
        table.add_row("assumption", a, "")
    if t.cost_model:
        table.add_row("cost_model", ", ".join(sorted(t.cost_model)), "see `mobiledeploy estimate`")
    table.add_row("file", str(t.path), "")
    stdout_console().print(table)

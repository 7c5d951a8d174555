"""`mobiledeploy targets`: list the shipped target profiles, or show one in full."""

from __future__ import annotations

import click

from mobiledeploy.cli.common import emit_json, json_option, stdout_console, wide_option
from mobiledeploy.cli.table import Column, render

COLUMNS = (Column("name"), Column("threads", "right"), Column("affinity", priority=2), Column("xnnpack", priority=3),
           Column("ort opt", priority=3), Column("device core", fold=True, priority=1),
           Column("clock GHz", "right", priority=2), Column("description", fold=True, priority=1))


@click.command()
@click.argument("name", required=False)
@click.option("--target-file", type=click.Path(exists=True, dir_okay=False),
              help="Show this profile file instead of a shipped one.")
@json_option
@wide_option
def targets(name: str | None, target_file: str | None, json_path: str | None, wide: bool) -> None:
    """List the mobile CPU target profiles (or show NAME with its figures and sources).

    A profile sets the threads, pinned cores and runtime options the host uses when
    benchmarking with --target NAME. The numbers measured are host latency under the
    device's settings, never the device's own latency.
    """
    from mobiledeploy import targets as tg

    if name or target_file:
        t = tg.load_target(name, file=target_file)
        if json_path:
            emit_json(json_path, t.to_json())
            if json_path == "-":
                return
        _show_one(t, wide)
        return
    profiles = tg.list_targets()
    if json_path:
        emit_json(json_path, {"schema_version": 1, "targets": [t.to_json() for t in profiles]})
        if json_path == "-":
            return
    rows = [(t.name, str(t.threads or "all"), _affinity(t.affinity), "on" if t.xnnpack else "off", t.ort_opt_level,
             f"{t.device.get('cores', '')} x {t.device['core']}" if t.device.get("cores") else t.device.get("core", ""),
             str(t.device.get("clock_ghz", "")), t.description) for t in profiles]
    render(stdout_console(), COLUMNS, rows, wide=wide,
           title="Target profiles (bench measures host latency under these settings)")


def _affinity(a) -> str:
    return ",".join(map(str, a)) if isinstance(a, tuple) else a


def _show_one(t, wide: bool) -> None:
    rows = [("threads", str(t.threads or "all host cores"), ""), ("affinity", _affinity(t.affinity), ""),
            ("xnnpack", "on" if t.xnnpack else "off", ""), ("ort_opt_level", t.ort_opt_level, "")]
    sources = t.device.get("sources", {})
    rows += [(key, str(value), str(sources.get(key, ""))) for key, value in t.device.items()
             if key not in ("sources", "assumptions")]
    rows += [("assumption", a, "") for a in t.device.get("assumptions", [])]
    if t.cost_model:
        rows.append(("cost_model", ", ".join(sorted(t.cost_model)), "see `mobiledeploy estimate`"))
    rows.append(("file", str(t.path), ""))
    render(stdout_console(), (Column("setting / figure"), Column("value", fold=True), Column("source", fold=True)),
           rows, wide=wide, title=f"{t.name}: {t.description}")

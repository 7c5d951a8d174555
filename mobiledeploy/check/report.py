"""Render a ``CheckReport``: rows for the terminal table, JUnit XML, Markdown (JSON is ``to_json``).

Every renderer shows the same five things per check: check, limit, measured, interval,
verdict. Writers go through ``mobiledeploy.io`` (atomic), except the GitHub step summary,
which is appended to, as GitHub expects.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET

from mobiledeploy import io
from mobiledeploy.check.core import CheckReport
from mobiledeploy.check.outcome import ERROR, FAIL, INCONCLUSIVE, PASS, SKIPPED, CheckOutcome
from mobiledeploy.models.artifacts import degraded_notes as notes, marked

STYLE = {PASS: "green", FAIL: "bold red", ERROR: "bold red", INCONCLUSIVE: "yellow", SKIPPED: "dim"}
_MD_MARK = {PASS: "✅ pass", FAIL: "❌ fail", ERROR: "❌ error", INCONCLUSIVE: "⚠️ inconclusive", SKIPPED: "➖ skipped"}


def fmt_value(v: float | None, unit: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    if unit == "x":
        return f"{v:.3f}x"
    if unit == "ms":
        return f"{v:.3f} ms"
    if unit == "KiB":
        return f"{v:.1f} KiB"
    return f"{v:.4f}"


def fmt_limit(o: CheckOutcome) -> str:
    return f"{o.op} {fmt_value(o.limit, o.unit)}"


def fmt_interval(o: CheckOutcome) -> str:
    if o.check.startswith("estimate_ms") and o.verdict in (PASS, FAIL):  # a device estimate, not a measurement
        return "emulated kernels" if o.extra.get("method") == "kernels" else "cost model"
    if o.low is None:
        return "exact" if o.verdict in (PASS, FAIL) else "-"
    pct = round(100 * o.extra.get("confidence", 0.95))
    return f"[{fmt_value(o.low, o.unit)}, {fmt_value(o.high, o.unit)}] ({pct}%)"


def verdict_text(o: CheckOutcome, strict: bool) -> str:
    if o.verdict == INCONCLUSIVE:
        return "inconclusive (fails: --strict)" if strict else "inconclusive (passes with a warning)"
    if o.verdict == FAIL and o.check.startswith("latency"):
        return "fail (regression)"
    return o.verdict


def rows(report: CheckReport) -> list[tuple[str, str, str, str, str, str]]:
    """(check, limit, measured, interval, verdict, detail) per outcome, as text; the check's name carries
    the export's degraded mark."""
    return [(marked(o.name, o.extra.get("degraded")), fmt_limit(o), fmt_value(o.measured, o.unit), fmt_interval(o),
             verdict_text(o, report.strict), o.detail) for o in report.outcomes]


def latency_label(report: CheckReport) -> str:
    if not any(o.check.startswith("latency") for o in report.outcomes):
        return f"target {report.target}; no latency checks"
    return report.environment.get("latency", {}).get("label") or f"host latency, {report.target} settings"


def junit_xml(report: CheckReport) -> bytes:
    """JUnit XML: one <testcase> per check; broken checks carry a <failure>."""
    broken = {id(o) for o in report.broken()}
    suite = ET.Element("testsuite", name="mobiledeploy check", tests=str(len(report.outcomes)),
                       failures=str(sum(o.verdict != ERROR and id(o) in broken for o in report.outcomes)),
                       errors=str(sum(o.verdict == ERROR for o in report.outcomes)),
                       skipped=str(sum(o.verdict == SKIPPED for o in report.outcomes)),
                       time=f"{report.elapsed_s:.2f}")
    props = ET.SubElement(suite, "properties")
    for k, v in (("budget", report.budget), ("target", report.target), ("strict", str(report.strict).lower())):
        ET.SubElement(props, "property", name=k, value=v)
    for o in report.outcomes:
        case = ET.SubElement(suite, "testcase", classname=f"mobiledeploy.check.{o.artifact}", name=o.check,
                             time=f"{o.extra.get('seconds', 0.0):.2f}")
        text = (f"limit {fmt_limit(o)}; measured {fmt_value(o.measured, o.unit)}; interval {fmt_interval(o)}; "
                f"{o.detail}")
        if o.verdict == ERROR:
            ET.SubElement(case, "error", message=f"could not measure: {o.detail}", type="error").text = text
        elif id(o) in broken:
            ET.SubElement(case, "failure", message=f"{o.name}: {verdict_text(o, report.strict)}: measured "
                          f"{fmt_value(o.measured, o.unit)}, limit {fmt_limit(o)}", type=o.verdict).text = text
        elif o.verdict == SKIPPED:
            ET.SubElement(case, "skipped", message=o.detail)
        else:
            ET.SubElement(case, "system-out").text = f"{verdict_text(o, report.strict)}: {text}"
    root = ET.Element("testsuites", name="mobiledeploy", tests=suite.get("tests"),
                      failures=suite.get("failures"), errors=suite.get("errors"), time=suite.get("time"))
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def markdown(report: CheckReport) -> str:
    def cell(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    lines = [f"### mobiledeploy check: {'✅' if report.ok else '❌'} {report.summary()}", "",
             f"Budget `{report.budget}` ({latency_label(report)}; host latency is never a phone's).", "",
             "| check | limit | measured | interval | verdict |", "|---|---:|---:|---|---|"]
    for o, r in zip(report.outcomes, rows(report)):
        verdict = _MD_MARK[o.verdict] + (" (fails: --strict)" if o.verdict == INCONCLUSIVE and report.strict
                                         else "")
        lines.append("| " + " | ".join(cell(x) for x in (r[0], r[1], r[2], r[3], verdict)) + " |")
    notes = [f"- **{o.name}**: {o.detail}" for o in report.outcomes
             if (o.verdict != PASS or o.check.startswith("estimate_ms")) and o.detail]
    notes += [f"- {n}" for n in degraded_notes(report)]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def degraded_notes(report: CheckReport) -> list[str]:
    """The note naming the artifacts their export marked degraded (once each), or none."""
    seen = {}
    for o in report.outcomes:
        if o.extra.get("degraded") and o.artifact not in seen:
            seen[o.artifact] = o.extra["degraded"]
    return notes(seen.items())


def write_outputs(report: CheckReport, *, junit_path: str | None = None, md_path: str | None = None,
                  step_summary: bool = True) -> None:
    """JUnit and Markdown files (atomic), and the GitHub step summary when it is set."""
    if junit_path:
        io.write_bytes(junit_path, junit_xml(report))
    md = None
    if md_path:
        md = markdown(report)
        io.write_text(md_path, md)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary and summary:
        with open(summary, "a", encoding="utf-8") as f:
            f.write((md or markdown(report)) + "\n")

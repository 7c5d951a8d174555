"""The sweep's outputs: the results table (JSON, CSV, Markdown), PNG plots, and one
self-contained HTML report (plots embedded as base64 PNG: it opens offline).

Plots are drawn with matplotlib (the ``report`` extra); without it the tables are still
written and the HTML says the plots are missing.
"""

from __future__ import annotations

import base64
import csv
import html
import io as _io
from pathlib import Path

from mobiledeploy import io
from mobiledeploy.models.artifacts import degraded_note

COLUMNS = (  # (key, header) of the CSV and Markdown tables; est_<target>_ms are added per target
    ("config", "config"), ("format", "format"), ("precision", "precision"), ("size_kb", "size KB"),
    ("macs_m", "MMACs"), ("params_m", "M params"), ("host_p50_ms", "host p50 ms"), ("top1", "top-1"),
)
TAIL = (("degraded", "degraded"), ("status", "status"), ("node", "node"), ("error", "error"))
MARKERS = {"tflite": "o", "onnx": "s"}
COLORS = {"fp32": "tab:blue", "fp16": "tab:green", "dynamic": "tab:orange", "int8": "tab:red"}


def table_rows(results: list, targets) -> list[dict]:
    """One flat row per artifact (and one per failed job), in grid order; ``results``: ``SweepRow``s."""
    rows = []
    for res in results:
        m = res.model or {}
        base = {"config": res.name, "arch": m.get("arch"), "alpha": m.get("alpha"),
                "resolution": m.get("resolution"), "macs": m.get("macs"), "params": m.get("params"),
                "macs_m": _round(m.get("macs"), 1e6, 2), "params_m": _round(m.get("params"), 1e6, 3),
                "node": (res.node or {}).get("host"), "host_label": (res.bench or {}).get("label")}
        if not res.artifacts:
            rows.append({**base, "file": None, "path": None, "format": None, "precision": None, "runtime": None,
                         "size_kb": None, "host_p50_ms": None, "host_mean_ms": None, "host_min_ms": None, "top1": None,
                         "degraded": None,
                         "est_ms": {t: None for t in targets}, "status": "error", "error": res.error,
                         "samples_ms": []})
            continue
        for a in res.artifacts:
            host = a.host_ms or {}
            rows.append({**base, "file": a.file, "path": a.path, "format": a.format,
                         "precision": a.precision, "runtime": a.runtime,
                         "size_kb": round(a.size_bytes / 1024, 1), "host_p50_ms": host.get("p50"),
                         "host_mean_ms": host.get("mean"), "host_min_ms": host.get("min"), "top1": a.top1,
                         "est_ms": {t: (a.estimates.get(t) or {}).get("ms") for t in targets},
                         "status": a.status, "error": a.error, "samples_ms": a.samples_ms, "degraded": a.degraded})
    return rows


def _round(v, scale: float, nd: int):
    return None if v is None else round(v / scale, nd)


def _columns(targets) -> list[tuple[str, str]]:
    return [*COLUMNS, *((f"est:{t}", f"{t} est. ms") for t in targets), *TAIL]


def _cell(row: dict, key: str, *, text: bool = True):
    if key.startswith("est:"):
        v = row["est_ms"].get(key[4:])
        return "" if v is None and text else (f"{v:.2f}" if text else v)
    v = row.get(key)
    if key == "degraded":  # the export's mark, with its agreement and floor (CSV too)
        return degraded_note(v) if v else ("" if text else None)
    if not text:
        return v
    if v is None:
        return ""
    if key == "top1":
        return f"{100 * v:.2f} %"
    if key == "host_p50_ms":
        return f"{v:.2f}"
    return str(v)


def write_tables(out: Path, summary: dict) -> list[Path]:
    """results.json (everything), results.csv and results.md (the table)."""
    rows, targets = summary["rows"], summary["sweep"]["targets"]
    cols = _columns(targets)
    io.write_json(out / "results.json", summary)
    buf = _io.StringIO()
    w = csv.writer(buf)
    w.writerow([k.replace("est:", "est_ms_") for k, _ in cols])
    for r in rows:
        w.writerow(["" if _cell(r, k, text=False) is None else _cell(r, k, text=False) for k, _ in cols])
    io.write_text(out / "results.csv", buf.getvalue())
    io.write_text(out / "results.md", markdown(summary))
    return [out / "results.json", out / "results.csv", out / "results.md"]


def markdown(summary: dict) -> str:
    cols = _columns(summary["sweep"]["targets"])
    lines = [f"# Sweep: {len(summary['configs'])} configs, {len(summary['rows'])} rows", ""]
    lines += [f"> {n}" for n in notices(summary)] + [""]
    lines.append("| " + " | ".join(h for _, h in cols) + " |")
    lines.append("|" + "|".join("---:" if k in ("size_kb", "macs_m", "params_m", "host_p50_ms") or
                                k.startswith("est:") else "---" for k, _ in cols) + "|")
    for r in summary["rows"]:
        lines.append("| " + " | ".join(_cell(r, k).replace("|", "\\|") for k, _ in cols) + " |")
    for rec in summary["recommendations"]:
        lines += ["", f"**Recommended for {rec['target']}:** {rec['reason']}"]
    lines += [""] + [f"- warning: {w}" for w in summary["warnings"]]
    return "\n".join(lines).rstrip() + "\n"


def notices(summary: dict) -> list[str]:
    """What the reader must know before reading a number."""
    kernels = kernels_label(summary)
    out = [f"Host latency is measured on {summary['machine'].get('cpu')} ({summary['bench_label']}), "
           "never a phone's; the per-target columns are "
           + (f"each the {kernels}, not a measurement." if kernels else
              "cost-model estimates for the device, not measurements.")]
    if summary["random_weights"] and summary["sweep"]["data"]:
        out.insert(0, "RANDOM WEIGHTS: the models were randomly initialised, so their top-1 is meaningless "
                      "(chance level); it is shown only to check the pipeline. Give trained weights (--weights).")
    return out


def kernels_label(summary: dict) -> str | None:
    """The label of the per-target estimates when they come from the emulated kernels
    (``--estimate-method kernels``); None for the cost model's."""
    if summary["sweep"].get("estimate_method") != "kernels":
        return None
    from mobiledeploy.kernels.estimate import LABEL

    return LABEL


# ---------------------------------------------------------------- plots


def plots(out: Path, summary: dict) -> dict[str, Path]:
    """PNG files: one Pareto plot per target and the latency histograms."""
    try:
        import matplotlib
    except ImportError:
        return {}
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pngs = {}
    for target in summary["sweep"]["targets"]:
        fig = pareto_figure(plt, summary, target)
        pngs[f"Pareto front, {target}"] = _save(plt, fig, out / f"pareto_{target}.png")
    fig = histogram_figure(plt, summary)
    if fig is not None:
        pngs["Host latency histograms"] = _save(plt, fig, out / "latency_histograms.png")
    return pngs


def _save(plt, fig, path: Path) -> Path:
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def pareto_figure(plt, summary: dict, target: str):
    rows = [r for r in summary["rows"] if r["status"] == "ok" and r["est_ms"].get(target) is not None]
    on_front = set(summary["fronts"].get(target, []))
    acc = summary["use_accuracy"] or any(r.get("top1") is not None for r in rows)
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2), squeeze=False)
    panels = [("size_kb", "size (KB)"), ("top1", "top-1") if acc else ("macs_m", "million MACs (accuracy proxy)")]
    for ax, (key, label) in zip(axes[0], panels):
        pts = [r for r in rows if r.get(key) is not None]
        stairs = _panel_front(pts, target, key, lower=key == "size_kb")
        for r in pts:
            front = r["file"] in on_front
            ax.scatter(r["est_ms"][target], r[key], marker=MARKERS.get(r["format"], "^"),
                       c=COLORS.get(r["precision"], "grey"), s=60 if front else 25,
                       edgecolors="black" if front else "none", alpha=1.0 if front else 0.5, zorder=3)
        for r in stairs:  # label the panel's own front only: readable, and what the eye follows
            ax.annotate(f"{r['alpha']:g}/{r['resolution']} {r['precision']}", (r["est_ms"][target], r[key]),
                        textcoords="offset points", xytext=(4, -9 if key == "size_kb" else 4), fontsize=7)
        if stairs:
            ax.step([r["est_ms"][target] for r in stairs], [r[key] for r in stairs], "k--", where="post", lw=0.8,
                    zorder=2)
        how = "emulated kernels" if kernels_label(summary) else "cost model"
        ax.set_xlabel(f"estimated latency on {target} (ms, {how})")
        ax.set_ylabel(label)
        if key == "size_kb":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], ls="", marker=MARKERS.get(f, "^"), color="grey", label=f)
               for f in sorted({r["format"] for r in rows})]
    handles += [plt.Line2D([], [], ls="", marker="o", color=COLORS.get(p, "grey"), label=p)
                for p in sorted({r["precision"] for r in rows}, key=lambda p: list(COLORS).index(p) if p in COLORS else 9)]
    handles.append(plt.Line2D([], [], ls="", marker="o", mfc="white", mec="black", label="on the front (all axes)"))
    handles.append(plt.Line2D([], [], ls="--", color="black", label="front of this panel's two axes"))
    axes[0][0].legend(handles=handles, fontsize=8, loc="best")
    title = f"{target}: device estimate vs size vs " + ("top-1" if acc else "MACs")
    if acc and summary["random_weights"]:
        title += " (RANDOM WEIGHTS: top-1 meaningless)"
    fig.suptitle(title)
    return fig


def _panel_front(rows: list[dict], target: str, key: str, *, lower: bool) -> list[dict]:
    """The staircase of one panel: by rising latency, each point that improves ``key``."""
    out, best = [], None
    for r in sorted(rows, key=lambda r: (r["est_ms"][target], r[key] if lower else -r[key])):
        if best is None or (r[key] < best if lower else r[key] > best):
            out.append(r)
            best = r[key]
    return out


def histogram_figure(plt, summary: dict):
    configs = [c for c in dict.fromkeys(r["config"] for r in summary["rows"])
               if any(r["samples_ms"] for r in summary["rows"] if r["config"] == c)]
    if not configs:
        return None
    ncols = min(4, len(configs))
    nrows = -(-len(configs) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.6 * nrows), squeeze=False)
    import numpy as np

    for ax, config in zip(axes.flat, configs):
        mine = [r for r in summary["rows"] if r["config"] == config and r["samples_ms"]]
        every = np.concatenate([r["samples_ms"] for r in mine])
        lo, hi = float(every.min()), float(np.percentile(every, 98))  # a shared machine's rare stalls off-axis
        for r in mine:
            s = np.asarray(r["samples_ms"])
            off = int((s > hi).sum())
            ax.hist(s, bins=25, range=(lo, hi if hi > lo else lo + 1e-3), histtype="step", lw=1.3,
                    color=COLORS.get(r["precision"], "grey"), ls="-" if r["format"] == "tflite" else "--",
                    label=f"{r['format']} {r['precision']}" + (f" ({off} beyond)" if off else ""))
        ax.set_title(config, fontsize=9)
        ax.set_xlabel("host ms", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(configs):]:
        ax.axis("off")
    fig.suptitle(f"Host latency per run ({summary['bench_label']}; solid: TFLite, dashed: ONNX)")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- HTML

_CSS = """body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
td:nth-child(-n+3),th{text-align:left}tr.front td{background:#eef7ee}tr.err td{background:#fbeaea}
.notice{background:#fff4ce;border-left:5px solid #e0a800;padding:8px 12px;margin:8px 0}
.rec{background:#e6f2ff;border-left:5px solid #1f77b4;padding:8px 12px;margin:8px 0}
img.plot{max-width:100%;border:1px solid #ddd;margin:8px 0}code{background:#f4f4f4;padding:1px 4px}"""

# Sets data-plots-rendered on <html> to the number of plots the browser decoded (what the
# headless-browser check reads back from the DOM).
_SCRIPT = """window.addEventListener('load',function(){var n=0;document.querySelectorAll('img.plot')
.forEach(function(i){if(i.complete&&i.naturalWidth>0)n++;});document.documentElement.dataset.plotsRendered=n;
document.documentElement.dataset.tableRows=document.querySelectorAll('#results tbody tr').length;});"""


def write_html(out: Path, summary: dict, pngs: dict[str, Path]) -> Path:
    e = html.escape
    targets = summary["sweep"]["targets"]
    fronts = {f for t in targets for f in summary["fronts"].get(t, [])}
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>mobiledeploy sweep</title>"
             f"<style>{_CSS}</style><script>{_SCRIPT}</script></head><body>",
             f"<h1>mobiledeploy sweep: {len(summary['configs'])} configs, {len(summary['rows'])} rows</h1>"]
    parts += [f"<div class='notice'>{e(n)}</div>" for n in notices(summary)]
    parts += [f"<div class='rec'><b>Recommended for {e(r['target'])}:</b> {e(r['reason'])}</div>"
              for r in summary["recommendations"]]
    if summary["warnings"]:
        parts.append(f"<details class='notice'><summary>{len(summary['warnings'])} warning(s): quantized artifacts "
                     "slower than their fp32 sibling on the same runtime (host), failed configs</summary><ul>"
                     + "".join(f"<li>{e(w)}</li>" for w in summary["warnings"]) + "</ul></details>")
    if not pngs:
        parts.append("<p class='notice'>plots missing: matplotlib is not installed "
                     "(pip install 'mobiledeploy[report]')</p>")
    for title, path in pngs.items():
        data = base64.b64encode(Path(path).read_bytes()).decode()
        parts.append(f"<h2>{e(title)}</h2><img class='plot' alt='{e(title)}' src='data:image/png;base64,{data}'>")
    cols = _columns(targets)
    parts.append("<h2>Results</h2><p>Rows on a Pareto front are green.</p><table id='results'><thead><tr>" +
                 "".join(f"<th>{e(h)}</th>" for _, h in cols) + "</tr></thead><tbody>")
    for r in summary["rows"]:
        cls = "front" if r["file"] in fronts else ("err" if r["status"] != "ok" else "")
        parts.append(f"<tr class='{cls}'>" + "".join(f"<td>{e(_cell(r, k))}</td>" for k, _ in cols) + "</tr>")
    parts.append("</tbody></table>")
    m = summary["machine"]
    parts.append("<h2>Machine and versions</h2><table>" + "".join(
        f"<tr><th>{e(str(k))}</th><td style='text-align:left'>{e(str(v))}</td></tr>"
        for k, v in [*((k, v) for k, v in m.items() if k != "versions"), *summary["versions"].items(),
                     ("executor", summary["executor"]), ("wall time (s)", summary["wall_s"])]) + "</table>")
    parts.append("<h2>Sweep options</h2><pre>" + e("\n".join(f"{k} = {v}" for k, v in summary["sweep"].items()))
                 + "</pre></body></html>")
    return io.write_text(out / "report.html", "\n".join(parts))

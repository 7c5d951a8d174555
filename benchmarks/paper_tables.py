"""The MobileNet paper's Tables 6 and 7 as measured data, from a sweep's results.json.

    python -m benchmarks run paper_tables [--results build/sweep/results.json]

Per config of the alpha x resolution grid: MACs and parameters (counted on the built
model, the paper's convention), TFLite and ONNX sizes at fp32 and int8, host latency p50
(this machine, under the sweep's bench profile), the cost model's device estimate per
target, and top-1 where the sweep measured it on trained weights. The paper's own MACs,
parameters and ImageNet top-1 are printed beside Tables 6 (alpha at 224) and 7
(resolution at alpha 1.0) for comparison; those three are quoted from the paper, nothing
else is.

Writes benchmarks/results/paper_tables.md and .json.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.harness import BUILD

KIND = "study"

# (alpha, resolution) -> (ImageNet top-1 %, million MACs, million params): Howard et al. 2017, Tables 6-7
PAPER = {(1.0, 224): (70.6, 569, 4.2), (0.75, 224): (68.4, 325, 2.6), (0.5, 224): (63.7, 149, 1.3),
         (0.25, 224): (50.6, 41, 0.5), (1.0, 192): (69.1, 418, 4.2), (1.0, 160): (67.2, 290, 4.2),
         (1.0, 128): (64.4, 186, 4.2)}


def per_config(summary: dict) -> list[dict]:
    targets = summary["sweep"]["targets"]
    out: dict[str, dict] = {}
    for r in summary["rows"]:
        if r["status"] != "ok":
            continue
        c = out.setdefault(r["config"], {"config": r["config"], "alpha": r["alpha"], "resolution": r["resolution"],
                                         "macs_m": r["macs_m"], "params_m": r["params_m"]})
        tag = f"{r['format']}_{r['precision']}"
        c[f"size_kb_{tag}"] = r["size_kb"]
        c[f"host_p50_ms_{tag}"] = r["host_p50_ms"]
        c[f"host_min_ms_{tag}"] = r.get("host_min_ms")
        if r.get("top1") is not None:
            c[f"top1_{tag}"] = r["top1"]
        if r["format"] == "tflite":
            for t in targets:
                c[f"est_ms_{t}_{r['precision']}"] = r["est_ms"].get(t)
    return sorted(out.values(), key=lambda c: (-c["alpha"], -c["resolution"]))


def _f(v, fmt="{:.2f}") -> str:
    return "-" if v is None else fmt.format(v)


def markdown(summary: dict, configs: list[dict]) -> str:
    targets = summary["sweep"]["targets"]
    m = summary["machine"]
    acc = summary.get("use_accuracy")
    loads = [c.get("bench_loadavg_1m") for c in summary["configs"] if c.get("bench_loadavg_1m") is not None]
    lines = [f"Measured on {m.get('cpu')} ({m.get('cores')} cores), {summary['bench_label']}; host latency is "
             f"p50 (and min) of {summary['sweep']['samples']} timed runs, 1-minute load average "
             f"{min(loads, default=0):.1f}-{max(loads, default=0):.1f} during the benches (the host columns "
             "are only as quiet as the machine was). Host latencies are this machine's, never a "
             "phone's; the est. columns are the cost model's estimate for the device (TFLite). "
             + ("" if acc else "Accuracy was not measured on trained weights: no top-1 column."), ""]
    head = ["alpha", "res", "MMACs", "M params", "TFLite fp32 KB", "TFLite int8 KB", "ONNX fp32 KB", "ONNX int8 KB",
            "host TFLite fp32 ms", "host TFLite int8 ms", "host ONNX fp32 ms", "host ONNX int8 ms",
            "host TFLite fp32 min ms", "host TFLite int8 min ms",
            *(f"{t} est. {p} ms" for t in targets for p in ("fp32", "int8"))]
    if acc:
        head.append("top-1 TFLite int8")
    lines += ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for c in configs:
        cells = [f"{c['alpha']:g}", str(c["resolution"]), _f(c["macs_m"], "{:.1f}"), _f(c["params_m"], "{:.3f}"),
                 *(_f(c.get(f"size_kb_{k}"), "{:.0f}") for k in ("tflite_fp32", "tflite_int8", "onnx_fp32", "onnx_int8")),
                 *(_f(c.get(f"host_p50_ms_{k}")) for k in ("tflite_fp32", "tflite_int8", "onnx_fp32", "onnx_int8")),
                 *(_f(c.get(f"host_min_ms_{k}")) for k in ("tflite_fp32", "tflite_int8")),
                 *(_f(c.get(f"est_ms_{t}_{p}")) for t in targets for p in ("fp32", "int8"))]
        if acc:
            cells.append(_f(c.get("top1_tflite_int8") and 100 * c["top1_tflite_int8"], "{:.2f} %"))
        lines.append("| " + " | ".join(cells) + " |")
    by = {(c["alpha"], c["resolution"]): c for c in configs}
    for title, keys in (("Table 6 (width multiplier, 224 px)", [(a, 224) for a in (1.0, 0.75, 0.5, 0.25)]),
                        ("Table 7 (resolution, alpha 1.0)", [(1.0, r) for r in (224, 192, 160, 128)])):
        rows = [k for k in keys if k in by]
        if not rows:
            continue
        lines += ["", f"**{title}**: measured here vs. the paper (paper columns quoted, not measured)", "",
                  "| config | MMACs (here) | MMACs (paper) | M params (here) | M params (paper) | "
                  "paper ImageNet top-1 | host TFLite fp32 p50 / min ms | " + " | ".join(f"{t} est. fp32 ms" for t in targets) + " |",
                  "|---|" + "---:|" * (6 + len(targets))]
        for k in rows:
            c, (top1, macs, params) = by[k], PAPER[k]
            lines.append(f"| {k[0]:g} MobileNet-{k[1]} | {_f(c['macs_m'], '{:.0f}')} | {macs} | "
                         f"{_f(c['params_m'], '{:.2f}')} | {params} | {top1} % | {_f(c.get('host_p50_ms_tflite_fp32'))} / {_f(c.get('host_min_ms_tflite_fp32'))} | "
                         + " | ".join(_f(c.get(f"est_ms_{t}_fp32")) for t in targets) + " |")
    return "\n".join(lines) + "\n"


def add_arguments(ap) -> None:
    ap.add_argument("--results", default=str(BUILD / "sweep" / "results.json"))


def run(args) -> dict:
    summary = json.loads(Path(args.results).read_text())
    configs = per_config(summary)
    md = markdown(summary, configs)
    print(md)
    return {"source": str(args.results), "machine": summary["machine"], "bench_label": summary["bench_label"],
            "configs": configs, "_text": md}

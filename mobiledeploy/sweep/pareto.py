"""Decision support on the sweep's table: Pareto fronts, a recommendation, warnings.

Rows are the flat artifact rows of ``mobiledeploy.sweep.report.table_rows``: one per
artifact, with ``est_ms`` (device estimate per target), ``size_kb``, ``top1`` (or None),
``macs``, ``host_p50_ms``.

- ``front(rows, target)``: the artifacts no other artifact beats on every objective:
  device-estimated latency (lower), size (lower) and, when measured on trained weights,
  top-1 (higher); without it, top-1's proxy (below): MACs (higher), then precision
  (fp32 before fp16, dynamic, int8).
- ``recommend(...)``: ONE artifact under ``--max-latency-ms``, ``--max-size-kb`` and
  ``--min-top1`` on a target, and why. With meaningful accuracy it is the most accurate
  artifact that fits; without (no ``--data``, or random weights) the one with the most
  multiply-accumulates, the MobileNet paper's proxy (accuracy grows with MACs across
  its alpha x resolution grid), fp32 before quantized ones at equal MACs.
- ``slower_than_fp32(rows)``: quantized artifacts whose host latency is above their
  fp32 sibling's (same config, same format, same runtime).
"""

from __future__ import annotations

from dataclasses import dataclass

PRECISION_RANK = {"fp32": 0, "fp16": 1, "dynamic": 2, "int8": 3}
SLOWER_MARGIN = 0.10  # host timings within 10 % are noise on a shared machine, not a finding
FORMAT_RANK = {"tflite": 0, "onnx": 1}


def _ok(rows, target: str) -> list[dict]:
    return [r for r in rows if r["status"] == "ok" and r["est_ms"].get(target) is not None]


def objectives(row: dict, target: str, use_accuracy: bool) -> tuple[float, ...]:
    """Smaller is better on every axis. Without accuracy, its proxy: more MACs, then a wider precision."""
    obj = (row["est_ms"][target], row["size_kb"])
    if use_accuracy:
        return obj + (-row["top1"],)
    return obj + (-(row.get("macs") or 0), PRECISION_RANK.get(row["precision"], 9))


def front(rows: list[dict], target: str, *, use_accuracy: bool) -> list[dict]:
    """The non-dominated rows for ``target``, fastest first."""
    pts = _ok(rows, target)
    if use_accuracy:
        pts = [r for r in pts if r.get("top1") is not None]
    objs = [objectives(r, target, use_accuracy) for r in pts]

    def dominated(i: int) -> bool:
        return any(all(a <= b for a, b in zip(o, objs[i])) and o != objs[i] for j, o in enumerate(objs) if j != i)

    return sorted((r for i, r in enumerate(pts) if not dominated(i)), key=lambda r: r["est_ms"][target])


@dataclass(frozen=True)
class Constraints:
    max_latency_ms: float | None = None
    max_size_kb: float | None = None
    min_top1: float | None = None

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.max_latency_ms, self.max_size_kb, self.min_top1))

    def failures(self, row: dict, target: str) -> list[str]:
        out = []
        if self.max_latency_ms is not None and row["est_ms"][target] > self.max_latency_ms:
            out.append(f"est. {row['est_ms'][target]:.2f} ms > {self.max_latency_ms:g} ms")
        if self.max_size_kb is not None and row["size_kb"] > self.max_size_kb:
            out.append(f"{row['size_kb']:.0f} KB > {self.max_size_kb:g} KB")
        if self.min_top1 is not None and (row.get("top1") is None or row["top1"] < self.min_top1):
            top1 = "unmeasured" if row.get("top1") is None else f"{100 * row['top1']:.2f} %"
            out.append(f"top-1 {top1} < {100 * self.min_top1:.2f} %")
        return out

    def describe(self) -> str:
        parts = []
        if self.max_latency_ms is not None:
            parts.append(f"device estimate <= {self.max_latency_ms:g} ms")
        if self.max_size_kb is not None:
            parts.append(f"size <= {self.max_size_kb:g} KB")
        if self.min_top1 is not None:
            parts.append(f"top-1 >= {100 * self.min_top1:g} %")
        return ", ".join(parts) or "no constraints"


@dataclass(frozen=True)
class Recommendation:
    target: str
    row: dict | None  # None: nothing fits
    reason: str
    fitting: int  # artifacts within the constraints
    considered: int

    def to_json(self) -> dict:
        return {"target": self.target, "file": self.row["file"] if self.row else None,
                "config": self.row["config"] if self.row else None, "reason": self.reason,
                "fitting": self.fitting, "considered": self.considered}


def recommend(rows: list[dict], target: str, constraints: Constraints, *, use_accuracy: bool) -> Recommendation:
    pts = _ok(rows, target)
    fits = [r for r in pts if not constraints.failures(r, target)]
    if not fits:
        reason = f"no artifact meets {constraints.describe()} on {target}"
        if pts:
            best = min(pts, key=lambda r: (len(constraints.failures(r, target)), r["est_ms"][target]))
            reason += f"; the closest is {best['file']} ({'; '.join(constraints.failures(best, target))})"
        return Recommendation(target, None, reason, 0, len(pts))
    if use_accuracy:
        key = lambda r: (-(r.get("top1") or 0.0), r["est_ms"][target], r["size_kb"])  # noqa: E731
    else:
        key = lambda r: (-(r.get("macs") or 0), PRECISION_RANK.get(r["precision"], 9),  # noqa: E731
                         r["est_ms"][target], r["size_kb"], FORMAT_RANK.get(r["format"], 9))
    best = min(fits, key=key)
    est = best["est_ms"][target]
    facts = (f"{best['config']} {best['precision']} {best['format']}: est. {est:.2f} ms on {target} "
             f"(device estimate), {best['size_kb']:.0f} KB")
    if best.get("top1") is not None:
        facts += f", top-1 {100 * best['top1']:.2f} %"
    if use_accuracy:
        why = f"the most accurate of the {len(fits)} artifacts that meet {constraints.describe()}"
    else:
        why = (f"the most multiply-accumulates ({best['macs'] / 1e6:.0f} M MACs) of the {len(fits)} artifacts "
               f"that meet {constraints.describe()}; accuracy was not measured on trained weights, so MACs "
               f"stand in for it (the MobileNet paper: accuracy grows with MACs)")
    return Recommendation(target, best, f"{facts}; {why}", len(fits), len(pts))


def slower_than_fp32(rows: list[dict], margin: float = SLOWER_MARGIN) -> list[str]:
    """One line per quantized artifact slower than its fp32 sibling on the same runtime (host)."""
    fp32 = {(r["config"], r["format"]): r for r in rows
            if r["precision"] == "fp32" and r["status"] == "ok" and r.get("host_p50_ms")}
    out = []
    for r in rows:
        sib = fp32.get((r["config"], r["format"]))
        if r["precision"] == "fp32" or sib is None or r["status"] != "ok" or not r.get("host_p50_ms"):
            continue
        if r["host_p50_ms"] > sib["host_p50_ms"] * (1 + margin):
            out.append(f"{r['file']} is slower than its fp32 sibling on {r['runtime']}: host p50 "
                       f"{r['host_p50_ms']:.2f} ms vs {sib['host_p50_ms']:.2f} ms "
                       f"({r['host_p50_ms'] / sib['host_p50_ms']:.1f}x, {r['host_label']}); do not ship it "
                       f"for this runtime on this kind of CPU without measuring on the device")
    return out

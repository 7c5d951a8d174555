"""``bench --profile``: per-operator host times of a model, measured in a child process
(``mobiledeploy.runtimes.profile`` says how, per runtime), side by side with the cost
model's per-layer figures for the ``host`` target (``estimate --target host``), and their
table rows (terminal and Markdown)."""

from __future__ import annotations

import re

from mobiledeploy.bench.report import md_escape, md_rows
from mobiledeploy.cost import info
from mobiledeploy.cost.estimate import cost_model_for, estimate_layers
from mobiledeploy.cost.model import runtime_layers
from mobiledeploy.errors import MobiledeployError, one_line
from mobiledeploy.runtimes.child import run_child
from mobiledeploy.targets import load_target

# The per-operator table, terminal and Markdown: (header, justify, priority, fold) as in
# ``mobiledeploy.cli.table.Column`` (priority: dropped first from a narrow terminal).
COLUMNS = (("#", "right", 0, False), ("operator", "left", 0, False), ("node or output tensor", "left", 1, True),
           ("host ms", "right", 0, False), ("%", "right", 0, False), ("host est. ms", "right", 2, False))


def profile_model(path: str, settings) -> dict:
    """Per-operator times of ``path`` under ``settings`` (a ``BenchSettings``), in a child
    process pinned to the same cores as ``bench``, then ``attach_estimates``."""
    job = {"task": "profile", "model": str(path), "threads": settings.threads,
           "cores": list(settings.affinity or ()), "xnnpack": settings.xnnpack,
           "ort_opt_level": settings.ort_opt_level, "warmup": settings.warmup, "runs": settings.runs or 50,
           "seed": settings.seed, "shapes": {k: list(v) for k, v in settings.shapes}}
    try:
        prof = run_child(job, timeout_s=settings.timeout_s)
    except OSError as e:  # could not start the child (no processes, no memory)
        return {"status": "error", "error": f"cannot start the profiling child process: {e}"}
    if prof.get("status") == "ok":
        attach_estimates(prof, path, threads=settings.threads, shapes=dict(settings.shapes))
    return prof


def _candidates(name: str) -> list[str]:
    """Names the cost model may give the layer a runtime reports as ``name``: the name
    itself, then without ONNX Runtime's suffixes (``x:0_nchwc`` after a layout rewrite,
    ``Conv__12_token_3`` and ``_quant`` after quantized fusions)."""
    out = [name, name.split(":")[0]]
    out.append(re.sub(r"_(token_\d+|quant|nchwc)$", "", out[-1]))
    return list(dict.fromkeys(out))


def match_layers(op_names, layers) -> list[int | None]:
    """For each measured operator, the index of the cost-model layer it runs (or None).

    A layer is found by its name or by the name of an op fused into it (ONNX Runtime
    names a fused conv after the activation's output); each layer is matched once."""
    by_name: dict[str, int] = {}
    for i, layer in enumerate(layers):
        for key in (layer.name, *getattr(layer, "fused", ())):
            by_name.setdefault(key, i)
    used: set[int] = set()
    out: list[int | None] = []
    for name in op_names:
        hit = next((by_name[c] for c in _candidates(name) if c in by_name and by_name[c] not in used), None)
        if hit is not None:
            used.add(hit)
        out.append(hit)
    return out


def attach_estimates(profile: dict, path: str, *, threads: int | None, shapes: dict | None = None) -> None:
    """Add ``estimate_ms`` (``estimate --target host`` for the layer that operator runs,
    or None) to each operator of ``profile`` and an ``estimate`` summary with its label.
    A model the cost model cannot read gets ``estimate_error`` instead; never raises."""
    import warnings

    try:
        stats = info.model_stats(path, shapes=shapes or None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = estimate_layers(stats.layers, cost_model_for(load_target("host"), threads=threads),
                                  precision=stats.precision, threads=threads, name=str(path), warn_other=False)
    except MobiledeployError as e:
        profile["estimate_error"] = str(e)
        return
    except Exception as e:  # a graph the cost model's parsers do not expect: the measurement still stands
        profile["estimate_error"] = f"the cost model cannot read this model ({one_line(e, 200, typed=True)})"
        return
    hits = match_layers([o["name"] for o in profile["ops"]], runtime_layers(stats.layers))  # est.layers' order
    for op, i in zip(profile["ops"], hits):
        op["estimate_ms"] = est.layers[i].estimate_us / 1e3 if i is not None else None
    matched = {i for i in hits if i is not None}
    profile["estimate"] = {
        "target": "host", "latency_ms": est.latency_ms, "precision": est.precision, "threads": est.threads,
        "matched_ms": sum(est.layers[i].estimate_us for i in matched) / 1e3,
        "layers": len(est.layers), "layers_matched": len(matched),
        "label": est.label, "fitted_from": est.fitted_from, "expected_error": est.expected_error}


def profile_rows(profile: dict, p50_ms: float | None) -> tuple[list[list[str]], str]:
    """Table rows (``COLUMNS``) and the summary: the sum against the bench p50, and the
    host estimate's total with its label."""
    total = profile["sum_ms"] or 0.0
    rows = [[str(o["index"]), o["op"], o["name"], f"{o['ms']:.3f}", f"{100 * o['ms'] / total:.1f}" if total else "-",
             f"{o['estimate_ms']:.3f}" if o.get("estimate_ms") is not None else "-"] for o in profile["ops"]]
    run = profile.get("run_p50_ms")
    vs = (f"; {100 * total / run:.0f} % of the end-to-end p50 measured beside them ({run:.3f} ms)"
          if run else "")
    if p50_ms:
        vs += f"; the bench run's p50 (its own process): {p50_ms:.3f} ms"
    summary = f"{len(rows)} operators, sum {total:.3f} ms{vs} ({profile['method']})."
    est = profile.get("estimate")
    if est:
        summary += (f" host est. ms: `estimate --target host` per layer, {est['latency_ms']:.3f} ms in total "
                    f"({est['layers_matched']} of {est['layers']} layers matched to an operator above; "
                    f"{est['expected_error']}): the cost model's estimate, not a measurement.")
    elif profile.get("estimate_error"):
        summary += f" No host estimate: {profile['estimate_error']}."
    return rows, summary


def profile_markdown(model: str, profile: dict, p50_ms: float | None) -> str:
    """One model's profile as a Markdown section (``bench --profile --md``)."""
    head = f"\n### {md_escape(model)}: per operator (host)\n"
    if profile.get("status") != "ok":
        return f"{head}\nProfile failed: {md_escape(str(profile.get('error')))}\n"
    rows, summary = profile_rows(profile, p50_ms)
    table = md_rows([c[0] for c in COLUMNS], [c[1] for c in COLUMNS], rows)
    return "\n".join([head, *table, "", md_escape(summary), ""])

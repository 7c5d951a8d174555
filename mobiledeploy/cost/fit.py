"""The fitted ``[cost_model]`` table of a target profile, as TOML.

The fit itself (parameters, bounds, leave-one-out) is ``mobiledeploy.cost.model.fit``;
measurements are read by ``mobiledeploy.cost.measurements``; ``target calibrate`` (the
library entry point is ``mobiledeploy/targets/calibrate.py``) writes this table.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

from mobiledeploy import io
from mobiledeploy.cost.estimate import CostModel
from mobiledeploy.cost.measurements import Measurement, measurement_for, read_measurements  # noqa: F401
from mobiledeploy.cost.model import FIT_PARAMS, FitResult, LayerArrays, default_params, fit  # noqa: F401


def predict_ms(model: CostModel, m: Measurement) -> float:
    return LayerArrays(m.layers, m.precision, m.threads).predict_ms(model)


# ---------------------------------------------------------------- measurement files

# ---------------------------------------------------------------- TOML output


def toml_value(v) -> str:
    import json

    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(float(f"{v:.6g}"))
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def cost_model_toml(table: dict, *, comment: str = "") -> str:
    """The ``[cost_model]`` section (sub-tables for dict values, arrays one item a line)."""
    lines = ["", "[cost_model]"] + [f"# {c}" for c in comment.splitlines() if c]
    subs = {k: v for k, v in table.items() if isinstance(v, dict)}
    for k, v in table.items():
        if k in subs:
            continue
        if isinstance(v, list) and v and isinstance(v[0], dict):
            lines.append(f"{k} = [")
            lines += [f"  {toml_value(x)}," for x in v]
            lines.append("]")
        else:
            lines.append(f"{k} = {toml_value(v)}")
    for k, v in subs.items():
        lines += ["", f"[cost_model.{k}]"] + [f"{a} = {toml_value(b)}" for a, b in v.items()]
    return "\n".join(lines) + "\n"


def strip_cost_model(text: str) -> str:
    """``text`` without its ``[cost_model]`` (and ``[cost_model.*]``) sections."""
    out, skipping = [], False
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("[") and not s.startswith("[["):
            skipping = s.startswith("[cost_model")
        if not skipping:
            out.append(line)
    return "\n".join(out).rstrip() + "\n"


def fit_table(result: FitResult, *, source: str) -> dict:
    """[cost_model] contents for a fit: parameters + what it was fitted on + the fit error."""
    return {**result.model.to_table(),
            "fitted_from": source,
            "fitted_at": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "fit_params": list(result.params),
            "fit_median_abs_error_pct": round(result.median_abs_error_pct, 2),
            "fit_worst_abs_error_pct": round(result.worst_abs_error_pct, 2),
            **({"loo_median_abs_error_pct": round(result.loo_median_abs_error_pct, 2),
                "loo_worst_abs_error_pct": round(result.loo_worst_abs_error_pct, 2),
                **({"loo_folds": result.loo_folds} if result.loo_folds else {})} if result.loo_errors_pct else {}),
            "fitted_on": [{"model": r.label, "precision": r.precision, "threads": r.threads,
                           "latency_ms": r.latency_ms, "estimate_ms": round(e, 4),
                           **({"loo_error_pct": round(lo, 2)} if lo is not None else {})}
                          for r, e, lo in zip(result.rows, result.estimates_ms,
                                              result.loo_errors_pct or (None,) * len(result.rows))]}


def write_cost_model_table(path: str | os.PathLike, table: dict, *, comment: str = "") -> Path:
    """Replace the [cost_model] of the target file at ``path`` (atomically), keeping the rest."""
    p = Path(path)
    text = strip_cost_model(p.read_text(encoding="utf-8")) if p.exists() else ""
    return io.write_text(p, text + cost_model_toml(table, comment=comment))

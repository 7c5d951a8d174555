"""`target calibrate`: device measurements -> a fitted target profile.

The fit itself (parameters, bounds, leave-one-out) is ``mobiledeploy.cost.model.fit``;
this module reads measurements (``mobiledeploy.cost.measurements`` for tool outputs), writes
the fitted ``[cost_model]`` table, and is the library entry point of ``target calibrate``.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass
from pathlib import Path


from mobiledeploy.cost.estimate import CostModel
from mobiledeploy.cost.measurements import Measurement, measurement_for, read_measurements  # noqa: F401
from mobiledeploy.cost.model import FIT_PARAMS, FitResult, LayerArrays, default_params, fit  # noqa: F401
from mobiledeploy.errors import UsageError


def predict_ms(model: CostModel, m: Measurement) -> float:
    return LayerArrays(m.layers, m.precision, m.threads).predict_ms(model)


# ---------------------------------------------------------------- measurement files

# ---------------------------------------------------------------- TOML output


def _toml_value(v) -> str:
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
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
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
            lines += [f"  {_toml_value(x)}," for x in v]
            lines.append("]")
        else:
            lines.append(f"{k} = {_toml_value(v)}")
    for k, v in subs.items():
        lines += ["", f"[cost_model.{k}]"] + [f"{a} = {_toml_value(b)}" for a, b in v.items()]
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
    from mobiledeploy import io

    p = Path(path)
    text = strip_cost_model(p.read_text(encoding="utf-8")) if p.exists() else ""
    return io.write_text(p, text + cost_model_toml(table, comment=comment))


# ---------------------------------------------------------------- target calibrate


@dataclass(frozen=True)
class CalibrateConfig:
    measurements: str | tuple[str, ...]  # PATH or MODEL=PATH (see mobiledeploy.cost.measurements), one or more
    out: str
    target: str | None = None
    target_file: str | None = None
    params: tuple[str, ...] | None = None
    name: str | None = None  # the new target's name (default: the --out file's stem)


@dataclass(frozen=True)
class CalibrateResult:
    target: str
    out: str
    fit: FitResult

    def to_json(self) -> dict:
        return {"target": self.target, "out": self.out, **self.fit.to_json()}


def calibrate(config: CalibrateConfig) -> CalibrateResult:
    """Fit a target's cost model to device measurements; write a new target TOML."""
    import re

    from mobiledeploy import io
    from mobiledeploy.cost.estimate import cost_model_for
    from mobiledeploy.targets import load_target

    target = load_target(config.target, file=config.target_file)
    out = Path(config.out)
    if out.suffix.lower() != ".toml":
        raise UsageError(f"--out {str(out)!r} must be a .toml file")
    if out.exists() and out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a directory")
    from mobiledeploy.cost.measurements import read_all, split_spec

    specs = (config.measurements,) if isinstance(config.measurements, str) else tuple(config.measurements)
    if not specs:
        raise UsageError("no --measurements given")
    rows = read_all(specs, default_threads=target.threads or 1)
    sources = ", ".join(split_spec(spec)[1].name for spec in specs)
    base = cost_model_for(target)
    result = fit(base, rows, params=config.params, loo=True)
    name = config.name or out.stem
    text = strip_cost_model(target.path.read_text(encoding="utf-8"))
    text, n = re.subn(r'(?m)^name\s*=\s*".*"$', f"name = {_toml_value(name)}", text, count=1)
    if not n:
        text = f"name = {_toml_value(name)}\n" + text
    header = (f"# Calibrated by `mobiledeploy target calibrate` from {target.name!r} with "
              f"{sources}.\n")
    table = fit_table(result, source=f"{sources} (base target {target.name})")
    comment = (f"fitted on {len(rows)} measurement(s), parameters {', '.join(result.params)}: "
               f"median |error| {result.median_abs_error_pct:.1f}%, worst {result.worst_abs_error_pct:.1f}% "
               f"(in-sample)")
    if result.loo_errors_pct:
        held_out = (f"{result.loo_folds}-fold (each row predicted by the fit on the rows outside its fold)"
                    if result.loo_folds else "leave-one-out (each row predicted by the fit on the others)")
        comment += (f"\n{held_out}: median |error| "
                    f"{result.loo_median_abs_error_pct:.1f}%, worst {result.loo_worst_abs_error_pct:.1f}%")
    with io.atomic_path(out) as tmp:
        tmp.write_text(header + text + cost_model_toml(table, comment=comment), encoding="utf-8")
        load_target(file=tmp)  # what we write must load as a target (else nothing is written)
    return CalibrateResult(target=target.name, out=str(out), fit=result)

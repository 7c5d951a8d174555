"""`target calibrate`: device measurements -> a fitted target profile.

The fit itself (parameters, bounds, leave-one-out) is ``mobiledeploy.cost_model.fit``;
this module reads measurements (``mobiledeploy.measurements`` for tool outputs), writes
the fitted ``[cost_model]`` table, and is the library entry point of ``target calibrate``.
"""

from __future__ import annotations

import csv
import datetime as _dt
import math
import os
from dataclasses import dataclass, field
from pathlib import Path


from mobiledeploy.cost_model import FIT_PARAMS, FitResult, LayerArrays, default_params, fit  # noqa: F401
from mobiledeploy.errors import UsageError
from mobiledeploy.estimate import PRECISION_BYTES, CostModel


@dataclass(frozen=True)
class Measurement:
    """One measured latency of one model on the device."""

    label: str
    layers: tuple = field(repr=False)
    precision: str
    threads: int
    latency_ms: float
    macs: int = 0

    def to_json(self) -> dict:
        return {"model": self.label, "precision": self.precision, "threads": self.threads,
                "latency_ms": self.latency_ms, "macs": self.macs}


def predict_ms(model: CostModel, m: Measurement) -> float:
    return LayerArrays(m.layers, m.precision, m.threads).predict_ms(model)


# ---------------------------------------------------------------- measurement files

_CONFIG_CACHE: dict = {}


def measurement_for(*, label: str, layers=None, model: str | None = None, arch: str | None = None,
                    alpha: float = 1.0, resolution: int = 224, classes: int = 1000,
                    precision: str | None = None, threads: int = 1, latency_ms: float) -> Measurement:
    """A Measurement from a model file or a config (configs are built once and cached)."""
    from mobiledeploy import info

    if layers is None and model is not None:
        stats = info.model_stats(model)
        if precision and stats.format != "keras" and precision != stats.precision:
            raise UsageError(f"{label}: precision {precision!r} given, but the file is a {stats.precision} model")
        layers, precision = stats.layers, precision or stats.precision
    elif layers is None:
        key = (arch, float(alpha), int(resolution), int(classes))
        if key not in _CONFIG_CACHE:
            _CONFIG_CACHE[key] = info.config_stats(arch, alpha=alpha, resolution=resolution, classes=classes)
        layers = _CONFIG_CACHE[key].layers
    precision = precision or "fp32"
    if precision not in PRECISION_BYTES:
        raise UsageError(f"{label}: precision {precision!r} unknown; choose from {', '.join(PRECISION_BYTES)}")
    return Measurement(label=label, layers=tuple(layers), precision=precision, threads=int(threads),
                       latency_ms=float(latency_ms), macs=sum(x.macs for x in layers))


def read_measurements(path: str | os.PathLike, *, default_threads: int = 1) -> list[Measurement]:
    """Rows of ``model`` (a file, relative to the CSV) or ``arch,alpha,res[,classes]``, plus
    ``precision`` (fp32|int8), optional ``threads`` and ``latency_ms`` (on the device)."""
    from mobiledeploy.measurements import FLAG as flag
    from mobiledeploy.measurements import read_text

    p = Path(path)
    text = read_text(p)
    reader = csv.DictReader([line for line in text.splitlines() if line.strip() and not line.startswith("#")])
    cols = set(reader.fieldnames or ())
    if "latency_ms" not in cols or not ({"model"} & cols or {"arch", "alpha", "res"} <= cols):
        raise UsageError(f"{str(p)!r} ({flag}) needs a header with latency_ms and either model or "
                         f"arch,alpha,res (got: {', '.join(sorted(cols)) or 'nothing'})")
    from mobiledeploy.archs import ARCHS

    rows = []
    for i, rec in enumerate(reader, start=2):
        where = f"{p.name} line {i}"
        try:
            lat = float(rec["latency_ms"])
        except (TypeError, ValueError):
            raise UsageError(f"{where}: latency_ms {rec.get('latency_ms')!r} is not a number") from None
        if not math.isfinite(lat) or lat <= 0:
            raise UsageError(f"{where}: latency_ms must be positive, got {rec['latency_ms']!r}")
        try:
            threads = int(rec.get("threads") or default_threads)
        except ValueError:
            raise UsageError(f"{where}: threads {rec.get('threads')!r} is not an integer") from None
        prec = (rec.get("precision") or "").strip() or None
        model = (rec.get("model") or "").strip()
        if model:
            mp = (p.parent / model) if not Path(model).is_absolute() else Path(model)
            if not mp.exists():
                raise UsageError(f"{where}: unknown model {model!r} (no such file next to {p.name})")
            rows.append(measurement_for(label=model, model=str(mp), precision=prec, threads=threads, latency_ms=lat))
            continue
        arch = (rec.get("arch") or "").strip()
        if arch not in ARCHS:
            raise UsageError(f"{where}: unknown model arch {arch!r}; choose from {', '.join(ARCHS)}")
        try:
            alpha, res = float(rec["alpha"]), int(rec["res"])
            classes = int(rec.get("classes") or 1000)
        except (TypeError, ValueError):
            raise UsageError(f"{where}: alpha/res/classes must be numbers") from None
        rows.append(measurement_for(label=f"{arch} {alpha:g} {res} {prec or 'fp32'}", arch=arch, alpha=alpha,
                                    resolution=res, classes=classes, precision=prec, threads=threads,
                                    latency_ms=lat))
    if not rows:
        raise UsageError(f"{str(p)!r} ({flag}) has no measurement rows")
    return rows


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
                "loo_worst_abs_error_pct": round(result.loo_worst_abs_error_pct, 2)} if result.loo_errors_pct else {}),
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
    measurements: str | tuple[str, ...]  # PATH or MODEL=PATH (see mobiledeploy.measurements), one or more
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
    from mobiledeploy.estimate import cost_model_for
    from mobiledeploy.targets import load_target

    target = load_target(config.target, file=config.target_file)
    out = Path(config.out)
    if out.suffix.lower() != ".toml":
        raise UsageError(f"--out {str(out)!r} must be a .toml file")
    if out.exists() and out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a directory")
    from mobiledeploy.measurements import read, split_spec

    specs = (config.measurements,) if isinstance(config.measurements, str) else tuple(config.measurements)
    if not specs:
        raise UsageError("no --measurements given")
    rows = [row for spec in specs for row in read(spec, default_threads=target.threads or 1)]
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
        comment += (f"\nleave-one-out (each row predicted by the fit on the others): median |error| "
                    f"{result.loo_median_abs_error_pct:.1f}%, worst {result.loo_worst_abs_error_pct:.1f}%")
    with io.atomic_path(out) as tmp:
        tmp.write_text(header + text + cost_model_toml(table, comment=comment), encoding="utf-8")
        load_target(file=tmp)  # what we write must load as a target (else nothing is written)
    return CalibrateResult(target=target.name, out=str(out), fit=result)

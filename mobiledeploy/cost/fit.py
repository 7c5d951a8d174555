"""Fitting the cost model to measurements, and `target calibrate`.

Least squares on log latency (``scipy.optimize.least_squares``) over a few named
parameters, each a log-multiplier on the target's current value (its prior), with a weak
pull towards that prior so a handful of rows cannot send a parameter to an absurd value:

- ``scale``: the whole estimate (the only one fitted from a single measurement);
- ``compute``: every op class's efficiency; ``depthwise``: depthwise efficiency only;
- ``int8``: int8 efficiencies only; ``overhead``: the per-op overhead;
- ``bandwidth``: the effective memory bandwidth; ``threads``: the thread efficiency.

With n rows the default set is the first n of: compute, int8 (when rows mix fp32 and
int8), threads (when rows mix thread counts), overhead, depthwise, bandwidth; one row
fits ``scale`` alone. Asking for more parameters than rows is an error.
"""

from __future__ import annotations

import csv
import datetime as _dt
import math
import os
import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from mobiledeploy.errors import UsageError
from mobiledeploy.cost.estimate import (COMPUTE_CLASSES, PRECISION_BYTES, PRECISION_RATE, PRECISIONS, CostModel,
                                   runtime_layers)

FIT_PARAMS = ("scale", "compute", "depthwise", "int8", "overhead", "bandwidth", "threads")
PRIOR_WEIGHT = 0.05  # residual weight of log(param / prior); small = data decides


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


class _Row:
    """A measurement as arrays, so one evaluation of the model is a few numpy ops."""

    def __init__(self, m: Measurement):
        layers = runtime_layers(m.layers)
        act_b, w_b = PRECISION_BYTES[m.precision]
        self.rate = PRECISION_RATE[m.precision]
        self.macs = np.array([x.macs for x in layers], float)
        self.bytes = np.array([x.bytes_moved(act_b, w_b) for x in layers], float)
        self.cls = [x.op_class for x in layers]
        self.threads = m.threads

    def predict_ms(self, model: CostModel, *, smooth: float | None = None) -> float:
        """The model's estimate; ``smooth=p`` replaces max(a, b) by (a^p + b^p)^(1/p), which
        the fit uses first so that both terms have a gradient."""
        eff = np.array([model.efficiency[self.rate].get(c, np.inf) for c in self.cls])
        speed = model.speedup(self.threads)
        comp = self.macs / (model.peak_gmacs[self.rate] * 1e9 * eff) / speed
        mem = self.bytes / (model.bandwidth_gbs * 1e9) / speed
        both = np.maximum(comp, mem) if smooth is None else (comp ** smooth + mem ** smooth) ** (1.0 / smooth)
        return float((both + model.overhead_us * 1e-6).sum() * model.scale * 1e3)


def _apply(base: CostModel, names: tuple[str, ...], theta) -> CostModel:
    m = {n: math.exp(float(t)) for n, t in zip(names, theta)}
    eff = {p: dict(base.efficiency[p]) for p in PRECISIONS}
    for p in PRECISIONS:
        for c in COMPUTE_CLASSES:
            eff[p][c] *= m.get("compute", 1.0) * (m.get("depthwise", 1.0) if c == "depthwise" else 1.0) * (
                m.get("int8", 1.0) if p == "int8" else 1.0)
    return replace(base, efficiency=eff, scale=base.scale * m.get("scale", 1.0),
                   overhead_us=base.overhead_us * m.get("overhead", 1.0),
                   bandwidth_gbs=base.bandwidth_gbs * m.get("bandwidth", 1.0),
                   thread_efficiency=min(1.0, base.thread_efficiency * m.get("threads", 1.0)))


def default_params(rows: list[Measurement]) -> tuple[str, ...]:
    """As many parameters as the rows allow, most telling first (see the module docstring)."""
    n = len(rows)
    if n <= 1:
        return ("scale",)
    order = ["compute"]
    if len({r.precision == "int8" for r in rows}) > 1:
        order.append("int8")
    if len({r.threads for r in rows}) > 1:
        order.append("threads")
    order += ["overhead", "depthwise", "bandwidth"]
    return tuple(order[:n])


@dataclass(frozen=True)
class FitResult:
    model: CostModel
    params: tuple[str, ...]
    rows: tuple[Measurement, ...]
    estimates_ms: tuple[float, ...]
    errors_pct: tuple[float, ...]  # (estimate - measured) / measured, per row

    @property
    def median_abs_error_pct(self) -> float:
        return float(statistics.median(abs(e) for e in self.errors_pct))

    @property
    def worst_abs_error_pct(self) -> float:
        return float(max(abs(e) for e in self.errors_pct))

    def to_json(self) -> dict:
        return {"params": list(self.params), "n_rows": len(self.rows),
                "median_abs_error_pct": self.median_abs_error_pct, "worst_abs_error_pct": self.worst_abs_error_pct,
                "rows": [{**r.to_json(), "estimate_ms": e, "error_pct": err}
                         for r, e, err in zip(self.rows, self.estimates_ms, self.errors_pct)],
                "cost_model": self.model.to_json()}


def fit(base: CostModel, rows: list[Measurement], *, params: tuple[str, ...] | None = None) -> FitResult:
    """Fit ``params`` of ``base`` to ``rows`` (least squares on log latency)."""
    from scipy.optimize import least_squares

    if not rows:
        raise UsageError("no measurements to fit (--measurements has no rows)")
    for r in rows:
        if not (isinstance(r.latency_ms, (int, float)) and math.isfinite(r.latency_ms) and r.latency_ms > 0):
            raise UsageError(f"measured latency for {r.label} must be a positive number of ms, got {r.latency_ms!r}")
    names = tuple(params) if params else default_params(rows)
    bad = [p for p in names if p not in FIT_PARAMS]
    if bad:
        raise UsageError(f"unknown fit parameter {bad[0]!r} (--params); choose from {', '.join(FIT_PARAMS)}")
    if len(names) > len(rows):
        raise UsageError(f"too few rows: {len(rows)} measurement(s) cannot fit {len(names)} parameters "
                         f"({', '.join(names)}); give at least {len(names)} rows or fewer --params")
    arrays = [_Row(r) for r in rows]
    logs = np.log([r.latency_ms for r in rows])

    prior = PRIOR_WEIGHT if len(names) > 1 else 0.0  # a lone scale is fitted exactly

    def residuals(theta, smooth=None):
        m = _apply(base, names, theta)
        pred = np.log([a.predict_ms(m, smooth=smooth) for a in arrays])
        return np.concatenate([pred - logs, prior * np.asarray(theta)])

    # max() has no gradient on its smaller side: fit a smooth max first, then the real one,
    # from a few starting points (memory-bound and overhead-heavy starts), keep the best.
    starts = [np.zeros(len(names))]
    for name, value in (("bandwidth", -2.0), ("overhead", 1.5)):
        if name in names:
            x0 = np.zeros(len(names))
            x0[names.index(name)] = value
            starts.append(x0)
    best = None
    for x0 in starts:
        s1 = least_squares(residuals, x0, bounds=(-7.0, 7.0), method="trf", kwargs={"smooth": 4.0})
        s2 = least_squares(residuals, s1.x, bounds=(-7.0, 7.0), method="trf")
        if best is None or s2.cost < best.cost:
            best = s2
    model = replace(_apply(base, names, best.x), fitted=True,
                    notes=tuple(n for n in base.notes if "no calibrated" not in n))
    est = tuple(a.predict_ms(model) for a in arrays)
    errs = tuple(100.0 * (e - r.latency_ms) / r.latency_ms for e, r in zip(est, rows))
    return FitResult(model=model, params=names, rows=tuple(rows), estimates_ms=est, errors_pct=errs)


def predict_ms(model: CostModel, m: Measurement) -> float:
    return _Row(m).predict_ms(model)


# ---------------------------------------------------------------- measurement files

_CONFIG_CACHE: dict = {}


def measurement_for(*, label: str, layers=None, model: str | None = None, arch: str | None = None,
                    alpha: float = 1.0, resolution: int = 224, classes: int = 1000,
                    precision: str | None = None, threads: int = 1, latency_ms: float) -> Measurement:
    """A Measurement from a model file or a config (configs are built once and cached)."""
    from mobiledeploy.cost import info

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
    p = Path(path)
    flag = "--measurements"
    try:
        from mobiledeploy.models.limits import regular_file

        if p.exists():
            regular_file(p, what="measurements file")  # no FIFO, device or empty file
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"measurements file not found: {str(p)!r} ({flag})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read {str(p)!r} ({flag}): {getattr(e, 'strerror', None) or e}") from None
    reader = csv.DictReader([line for line in text.splitlines() if line.strip() and not line.startswith("#")])
    cols = set(reader.fieldnames or ())
    if "latency_ms" not in cols or not ({"model"} & cols or {"arch", "alpha", "res"} <= cols):
        raise UsageError(f"{str(p)!r} ({flag}) needs a header with latency_ms and either model or "
                         f"arch,alpha,res (got: {', '.join(sorted(cols)) or 'nothing'})")
    from mobiledeploy.models.archs import ARCHS

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
        if not 1 <= threads <= 1024:
            raise UsageError(f"{where}: threads must be between 1 and 1024, got {threads}")
        prec = (rec.get("precision") or "").strip() or None
        model = (rec.get("model") or "").strip()
        if model:
            from mobiledeploy.models.artifacts import contained_path

            mp = contained_path(p.parent, model, key=f"line {i} model", source=p)
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
            "fitted_on": [{"model": r.label, "precision": r.precision, "threads": r.threads,
                           "latency_ms": r.latency_ms, "estimate_ms": round(e, 4)}
                          for r, e in zip(result.rows, result.estimates_ms)]}


def write_cost_model_table(path: str | os.PathLike, table: dict, *, comment: str = "") -> Path:
    """Replace the [cost_model] of the target file at ``path`` (atomically), keeping the rest."""
    from mobiledeploy import io

    p = Path(path)
    text = strip_cost_model(p.read_text(encoding="utf-8")) if p.exists() else ""
    return io.write_text(p, text + cost_model_toml(table, comment=comment))


# ---------------------------------------------------------------- target calibrate


@dataclass(frozen=True)
class CalibrateConfig:
    measurements: str
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
    rows = read_measurements(config.measurements, default_threads=target.threads or 1)
    base = cost_model_for(target)
    result = fit(base, rows, params=config.params)
    name = config.name or out.stem
    text = strip_cost_model(target.path.read_text(encoding="utf-8"))
    text, n = re.subn(r'(?m)^name\s*=\s*".*"$', f"name = {_toml_value(name)}", text, count=1)
    if not n:
        text = f"name = {_toml_value(name)}\n" + text
    header = (f"# Calibrated by `mobiledeploy target calibrate` from {target.name!r} with "
              f"{Path(config.measurements).name}.\n")
    table = fit_table(result, source=f"{Path(config.measurements).name} (base target {target.name})")
    comment = (f"fitted on {len(rows)} measurement(s), parameters {', '.join(result.params)}: "
               f"median |error| {result.median_abs_error_pct:.1f}%, worst {result.worst_abs_error_pct:.1f}% "
               f"(in-sample)")
    with io.atomic_path(out) as tmp:
        tmp.write_text(header + text + cost_model_toml(table, comment=comment), encoding="utf-8")
        load_target(file=tmp)  # what we write must load as a target (else nothing is written)
    return CalibrateResult(target=target.name, out=str(out), fit=result)

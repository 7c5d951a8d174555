"""Device measurements for `target calibrate`, from the files the measuring tools write.

``read(spec)`` takes ``PATH`` or ``MODEL=PATH`` and recognises:

- the calibrate CSV (``latency_ms`` plus ``model`` or ``arch,alpha,res``; see
  ``read_measurements`` below);
- LiteRT/TFLite ``benchmark_model`` text output: the ``Inference timings in us: ...
  Inference (avg): N`` line (ms = N / 1000), threads from ``Num threads: [n]``, the model
  from ``Graph: [path]`` (its file name, next to the log) unless ``MODEL=`` is given;
- ``benchmark_model``'s op-profile CSV (``--op_profiling_output_file`` / ``--profiling_output_csv_file``):
  the sum of ``avg_ms`` over the first per-operator table (run order); needs ``MODEL=``;
- an ONNX Runtime profile JSON (chrome-trace events, ``enable_profiling``): the median
  duration of the ``model_run`` events (each one inference); needs ``MODEL=``;
- ``mobiledeploy bench --json`` files: every ``ok`` result (its p50, threads, precision).

A file that is empty or not one of these is one ``UsageError`` line (exit 2).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from mobiledeploy.cost import info
from mobiledeploy.cost.model import PRECISION_BYTES
from mobiledeploy.errors import UsageError
from mobiledeploy.models.archs import ARCHS
from mobiledeploy.models.artifacts import contained_path

FLAG = "--measurements"
_TIMINGS = re.compile(r"Inference timings in us:.*?Inference \(avg\):\s*([0-9.eE+-]+)")
_THREADS = re.compile(r"Num threads:\s*\[(\d+)\]")
_GRAPH = re.compile(r"Graph:\s*\[([^\]]+)\]")
MAX_THREADS = 1024  # the one bound on a measurement's thread count, whatever file it comes from
MAX_ROWS = 10_000  # measurement rows one calibration takes (a fit is linear in them, the cap keeps it seconds)


def split_spec(spec: str) -> tuple[str | None, Path]:
    """``MODEL=PATH`` -> (MODEL, PATH); ``PATH`` -> (None, PATH)."""
    if "=" in spec and not Path(spec).exists():
        model, path = spec.split("=", 1)
        if not model or not path:
            raise UsageError(f"{FLAG} {spec!r}: expected PATH or MODEL=PATH")
        return model, Path(path)
    return None, Path(spec)


def read_text(path: Path) -> str:
    try:
        if path.exists():
            from mobiledeploy.guards import regular_file

            regular_file(path, what="measurements file")  # no FIFO, device or empty file
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark (Excel's CSVs) is not text
    except FileNotFoundError:
        raise UsageError(f"measurements file not found: {str(path)!r} ({FLAG})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read {str(path)!r} ({FLAG}): {getattr(e, 'strerror', None) or e}") from None
    if not text.strip():
        raise UsageError(f"{str(path)!r} ({FLAG}) is empty")
    return text


def _latency(value, where: str) -> float:
    try:
        ms = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{where}: latency {value!r} is not a number") from None
    if not math.isfinite(ms) or ms <= 0:
        raise UsageError(f"{where}: latency must be positive, got {value!r}")
    return ms


def threads_in_range(value, where: str) -> int:
    """A thread count from a measurement file: an integer in 1..MAX_THREADS, or one UsageError line."""
    try:
        n = int(str(value).strip())
    except (TypeError, ValueError):
        raise UsageError(f"{where}: threads {value!r} is not an integer") from None
    if not 1 <= n <= MAX_THREADS:
        raise UsageError(f"{where}: threads must be between 1 and {MAX_THREADS}, got {n}")
    return n


def parse_benchmark_model_text(text: str, where: str) -> dict:
    """{"latency_ms", "threads" (or None), "graph" (or None)} from benchmark_model's output."""
    m = None
    for m in _TIMINGS.finditer(text):  # the last summary (after warm-up) wins
        pass
    if m is None:
        raise UsageError(f"{where}: no 'Inference timings in us: ... Inference (avg): N' line "
                         f"(expected LiteRT benchmark_model output)")
    threads = _THREADS.search(text)
    graph = _GRAPH.search(text)
    return {"latency_ms": _latency(m.group(1), where) / 1000.0,
            "threads": threads_in_range(threads.group(1), where) if threads else None,
            "graph": graph.group(1).strip() if graph else None}


def parse_op_profile_csv(text: str, where: str) -> float:
    """Sum of avg_ms over the first per-operator table of benchmark_model's profile CSV (ms)."""
    lines = text.splitlines()
    head = next((i for i, line in enumerate(lines) if "node type" in line.lower() and "avg" in line.lower()), None)
    if head is None:
        raise UsageError(f"{where}: no per-operator table (a header with 'node type' and 'avg_ms')")
    delim = "\t" if "\t" in lines[head] else ","
    body = []
    for line in lines[head:]:
        if not line.strip() or (body and ("node type" in line.lower() or line.lstrip().startswith("="))):
            if body:
                break
            continue
        body.append(line)
    rows = list(csv.reader(io.StringIO("\n".join(body)), delimiter=delim))
    header = [h.strip().strip("[]").lower().replace(" ", "_") for h in rows[0]]
    col = next((i for i, h in enumerate(header) if h in ("avg_ms", "avg")), None)
    if col is None:
        raise UsageError(f"{where}: the per-operator table has no avg_ms column")
    total, n = 0.0, 0
    for r in rows[1:]:
        if len(r) <= col:
            continue
        try:
            total += float(r[col])
            n += 1
        except ValueError:
            raise UsageError(f"{where}: avg_ms {r[col]!r} is not a number") from None
    if not n:
        raise UsageError(f"{where}: the per-operator table has no rows")
    return _latency(total, where)


def parse_ort_profile(data, where: str) -> float:
    """Median duration of the ``model_run`` events of an ONNX Runtime profile (ms)."""
    events = data.get("traceEvents") if isinstance(data, dict) else data
    if not isinstance(events, list):
        raise UsageError(f"{where}: not an ONNX Runtime profile (expected a list of trace events)")
    durs = [e.get("dur") for e in events if isinstance(e, dict) and e.get("name") == "model_run"]
    if not durs:
        raise UsageError(f"{where}: no 'model_run' events (expected an ONNX Runtime profile with enable_profiling)")
    try:
        us = statistics.median(float(d) for d in durs)
    except (TypeError, ValueError):
        raise UsageError(f"{where}: a model_run event has no numeric 'dur'") from None
    return _latency(us, where) / 1000.0


def _model_file(model: str, base: Path, where: str) -> str:
    """A model named in a measurement file: only a file inside that file's folder (by name for the
    absolute device paths that benchmark logs print)."""
    p = Path(model)
    for cand in ([base / p.name] if p.is_absolute() else [base / p, base / p.name]):
        if cand.is_file() and cand.resolve().is_relative_to(base.resolve()):
            return str(cand)
    raise UsageError(f"{where}: unknown model {model!r} (no such file next to {base.name or '.'}); "
                     f"give it as {FLAG} MODEL=FILE")


def read(spec: str, *, default_threads: int = 1) -> list:
    """Measurements from one ``--measurements`` value (see the module docstring)."""
    model, path = split_spec(spec)
    where = path.name
    text = read_text(path)
    stripped = text.lstrip()
    first = next((line for line in text.splitlines() if line.strip() and not line.startswith("#")), "")
    if stripped.startswith(("{", "[")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise UsageError(f"{where}: not valid JSON ({e.msg}, line {e.lineno})") from None
        if isinstance(data, dict) and "results" in data and "schema_version" in data:
            return _from_bench_json(data, path, model)
        lat, threads = parse_ort_profile(data, where), threads_in_range(default_threads, where)
    elif "latency_ms" in first.split(","):
        if model:
            raise UsageError(f"{FLAG} {spec!r}: a measurements CSV names its models itself; drop '{model}='")
        return read_measurements(path, default_threads=default_threads)
    elif "Inference timings in us" in text or "Num threads" in text or "benchmark_model" in text.lower()[:2000]:
        info = parse_benchmark_model_text(text, where)
        lat, threads = info["latency_ms"], info["threads"] or threads_in_range(default_threads, where)
        model = model or info["graph"]
        if model is None:
            raise UsageError(f"{where}: no 'Graph: [...]' line to name the model; give it as {FLAG} MODEL=FILE")
    elif "node type" in text.lower():
        lat, threads = parse_op_profile_csv(text, where), threads_in_range(default_threads, where)
    elif path.suffix.lower() == ".csv" and not model:  # a calibrate CSV with a wrong header: say so
        return read_measurements(path, default_threads=default_threads)
    else:
        raise UsageError(f"{where}: not a measurements file ({FLAG} takes a CSV with latency_ms, "
                         f"benchmark_model output or op profile, an ONNX Runtime profile JSON, or bench --json)")
    if model is None:
        raise UsageError(f"{where}: this file does not name its model; give it as {FLAG} MODEL={path}")
    mfile = _model_file(model, path.parent, where)
    return [measurement_for(label=Path(mfile).name, model=mfile, threads=threads, latency_ms=lat)]


def read_all(specs, *, default_threads: int = 1) -> list:
    """The measurements of several ``--measurements`` values, at most MAX_ROWS in all."""
    rows = []
    for spec in specs:
        rows += read(spec, default_threads=default_threads)
        if len(rows) > MAX_ROWS:
            raise UsageError(f"{FLAG}: more than {MAX_ROWS} measurement rows in all "
                             f"(average repeated runs of a model into one row)")
    return rows


def _from_bench_json(data: dict, path: Path, model: str | None) -> list:
    rows = []
    for r in data.get("results") or []:
        if not isinstance(r, dict) or r.get("status") != "ok":
            continue
        if model and Path(r.get("model", "")).name != Path(model).name:
            continue
        lat = (r.get("latency_ms") or {}).get("p50")
        where = f"{path.name} ({r.get('model')})"
        mfile = _model_file(str(r.get("model", "")), path.parent, where)
        prec = r.get("precision") if r.get("precision") not in (None, "unknown") else None
        rows.append(measurement_for(label=Path(mfile).name, model=mfile, precision=prec,
                                    threads=threads_in_range(1 if r.get("threads") is None else r["threads"], where),
                                    latency_ms=_latency(lat, where)))
    if not rows:
        raise UsageError(f"{path.name}: no successful results in this bench --json file"
                         + (f" for {model!r}" if model else ""))
    return rows


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


_CONFIG_CACHE: dict = {}
_FILE_CACHE: dict = {}  # (path, mtime, size) -> (format, precision, layers): each model file parsed once


def _file_stats(model: str) -> tuple:
    try:
        st = os.stat(model)
        key = (str(Path(model).resolve()), st.st_mtime_ns, st.st_size)
    except OSError:  # model_stats says what is wrong with it
        key = None
    if key is None or key not in _FILE_CACHE:
        stats = info.model_stats(model)
        found = (stats.format, stats.precision, tuple(stats.layers))
        if key is None:
            return found
        _FILE_CACHE[key] = found
    return _FILE_CACHE[key]


def measurement_for(*, label: str, layers=None, model: str | None = None, arch: str | None = None,
                    alpha: float = 1.0, resolution: int = 224, classes: int = 1000,
                    precision: str | None = None, threads: int = 1, latency_ms: float) -> Measurement:
    """A Measurement from a model file or a config (each file and config is parsed once and cached,
    so rows of the same model share one layer tuple)."""
    if layers is None and model is not None:
        fmt, file_precision, layers = _file_stats(model)
        if precision and fmt != "keras" and precision != file_precision:
            raise UsageError(f"{label}: precision {precision!r} given, but the file is a {file_precision} model")
        precision = precision or file_precision
    elif layers is None:
        key = (arch, float(alpha), int(resolution), int(classes))
        if key not in _CONFIG_CACHE:
            stats = info.config_stats(arch, alpha=alpha, resolution=resolution, classes=classes)
            _CONFIG_CACHE[key] = tuple(stats.layers)
        layers = _CONFIG_CACHE[key]
    precision = precision or "fp32"
    if precision not in PRECISION_BYTES:
        raise UsageError(f"{label}: precision {precision!r} unknown; choose from {', '.join(PRECISION_BYTES)}")
    return Measurement(label=label, layers=tuple(layers), precision=precision, threads=int(threads),
                       latency_ms=float(latency_ms), macs=sum(x.macs for x in layers))


def read_measurements(path: str | os.PathLike, *, default_threads: int = 1) -> list[Measurement]:
    """Rows of ``model`` (a file, relative to the CSV) or ``arch,alpha,res[,classes]``, plus
    ``precision`` (fp32|int8), optional ``threads`` and ``latency_ms`` (on the device)."""
    flag = FLAG
    p = Path(path)
    text = read_text(p)
    reader = csv.DictReader([line for line in text.splitlines() if line.strip() and not line.startswith("#")])
    cols = set(reader.fieldnames or ())
    if "latency_ms" not in cols or not ({"model"} & cols or {"arch", "alpha", "res"} <= cols):
        raise UsageError(f"{str(p)!r} ({flag}) needs a header with latency_ms and either model or "
                         f"arch,alpha,res (got: {', '.join(sorted(cols)) or 'nothing'})")

    rows, model_paths = [], {}
    for i, rec in enumerate(reader, start=2):
        where = f"{p.name} line {i}"
        if len(rows) >= MAX_ROWS:
            raise UsageError(f"{str(p)!r} ({flag}) has more than {MAX_ROWS} measurement rows "
                             f"(average repeated runs of a model into one row)")
        try:
            lat = float(rec["latency_ms"])
        except (TypeError, ValueError):
            raise UsageError(f"{where}: latency_ms {rec.get('latency_ms')!r} is not a number") from None
        if not math.isfinite(lat) or lat <= 0:
            raise UsageError(f"{where}: latency_ms must be positive, got {rec['latency_ms']!r}")
        threads = threads_in_range((rec.get("threads") or "").strip() or default_threads, where)
        prec = (rec.get("precision") or "").strip() or None
        model = (rec.get("model") or "").strip()
        if model:
            if model not in model_paths:  # each named file checked once, however many rows name it
                model_paths[model] = contained_path(p.parent, model, key=f"line {i} model", source=p)
            mp = model_paths[model]
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

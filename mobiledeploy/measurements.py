"""Device measurements for `target calibrate`, from the files the measuring tools write.

``read(spec)`` takes ``PATH`` or ``MODEL=PATH`` and recognises:

- the calibrate CSV (``latency_ms`` plus ``model`` or ``arch,alpha,res``; see
  ``mobiledeploy.estimate_fit.read_measurements``);
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
import re
import statistics
from pathlib import Path

from mobiledeploy.errors import UsageError

FLAG = "--measurements"
_TIMINGS = re.compile(r"Inference timings in us:.*?Inference \(avg\):\s*([0-9.eE+-]+)")
_THREADS = re.compile(r"Num threads:\s*\[(\d+)\]")
_GRAPH = re.compile(r"Graph:\s*\[([^\]]+)\]")


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
        text = path.read_text(encoding="utf-8")
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
            "threads": int(threads.group(1)) if threads else None,
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
    p = Path(model)
    for cand in ([p, base / p.name] if p.is_absolute() else [base / p, p, base / p.name]):
        if cand.exists():
            return str(cand)
    raise UsageError(f"{where}: unknown model {model!r} (no such file next to {base.name or '.'}); "
                     f"give it as {FLAG} MODEL=FILE")


def read(spec: str, *, default_threads: int = 1) -> list:
    """Measurements from one ``--measurements`` value (see the module docstring)."""
    from mobiledeploy.estimate_fit import measurement_for, read_measurements

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
        lat, threads = parse_ort_profile(data, where), default_threads
    elif "latency_ms" in first.split(","):
        if model:
            raise UsageError(f"{FLAG} {spec!r}: a measurements CSV names its models itself; drop '{model}='")
        return read_measurements(path, default_threads=default_threads)
    elif "Inference timings in us" in text or "Num threads" in text or "benchmark_model" in text.lower()[:2000]:
        info = parse_benchmark_model_text(text, where)
        lat, threads = info["latency_ms"], info["threads"] or default_threads
        model = model or info["graph"]
        if model is None:
            raise UsageError(f"{where}: no 'Graph: [...]' line to name the model; give it as {FLAG} MODEL=FILE")
    elif "node type" in text.lower():
        lat, threads = parse_op_profile_csv(text, where), default_threads
    elif path.suffix.lower() == ".csv" and not model:  # a calibrate CSV with a wrong header: say so
        return read_measurements(path, default_threads=default_threads)
    else:
        raise UsageError(f"{where}: not a measurements file ({FLAG} takes a CSV with latency_ms, "
                         f"benchmark_model output or op profile, an ONNX Runtime profile JSON, or bench --json)")
    if model is None:
        raise UsageError(f"{where}: this file does not name its model; give it as {FLAG} MODEL={path}")
    mfile = _model_file(model, path.parent, where)
    return [measurement_for(label=Path(mfile).name, model=mfile, threads=threads, latency_ms=lat)]


def _from_bench_json(data: dict, path: Path, model: str | None) -> list:
    from mobiledeploy.estimate_fit import measurement_for

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
                                    threads=int(r.get("threads") or 1), latency_ms=_latency(lat, where)))
    if not rows:
        raise UsageError(f"{path.name}: no successful results in this bench --json file"
                         + (f" for {model!r}" if model else ""))
    return rows

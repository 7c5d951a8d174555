"""Per-operator host times (``bench --profile``), measured in the child process (task ``profile``).

- ONNX Runtime: its own profiler (``SessionOptions.enable_profiling``); every node's kernel
  time (``*_kernel_time`` events) averaged over the timed runs, and the session's
  ``model_run`` time for the same runs.
- LiteRT: the Python interpreter has no profiler, so operators are timed by **prefix
  differencing**: copies of the model cut after operator k (its output becomes that
  operator's output) are timed like the full model, and operator k's time is
  p50(prefix k) - p50(prefix k-1). The differences add up to the full model's p50 by
  construction; each one carries the noise of two measurements and can come out slightly
  negative for a cheap operator. With XNNPACK each prefix is delegated on its own, so an
  operator's time includes what fusing it with its neighbours saves or costs.

Both return ``{"method", "ops": [{"index", "name", "op", "ms"}], "sum_ms", "run_p50_ms"}``
in execution order. Host times, never a device's.
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np

from mobiledeploy.runtimes.timing import timed_loop


def _p50_ms(invoke, runs: int, warmup: int) -> float:
    for _ in range(warmup):
        invoke()
    return float(np.median(timed_loop(invoke, min_runs=runs, max_runs=runs))) / 1e6


def onnx_op_times(path: str, *, threads: int | None, runs: int, warmup: int, opt_level: str = "all",
                  seed: int = 0, shapes: dict | None = None) -> dict:
    from mobiledeploy import runtimes

    with tempfile.TemporaryDirectory() as tmp:
        session = runtimes.open_session(path, threads=threads, ort_opt_level=opt_level, shapes=shapes,
                                        profile=os.path.join(tmp, "ort"))
        session.set_inputs(runtimes.random_inputs(session, seed=seed))
        for _ in range(warmup + runs):
            session.invoke()
        with open(session.end_profiling()) as f:
            events = json.load(f)
    node = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
    model_runs = [e["dur"] / 1e3 for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    per, ops = {}, {}
    for e in node:
        name = e["name"][: -len("_kernel_time")]
        ops.setdefault(name, e.get("args", {}).get("op_name", ""))
        per.setdefault(name, []).append(e["dur"] / 1e3)
    rows = [{"index": i, "name": n, "op": ops[n], "ms": float(np.mean(t[-runs:]))} for i, (n, t) in enumerate(per.items())]
    return {"method": "onnxruntime profiler: kernel time per node, mean of the timed runs", "ops": rows,
            "sum_ms": float(sum(r["ms"] for r in rows)),
            "run_p50_ms": float(np.median(model_runs[-runs:])) if model_runs else None}


def _prefix(model_t, k: int) -> bytes:
    """The model with its first subgraph cut after operator k (0-based), whose first output becomes the graph's."""
    import copy

    import flatbuffers

    m = copy.deepcopy(model_t)
    g = m.subgraphs[0]
    g.operators = g.operators[: k + 1]
    g.outputs = [int(g.operators[k].outputs[0])]
    builder = flatbuffers.Builder(1024)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def tflite_op_times(path: str, *, threads: int | None, runs: int, warmup: int, xnnpack: bool = True,
                    seed: int = 0, shapes: dict | None = None) -> dict:
    from ai_edge_litert import schema_py_generated as schema

    from mobiledeploy import runtimes

    with open(path, "rb") as f:
        data = f.read()
    model_t = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model_t.operatorCodes]
    graph = model_t.subgraphs[0]

    def timed(p: str) -> float:
        session = runtimes.open_session(p, threads=threads, xnnpack=xnnpack, shapes=shapes)
        session.set_inputs(runtimes.random_inputs(session, seed=seed))
        return _p50_ms(session.invoke, runs, warmup)

    with tempfile.TemporaryDirectory() as tmp:
        cumulative = []
        for k in range(len(graph.operators)):
            cut = os.path.join(tmp, f"prefix_{k}.tflite")
            with open(cut, "wb") as f:
                f.write(_prefix(model_t, k))
            cumulative.append(timed(cut))
    rows = []
    for k, op in enumerate(graph.operators):
        out = graph.tensors[op.outputs[0]].name
        rows.append({"index": k, "name": out.decode() if isinstance(out, bytes) else str(out),
                     "op": names.get(codes[op.opcodeIndex], str(codes[op.opcodeIndex])),
                     "ms": cumulative[k] - (cumulative[k - 1] if k else 0.0)})
    return {"method": "prefix differencing: p50 of the model cut after operator k minus after k-1 (LiteRT has no "
                      "profiler in Python)", "ops": rows, "sum_ms": float(sum(r["ms"] for r in rows)),
            "run_p50_ms": timed(path)}


def profile_task(job: dict) -> dict:
    """The child's ``profile`` task: per-operator times of ``job["model"]``."""
    from mobiledeploy import runtimes

    fmt = runtimes.detect_format(job["model"])
    runs, warmup = int(job.get("runs") or 50), int(job.get("warmup", 10))
    shapes = {k: tuple(v) for k, v in (job.get("shapes") or {}).items()}
    if fmt == "onnx":
        res = onnx_op_times(job["model"], threads=job.get("threads"), runs=runs, warmup=warmup,
                            opt_level=job.get("ort_opt_level", "all"), seed=job.get("seed", 0), shapes=shapes)
    else:
        res = tflite_op_times(job["model"], threads=job.get("threads"), runs=runs, warmup=warmup,
                              xnnpack=job.get("xnnpack", True), seed=job.get("seed", 0), shapes=shapes)
    return {"status": "ok", **res}

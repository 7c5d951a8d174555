"""Per-operator host times (``bench --profile``), measured in the child process (task ``profile``).

Both runtimes time the model end to end in the same process, in rounds interleaved with the
per-operator measurement (this VM's speed drifts over seconds, so figures taken apart do
not compare), and return ``{"method", "ops": [{"index", "name", "op", "ms", ...}],
"sum_ms", "run_p50_ms"}`` in execution order, ``run_p50_ms`` being that end-to-end p50.

- ONNX Runtime: its own profiler (``SessionOptions.enable_profiling``); each node's kernel
  time, the median over the timed runs (``kernel_ms``). The profiler's bookkeeping falls
  inside each kernel's window (about 2.5 us per node here; a Reshape reads 3 us): it is
  measured in the same child on a chain of 32 one-element Relu nodes (profiled kernel sum
  minus the unprofiled run, per node) and subtracted (``ms``, never below 0;
  ``profiler_cost_us`` says how much). The end-to-end p50 is an unprofiled session of the
  same file, interleaved with the profiled one.
- LiteRT: the Python interpreter has no profiler, so operators are timed by **prefix
  differencing**: copies of the model cut after operator k (its output becomes that
  operator's output) are timed like the full model, and operator k's time is
  p50(prefix k) - p50(prefix k-1); the last prefix is the file itself. The differences add
  up to the whole model's p50 by construction; each one carries the noise of two
  measurements and can come out slightly negative for a cheap operator. With XNNPACK each
  prefix is delegated on its own, so an operator's time includes what fusing it with its
  neighbours saves or costs.

Host times, never a device's.
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np

from mobiledeploy.runtimes.timing import timed_loop

ROUNDS = 5  # interleaved rounds; the timed runs are split between them
CHAIN = 32  # nodes of the chain that measures the ONNX Runtime profiler's own cost


def _rounds(sessions, runs: int, warmup: int) -> list[list[int]]:
    """Warm up every session, then time them in ``ROUNDS`` interleaved rounds; ns samples per session."""
    for s in sessions:
        for _ in range(warmup):
            s.invoke()
    per_round = max(1, -(-runs // ROUNDS))
    samples: list[list[int]] = [[] for _ in sessions]
    for _ in range(ROUNDS):
        for s, acc in zip(sessions, samples):
            acc += timed_loop(s.invoke, min_runs=per_round, max_runs=per_round)
    return samples


def _ms(ns_samples) -> float:
    return float(np.median(ns_samples)) / 1e6


def _kernel_medians(events: list, runs: int) -> tuple[dict, dict]:
    """{node: median kernel ms over its last ``runs`` events}, {node: op type}, in execution order."""
    per, ops = {}, {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            name = e["name"][: -len("_kernel_time")]
            ops.setdefault(name, e.get("args", {}).get("op_name", ""))
            per.setdefault(name, []).append(e["dur"] / 1e3)
    return {n: float(np.median(t[-runs:])) for n, t in per.items()}, ops


def _profiled(path: str, tmp: str, tag: str, runs: int, warmup: int, seed: int, **session) -> tuple[dict, dict, float]:
    """Kernel medians and op types of ``path`` under the profiler, and the p50 of an unprofiled
    session of the same file timed in the same interleaved rounds."""
    from mobiledeploy import runtimes

    prof = runtimes.open_session(path, profile=os.path.join(tmp, tag), **session)
    plain = runtimes.open_session(path, **session)
    for s in (prof, plain):
        s.set_inputs(runtimes.random_inputs(s, seed=seed))
    samples = _rounds([prof, plain], runs, warmup)
    with open(prof.end_profiling()) as f:
        events = json.load(f)
    kernels, ops = _kernel_medians(events, len(samples[0]))
    return kernels, ops, _ms(samples[1])


def _chain_model(path: str) -> None:
    from onnx import TensorProto, helper, save

    nodes = [helper.make_node("Relu", [f"t{i}"], [f"t{i + 1}"], name=f"relu{i}") for i in range(CHAIN)]
    graph = helper.make_graph(nodes, "profiler_cost", [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [1, 1])],
                              [helper.make_tensor_value_info(f"t{CHAIN}", TensorProto.FLOAT, [1, 1])])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def onnx_op_times(path: str, *, threads: int | None, runs: int, warmup: int, opt_level: str = "all",
                  seed: int = 0, shapes: dict | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        chain = os.path.join(tmp, "chain.onnx")
        _chain_model(chain)
        kern, _, p50 = _profiled(chain, tmp, "chain", 200, 20, seed, threads=threads, ort_opt_level="disable")
        cost_ms = max(0.0, (sum(kern.values()) - p50) / CHAIN)
        kernels, ops, run_p50 = _profiled(path, tmp, "model", runs, warmup, seed, threads=threads,
                                          ort_opt_level=opt_level, shapes=shapes)
    rows = [{"index": i, "name": n, "op": ops[n], "kernel_ms": k, "ms": max(0.0, k - cost_ms)}
            for i, (n, k) in enumerate(kernels.items())]
    return {"method": f"onnxruntime profiler: kernel time per node, median of the timed runs, less the profiler's "
                      f"own {1e3 * cost_ms:.1f} us per node (measured on a chain of {CHAIN} no-op-sized nodes)",
            "ops": rows, "sum_ms": float(sum(r["ms"] for r in rows)),
            "kernel_sum_ms": float(sum(r["kernel_ms"] for r in rows)), "profiler_cost_us": 1e3 * cost_ms,
            "run_p50_ms": run_p50}


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
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for k in range(len(graph.operators) - 1):
            paths.append(os.path.join(tmp, f"prefix_{k}.tflite"))
            with open(paths[-1], "wb") as f:
                f.write(_prefix(model_t, k))
        sessions = [runtimes.open_session(p, threads=threads, xnnpack=xnnpack, shapes=shapes)
                    for p in [*paths, path]]  # the last prefix is the file itself
        for s in sessions:
            s.set_inputs(runtimes.random_inputs(s, seed=seed))
        cumulative = [_ms(t) for t in _rounds(sessions, runs, warmup)]
    rows = []
    for k, op in enumerate(graph.operators):
        out = graph.tensors[op.outputs[0]].name
        rows.append({"index": k, "name": out.decode() if isinstance(out, bytes) else str(out),
                     "op": names.get(codes[op.opcodeIndex], str(codes[op.opcodeIndex])),
                     "ms": cumulative[k] - (cumulative[k - 1] if k else 0.0)})
    return {"method": "prefix differencing: p50 of the model cut after operator k minus after k-1, all prefixes "
                      "timed in interleaved rounds (LiteRT has no profiler in Python)", "ops": rows,
            "sum_ms": float(sum(r["ms"] for r in rows)), "run_p50_ms": cumulative[-1]}


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

"""Per-operator host times (``bench --profile``), measured in the child process (task ``profile``).

Both runtimes also time the model end to end in the same process, in rounds interleaved
with the per-operator measurement (the host's speed drifts over seconds, so figures taken
apart do not compare), and return ``{"method", "ops": [{"index", "name", "op", "ms", ...}],
"sum_ms", "run_p50_ms"}`` in execution order. How each method works and what it costs is
in docs/bench.md:

- ONNX Runtime: its own profiler's kernel times, minus the profiler's own cost per node,
  fitted as ``a + b x (inputs + outputs)`` on two chains of ``CHAIN`` one-element nodes
  measured beside the model (``profiler_cost_us``).
- LiteRT (no profiler in Python): prefix differencing. Copies of the model cut after
  operator k are timed like the full model, and operator k's time is p50(prefix k) -
  p50(prefix k-1), so the times add up to the model's p50 by construction and a cheap
  operator can come out slightly negative. Prefixes are timed in interleaved rounds, one
  after another when operators x file size exceeds ``MAX_LOADED_BYTES``.

Host times, never a device's.
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np

from mobiledeploy import runtimes
from mobiledeploy.runtimes.timing import timed_loop

ROUNDS = 5  # interleaved rounds; the timed runs are split between them
CHAIN = 32  # nodes of the chain that measures the ONNX Runtime profiler's own cost
MAX_LOADED_BYTES = 2 << 30  # LiteRT: operators x file size up to which every prefix is loaded at once


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


def _kernel_medians(events: list, runs: int) -> tuple[dict, dict, dict]:
    """{node: median kernel ms over its last ``runs`` events}, {node: op type}, {node: inputs +
    outputs it records}, in execution order."""
    per, ops, arity = {}, {}, {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            name, args = e["name"][: -len("_kernel_time")], e.get("args", {})
            ops.setdefault(name, args.get("op_name", ""))
            arity.setdefault(name, len(args.get("input_type_shape", ())) + len(args.get("output_type_shape", ())))
            per.setdefault(name, []).append(e["dur"] / 1e3)
    return {n: float(np.median(t[-runs:])) for n, t in per.items()}, ops, arity


def _profiled(jobs: list[tuple[str, dict]], tmp: str, runs: int, warmup: int, seed: int) -> list[tuple]:
    """For each ``(path, session options)``: kernel medians, op types and arities under the
    profiler, and the p50 of an unprofiled session of the same file; all sessions timed in
    the same interleaved rounds."""
    sessions = []
    for k, (path, options) in enumerate(jobs):
        sessions += [runtimes.open_session(path, profile=os.path.join(tmp, f"p{k}"), **options),
                     runtimes.open_session(path, **options)]
    for s in sessions:
        s.set_inputs(runtimes.random_inputs(s, seed=seed))
    samples = _rounds(sessions, runs, warmup)
    out = []
    for k in range(len(jobs)):
        with open(sessions[2 * k].end_profiling()) as f:
            events = json.load(f)
        out.append((*_kernel_medians(events, len(samples[2 * k])), _ms(samples[2 * k + 1])))
    return out


def _chain_model(path: str, inputs: int) -> None:
    """CHAIN one-element nodes in a row: Relu (1 input), or Sum of the previous output and
    ``inputs - 1`` constants (the profiler's cost grows with the inputs it records)."""
    from onnx import TensorProto, helper, save

    consts = [helper.make_tensor(f"c{j}", TensorProto.FLOAT, [1], [0.0]) for j in range(inputs - 1)]
    nodes = [helper.make_node("Relu" if inputs == 1 else "Sum", [f"t{i}", *(c.name for c in consts)], [f"t{i + 1}"],
                              name=f"n{i}") for i in range(CHAIN)]
    graph = helper.make_graph(nodes, "profiler_cost", [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info(f"t{CHAIN}", TensorProto.FLOAT, [1])], initializer=consts)
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def _profiler_cost(chains: list[tuple]) -> tuple[float, float]:
    """(a, b): the profiler's own ms per node, ``a + b x (inputs + outputs it records)``, from the
    chains of 1-input and 8-input nodes (profiled kernel sum minus the unprofiled run, per node)."""
    (k1, _, _, p1), (k8, _, _, p8) = chains
    c2, c9 = (max(0.0, (sum(k.values()) - p) / CHAIN) for k, p in ((k1, p1), (k8, p8)))
    b = max(0.0, (c9 - c2) / 7)
    return max(0.0, c2 - 2 * b), b


def onnx_op_times(path: str, *, threads: int | None, runs: int, warmup: int, opt_level: str = "all",
                  seed: int = 0, shapes: dict | None = None) -> dict:
    """The model and the two calibration chains (``CHAIN`` nodes of 1 and 8 inputs, one element
    each, no graph optimization), profiled and unprofiled, in the same interleaved rounds."""
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [(path, {"threads": threads, "ort_opt_level": opt_level, "shapes": shapes})]
        for inputs in (1, 8):
            jobs.append((os.path.join(tmp, f"chain{inputs}.onnx"), {"threads": threads, "ort_opt_level": "disable"}))
            _chain_model(jobs[-1][0], inputs)
        (kernels, ops, arity, run_p50), *chains = _profiled(jobs, tmp, runs, warmup, seed)
    a, b = _profiler_cost(chains)
    rows = []
    for i, (n, k) in enumerate(kernels.items()):
        cost = a + b * arity[n]
        rows.append({"index": i, "name": n, "op": ops[n], "kernel_ms": k, "profiler_ms": cost, "ms": max(0.0, k - cost)})
    return {"method": f"onnxruntime profiler: kernel time per node, median of the timed runs, less the profiler's "
                      f"own {1e3 * a:.2f} us per node + {1e3 * b:.2f} us per recorded input/output (measured "
                      f"beside it on chains of no-op-sized nodes)",
            "ops": rows, "sum_ms": float(sum(r["ms"] for r in rows)),
            "kernel_sum_ms": float(sum(r["kernel_ms"] for r in rows)),
            "profiler_cost_us": {"per_node": 1e3 * a, "per_input_output": 1e3 * b},
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

    with open(path, "rb") as f:
        data = f.read()
    model_t = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model_t.operatorCodes]
    graph = model_t.subgraphs[0]
    together = len(graph.operators) * len(data) <= MAX_LOADED_BYTES

    def session(k: int, tmp: str):
        if k == len(graph.operators) - 1:  # the last prefix is the file itself
            p = path
        else:
            p = os.path.join(tmp, f"prefix_{k}.tflite")
            with open(p, "wb") as f:
                f.write(_prefix(model_t, k))
        s = runtimes.open_session(p, threads=threads, xnnpack=xnnpack, shapes=shapes)
        s.set_inputs(runtimes.random_inputs(s, seed=seed))
        return s

    with tempfile.TemporaryDirectory() as tmp:
        if together:
            sessions = [session(k, tmp) for k in range(len(graph.operators))]
            cumulative = [_ms(t) for t in _rounds(sessions, runs, warmup)]
        else:  # too large to hold every prefix at once: one after another (drift is not cancelled)
            cumulative = [_ms(_rounds([session(k, tmp)], runs, warmup)[0]) for k in range(len(graph.operators))]
    rows = []
    for k, op in enumerate(graph.operators):
        out = graph.tensors[op.outputs[0]].name
        rows.append({"index": k, "name": out.decode() if isinstance(out, bytes) else str(out),
                     "op": names.get(codes[op.opcodeIndex], str(codes[op.opcodeIndex])),
                     "ms": cumulative[k] - (cumulative[k - 1] if k else 0.0)})
    how = ("all prefixes timed in interleaved rounds" if together else
           "one prefix after another (too large to load every prefix at once)")
    return {"method": f"prefix differencing: p50 of the model cut after operator k minus after k-1, {how} "
                      f"(LiteRT has no profiler in Python)", "ops": rows,
            "sum_ms": float(sum(r["ms"] for r in rows)), "run_p50_ms": cumulative[-1]}


def profile_task(job: dict) -> dict:
    """The child's ``profile`` task: per-operator times of ``job["model"]``."""
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

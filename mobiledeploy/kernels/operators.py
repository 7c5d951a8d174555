"""Per-operator breakdown of a kernel count: LiteRT with XNNPACK.

XNNPACK's ``xnn_invoke_runtime`` runs a runtime's operators in order, calling
``xnn_run_operator_with_index`` once per operator on the thread that called ``invoke()``.
The entry of that function (found by name in the runtime library's symbol table) and the
block its caller returns to cut that thread's blocks into one segment per operator
(``trace.parse_log(op_entry=...)``); the same per-block cycles as the whole estimate
(``llvm-mca``) schedule each segment. With one thread the breakdown is exact: the segments
and the work between them (the interpreter, operators XNNPACK did not take) sum to the
thread's count.

Names: LiteRT hands XNNPACK the operators of its delegate partitions (the guest reports
the interpreter's nodes, delegate nodes included; ``delegated_nodes`` finds which nodes
each delegate node replaced), in execution order. XNNPACK may fuse or split operators, so
the segments are named after those nodes only when the counts match; otherwise they are
``op N`` with their dominant microkernel.

Several threads: pthreadpool's workers run parts of each operator, but qemu's log
interleaves threads too coarsely to cut their lines at operator boundaries. A worker's
executions of a block are attributed to the operators in proportion to the calling
thread's executions of the same block (the workers run the same microkernel calls on
other tiles); an approximation, said in the output. Blocks only workers run are counted
as work between operators.

ONNX Runtime's aarch64 library ships without a symbol table, so its per-node loop has no
name to find: no per-operator breakdown there (nor for LiteRT's built-in kernels, whose
per-node call is inlined).
"""

from __future__ import annotations

from collections import Counter

from mobiledeploy.kernels import symbols

ENTRY = "xnn_run_operator_with_index"
BETWEEN = "between operators"


def entry_address(runtime: str, xnnpack: bool, maps: list) -> int | None:
    """Guest address of the once-per-operator function, or None (no breakdown for this runtime)."""
    return symbols.address_of(ENTRY, maps) if runtime == "litert" and xnnpack else None


def delegated_nodes(nodes: list, graph_inputs: list) -> list[dict]:
    """The nodes LiteRT's delegates took, in execution order: ``nodes`` as the guest reports them,
    ``[index, op, inputs, outputs, [[name, shape] per output]]``, delegate nodes (op ``DELEGATE``)
    included. A delegate node's partition is what produces its outputs back to its inputs; a node
    that reads constants only (weights decoded at load time) runs no operator and is left out."""
    originals = [n for n in nodes if n[1] != "DELEGATE"]
    producer = {t: n for n in originals for t in n[3]}
    graph_inputs = set(graph_inputs)
    parts = []
    for d in (n for n in nodes if n[1] == "DELEGATE"):
        inputs, part, stack = set(d[2]), {}, list(d[3])
        while stack:
            t = stack.pop()
            n = producer.get(t)
            if t in inputs or n is None or n[0] in part:
                continue
            part[n[0]] = n
            stack.extend(n[2])
        live = [n for i, n in sorted(part.items())
                if any(t in producer or t in graph_inputs for t in n[2] if t >= 0)]
        if live:
            parts.append(live)
    parts.sort(key=lambda p: p[0][0])
    return [{"index": n[0], "type": n[1], "output": n[4][0][0] if n[4] else "",
             "shape": list(n[4][0][1]) if n[4] else []} for p in parts for n in p]


def profile(tr, hot: list[dict], info: dict) -> dict:
    """The per-operator part of a profile: per segment (and between them), the calling thread's
    executions per invoke of each hot block (by its index in ``hot``) and its other instructions.
    ``{}`` when the trace has no segments."""
    if not tr.ops:
        return {}
    index = {b["pc"]: i for i, b in enumerate(hot)}

    def part(c: Counter) -> dict:
        out: dict = {"hot": {}, "cold": 0.0}
        for pc, n in c.items():
            if info[pc].wait:
                continue
            if pc in index:
                out["hot"][str(index[pc])] = n / tr.invokes
            else:
                out["cold"] += n * info[pc].n / tr.invokes
        return out

    nodes = delegated_nodes(tr.meta.get("nodes", []), tr.meta.get("graph_inputs", []))
    return {"main": str(tr.main_cpu), "entry": ENTRY, "nodes": nodes,
            "segments": [part(c) for c in tr.ops], "between": part(tr.between)}


def table(prof: dict, cycles: list[float]) -> dict:
    """Per operator: instructions (all threads), cycles (its busiest thread: the calling thread's,
    exact, or a worker's, attributed), the dominant function, and the name when XNNPACK's operators
    match the delegated nodes one to one. ``{}`` when the profile has no segments."""
    ops = prof.get("operators") or {}
    segs = ops.get("segments")
    if not segs:
        return {}
    hot, main = prof["hot"], ops["main"]
    parts = [*segs, ops["between"]]
    hi = sum(sum(b["counts"].values()) * len(b["lines"]) for b in hot)
    hc = sum(sum(b["counts"].values()) * c for b, c in zip(hot, cycles))
    ipc = hi / hc if hc else 1.0  # the cold rest at the hot blocks' IPC, as model.threads_cycles
    instr = [0.0] * len(parts)
    cyc = [Counter() for _ in parts]
    fn_cycles = [Counter() for _ in parts]
    by_block = [Counter() for _ in hot]  # hot index -> segment -> the calling thread's executions
    for s, seg in enumerate(parts):
        for i, n in seg["hot"].items():
            i = int(i)
            by_block[i][s] += n
            instr[s] += n * len(hot[i]["lines"])
            cyc[s][main] += n * cycles[i]
            fn_cycles[s][i] += n * cycles[i]
        instr[s] += seg["cold"]
        cyc[s][main] += seg["cold"] / ipc
    workers = False
    for i, b in enumerate(hot):
        total = sum(by_block[i].values())
        for cpu, n in b["counts"].items():
            if cpu == main:
                continue
            workers = True
            shares = {s: v / total for s, v in by_block[i].items()} if total else {len(parts) - 1: 1.0}
            for s, f in shares.items():
                instr[s] += n * f * len(b["lines"])
                cyc[s][cpu] += n * f * cycles[i]
    for cpu, n in prof.get("cold", {}).items():
        if cpu != main:
            instr[-1] += n
            cyc[-1][cpu] += n / ipc
    nodes = ops.get("nodes") or []
    named = len(nodes) == len(segs)
    busiest = [max(c.values(), default=0.0) for c in cyc]
    total = sum(busiest) or 1.0
    rows = []
    for s in range(len(parts)):
        top = fn_cycles[s].most_common(1)
        fn = symbols.short(symbols.function_of(hot[top[0][0]]["pc"], prof.get("maps", []))) if top else ""
        if s == len(segs):
            row = {"index": None, "operator": BETWEEN, "output": "", "shape": []}
        elif named:
            row = {"index": s, "operator": nodes[s]["type"], "output": nodes[s]["output"],
                   "shape": nodes[s]["shape"]}
        else:
            row = {"index": s, "operator": f"op {s}", "output": "", "shape": []}
        rows.append(row | {"function": fn, "instructions": instr[s], "cycles": busiest[s],
                           "cycles_share": busiest[s] / total})
    return {"rows": rows, "operators": len(segs), "delegated_nodes": len(nodes), "named": named,
            "workers_attributed": workers}


def notes(per_op: dict) -> list[str]:
    """What the per-operator table is and is not."""
    if not per_op:
        return []
    out = []
    if not per_op["named"]:
        out.append(f"XNNPACK ran {per_op['operators']} operators for {per_op['delegated_nodes']} delegated "
                   "TFLite nodes (fused or split): operators are numbered, named by their dominant kernel")
    if per_op["workers_attributed"]:
        out.append("per operator, the worker threads' work is attributed in proportion to the calling "
                   "thread's executions of the same blocks (approximate); the calling thread's is exact")
    return out


def with_ms(per_op: dict, clock_ghz: float) -> list[dict]:
    """The rows with each operator's compute time on the target's clock (no memory term)."""
    return [r | {"ms": r["cycles"] / (clock_ghz * 1e6)} for r in (per_op or {}).get("rows", [])]

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

Several threads: pthreadpool's workers run parts of each operator's parallel jobs. Every
thread's part of every job is cut out of the trace and assigned to its job, and the job to
the operator the calling thread was in when it started it (``trace``, ``pool``): exact. An
operator's critical path is then the calling thread's serial work in it plus, per job, the
busiest thread's part; the latency's critical path is their sum with the work between
operators (the calling thread's). When the parts cannot be assigned (the checks in
``trace``), a worker's executions of a block are attributed to the operators in
proportion to the calling thread's executions of the same block (an approximation, said in
the output) and the critical path stays the busiest thread's total.

ONNX Runtime's aarch64 library ships without a symbol table, so its per-node loop has no
name to find: no per-operator breakdown there (nor for LiteRT's built-in kernels, whose
per-node call is inlined).
"""

from __future__ import annotations

from collections import Counter

from mobiledeploy.kernels import model, symbols, threads

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
    out = {"main": str(tr.main_cpu), "entry": ENTRY, "nodes": nodes,
           "segments": [part(c) for c in tr.ops], "between": part(tr.between)}
    if tr.jobs:
        out["jobs"] = [{"op": j["op"], "threads": {str(c): part(n) for c, n in j["threads"].items()}}
                       for j in tr.jobs]
    if tr.jobs_note:
        out["jobs_note"] = tr.jobs_note
    return out


def table(prof: dict, cycles: list[float]) -> dict:
    """Per operator: instructions (all threads), cycles (its critical path with the parallel jobs cut
    per thread, else its busiest thread: the calling thread's, exact, or a worker's, attributed),
    the dominant function, and the name when XNNPACK's operators match the delegated nodes one to
    one. ``{}`` when the profile has no segments. With the jobs cut and workers present, also
    ``critical_cycles`` (the latency's critical path) and ``work_split``."""
    ops = prof.get("operators") or {}
    segs = ops.get("segments")
    if not segs:
        return {}
    hot, main = prof["hot"], ops["main"]
    parts = [*segs, ops["between"]]
    ipc = model.hot_ipc(hot, cycles)  # the cold rest at the hot blocks' IPC, as model.threads_cycles
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
    workers = any(cpu != main for b in hot for cpu in b["counts"]) or any(c != main for c in prof.get("cold", {}))
    split = threads.split_jobs(prof, cycles, ipc, len(segs)) if workers and ops.get("jobs") else None
    if split:
        for s in range(len(parts)):
            for cpu, (n_i, n_c) in split["workers"][s].items():
                instr[s] += n_i
                cyc[s][cpu] += n_c
    elif workers:
        _attribute_by_block(prof, cycles, ipc, by_block, instr, cyc)
    nodes = ops.get("nodes") or []
    named = len(nodes) == len(segs)
    busiest = [max(c.values(), default=0.0) for c in cyc]
    path = split["critical"] if split else busiest
    total = sum(path) or 1.0
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
        row |= {"function": fn, "instructions": instr[s], "cycles": path[s], "cycles_share": path[s] / total}
        if split:
            row |= split["rows"][s]
        rows.append(row)
    out = {"rows": rows, "operators": len(segs), "delegated_nodes": len(nodes), "named": named,
           "workers_attributed": workers and not split, "jobs_note": ops.get("jobs_note", "")}
    if split:
        out |= {"critical_cycles": sum(path), "work_split": split["summary"]}
    return out


def _attribute_by_block(prof, cycles, ipc, by_block, instr, cyc) -> None:
    """Workers' executions of each block, shared among the operators as the calling thread's."""
    hot, main = prof["hot"], prof["operators"]["main"]
    for i, b in enumerate(hot):
        total = sum(by_block[i].values())
        for cpu, n in b["counts"].items():
            if cpu == main:
                continue
            shares = {s: v / total for s, v in by_block[i].items()} if total else {len(instr) - 1: 1.0}
            for s, f in shares.items():
                instr[s] += n * f * len(b["lines"])
                cyc[s][cpu] += n * f * cycles[i]
    for cpu, n in prof.get("cold", {}).items():
        if cpu != main:
            instr[-1] += n
            cyc[-1][cpu] += n / ipc


def notes(per_op: dict) -> list[str]:
    """What the per-operator table is and is not."""
    if not per_op:
        return []
    out = []
    if not per_op["named"]:
        out.append(f"XNNPACK ran {per_op['operators']} operators for {per_op['delegated_nodes']} delegated "
                   "TFLite nodes (fused or split): operators are numbered, named by their dominant kernel")
    if per_op["workers_attributed"]:
        why = f" ({per_op['jobs_note']})" if per_op.get("jobs_note") else ""
        out.append("per operator, the worker threads' work is attributed in proportion to the calling "
                   "thread's executions of the same blocks (approximate), and the critical path is the "
                   f"busiest thread's total: the parallel jobs could not be cut per thread{why}; the calling "
                   "thread's is exact")
    if per_op.get("work_split"):
        out.append(threads.describe(per_op["work_split"]))
    return out


def with_ms(per_op: dict, clock_ghz: float) -> list[dict]:
    """The rows with each operator's compute time on the target's clock (no memory term)."""
    return [r | {"ms": r["cycles"] / (clock_ghz * 1e6)} for r in (per_op or {}).get("rows", [])]

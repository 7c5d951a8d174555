"""``estimate --method kernels``: device latency from the runtime's own aarch64 kernels.

The artifact runs under qemu on the target's core model (``[kernels] cpu``), with the
target's MIDR in the guest's cpuinfo (``midr``) so that the runtime picks that core's
kernels; the blocks of one inference are counted (``trace``), decoded (``disasm``),
scheduled per block with ``llvm-mca -mcpu=[kernels] sched`` (``sched``), weighted by their
counts, and turned into milliseconds by the clock, with a memory term (``model``); with
several threads the critical path runs through the parallel jobs, per operator, each
thread's part of each job cut out of the trace (``threads``), else it is the busiest
thread's total. Nothing is fitted. Results are cached per
artifact (content hash), core, threads and runtime version: a repeat costs a file read.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from mobiledeploy.cost import info
from mobiledeploy.cost.estimate import cost_model_for
from mobiledeploy.cost.model import LayerArrays
from mobiledeploy.errors import MobiledeployError, UsageError, one_line
from mobiledeploy.io import sha256_file
from mobiledeploy.kernels import disasm, model, operators, sched, symbols, trace
from mobiledeploy.runtimes import emulate as emu

LABEL = "device estimate from emulated kernels (qemu CPU, llvm-mca model, clock)"
FORMAT = 5  # 3: per-operator segments (LiteRT + XNNPACK); 4: each thread's part of each parallel job;
# 5: trace lines written after another thread's unfinished system call, on its line, are counted (4 missed them)
ONE_THREAD_FORMAT = 3  # one thread runs no parallel job and no other thread's line lands in its system calls:
# formats 4 and 5 changed nothing there, its profiles stay valid


@dataclass(frozen=True)
class Core:
    """A target's ``[kernels]`` table: what runs the kernels and what schedules them."""

    cpu: str  # qemu -cpu
    midr: int  # the guest's cpuinfo (the runtimes choose kernels by it)
    sched: str  # llvm-mca -mcpu
    clock_ghz: float
    note: str = ""

    def to_json(self) -> dict:
        return {"cpu": self.cpu, "midr": f"0x{self.midr:08x}", "sched": self.sched, "clock_ghz": self.clock_ghz,
                "note": self.note}


def core_of(target) -> Core:
    """The target's ``[kernels]`` core; ``UsageError`` when it has none."""
    k = getattr(target, "kernels", None)
    if not k:
        raise UsageError(f"target {target.name!r} has no [kernels] table (cpu, midr, sched, clock_ghz): "
                         f"the kernel-count estimate needs one; see docs/kernels.md")
    return Core(cpu=k["cpu"], midr=int(k["midr"]), sched=k["sched"], clock_ghz=float(k["clock_ghz"]),
                note=str(k.get("note", "")))


@dataclass
class KernelEstimate:
    model: str
    target: str
    core: dict
    runtime: str
    runtime_version: str
    threads: int
    xnnpack: bool
    latency_ms: float
    compute_ms: float
    memory_ms: float
    instructions: float  # per invoke, all threads, spin-waits excluded
    cycles: float  # per invoke, the critical path (through the parallel jobs, else the busiest thread)
    total_cycles: float  # per invoke, all threads
    ipc: float  # instructions / total_cycles
    mix: dict  # class -> fraction of instructions
    per_thread: dict  # cpu index -> {instructions, cycles, wait_instructions}
    hot_blocks: int
    hot_fraction: float  # of the instructions, scheduled one block at a time
    spill_bytes: float
    functions: list = field(default_factory=list)  # the kernels holding the most cycles
    operators: list = field(default_factory=list)  # per operator (LiteRT + XNNPACK), in execution order
    label: str = LABEL
    cached: bool = False
    seconds: float = 0.0
    notes: list = field(default_factory=list)
    busiest_thread_cycles: float = 0.0  # per invoke, the busiest thread's total (the critical path before jobs)
    work_split: dict = field(default_factory=dict)  # how the runtime split the work among threads (several)

    @property
    def dot_instructions(self) -> float:
        return self.mix.get("dot", 0.0) * self.instructions

    def to_json(self) -> dict:
        return asdict(self) | {"dot_instructions": self.dot_instructions}


def profile_key(path, core: Core, threads: int, xnnpack: bool, wheels: dict) -> str:
    parts = [FORMAT if threads > 1 else ONE_THREAD_FORMAT, sha256_file(path), core.cpu, core.midr, threads, xnnpack, sorted(wheels.items())]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]


def profile(path, core: Core, *, threads: int, xnnpack: bool, env, cache_dir: Path,
            timeout_s: float = 1800.0) -> dict:
    """The per-invoke counts of ``path`` on ``core``: instructions, cycles per thread, mix."""
    tr = trace.trace(path, qemu_cpu=core.cpu, midr=core.midr, threads=threads, builtin=not xnnpack, env=env,
                     timeout_s=timeout_s)
    return profile_from_trace(tr, core.sched, cache_dir)


def profile_from_trace(tr, mcpu: str, cache_dir: Path | None) -> dict:
    """The profile of a trace: instruction mix, and the hot blocks (their text and per-thread
    counts) with the cold rest per thread, so that any scheduling model can be applied later."""
    counts = tr.per_invoke()
    executed = {pc for _, pc in counts}
    texts = disasm.disassemble({w for pc in executed for w in tr.blocks[pc]})
    info = {}
    for pc in executed:
        lines = [texts[w] for w in tr.blocks[pc]]
        info[pc] = model.BlockInfo(n=len(lines), mix=Counter(disasm.classify(t) for t in lines),
                                   wait=disasm.is_wait(lines))
    for pc in model.spin_blocks(info):
        info[pc].wait = True
    instr_by_pc: Counter = Counter()
    for (_, pc), n in counts.items():
        if not info[pc].wait:
            instr_by_pc[pc] += n * info[pc].n
    hot = set(model.hot_blocks(instr_by_pc))
    blocks: dict[int, dict] = {pc: {"pc": pc, "lines": [texts[w] for w in tr.blocks[pc]], "counts": {}} for pc in hot}
    cold: Counter = Counter()
    wait: Counter = Counter()
    for (cpu, pc), n in counts.items():
        if info[pc].wait:
            wait[str(cpu)] += n * info[pc].n
        elif pc in hot:
            blocks[pc]["counts"][str(cpu)] = n
        else:
            cold[str(cpu)] += n * info[pc].n
    mix = model.mix_of(counts, info)
    total_i = sum(mix.values())
    prof = {"instructions": total_i, "mix": {k: mix.get(k, 0.0) / total_i for k in disasm.MIX_CLASSES} if total_i else {},
            "hot": [blocks[pc] for pc in sorted(hot, key=lambda p: -instr_by_pc[p])], "cold": dict(cold),
            "wait": dict(wait), "hot_fraction": sum(instr_by_pc[pc] for pc in hot) / total_i if total_i else 0.0,
            "runtime": tr.meta.get("runtime"), "runtime_version": tr.meta.get("version"),
            "maps": tr.meta.get("maps", [])}
    prof["operators"] = operators.profile(tr, prof["hot"], info)
    return prof | schedule(prof, mcpu, cache_dir)


def schedule(prof: dict, mcpu: str, cache_dir: Path | None) -> dict:
    """Cycles per invoke of a profile on ``mcpu``'s model: per thread, total and the critical path
    (through the parallel jobs when they were cut per thread, else the busiest thread's total)."""
    cyc = sched.block_cycles(mcpu, {i: b["lines"] for i, b in enumerate(prof["hot"])}, cache_dir)
    cycles = [cyc[i] for i in range(len(prof["hot"]))]
    per_op = operators.table(prof, cycles)
    out = {"sched": mcpu, "hot_blocks": len(prof["hot"]), "functions": functions(prof, cycles),
           "per_operator": per_op} | model.threads_cycles(prof, cycles)
    out["busiest_thread_cycles"] = out["critical_cycles"]
    if per_op.get("critical_cycles") is not None:
        out["critical_cycles"] = per_op["critical_cycles"]
    return out


def functions(prof: dict, cycles: list[float], top: int = 8) -> list[dict]:
    """The per-kernel breakdown: the functions holding the most scheduled cycles (all threads)."""
    if not prof.get("maps") or not prof["hot"] or "pc" not in prof["hot"][0]:
        return []  # a profile from before block addresses were kept

    by: Counter = Counter()
    ins: Counter = Counter()
    for b, c in zip(prof["hot"], cycles):
        name = symbols.function_of(b["pc"], prof["maps"])
        n = sum(b["counts"].values())
        by[name] += n * c
        ins[name] += n * len(b["lines"])
    total = sum(by.values()) or 1.0
    return [{"function": symbols.short(k), "cycles_share": v / total, "instructions": ins[k]}
            for k, v in by.most_common(top)]


def spill_bytes(path, target, threads: int) -> tuple[float, float, float]:
    """(bytes beyond the target's caches per invoke, bandwidth GB/s, thread speedup): the cost
    model's spill term and its priors (``mobiledeploy.cost.estimate``)."""
    stats = info.model_stats(path)
    cm = cost_model_for(replace(target, cost_model={}), threads=threads)  # the priors: nothing fitted
    arrays = LayerArrays(stats.layers, stats.precision, threads)
    return float(arrays.terms(cm, threads)["spill"].sum()), float(cm.bandwidth_gbs), cm.speedup(threads)


def load_profile(path, core: Core, threads: int, xnnpack: bool, env, *, refresh: bool | None = None,
                 timeout_s: float = 1800.0) -> dict | None:
    """The cached profile of ``path`` on ``core`` (scheduled on ``core.sched``); ``refresh=None``:
    only a cached one (None if absent), False: count it when absent, True: count it again."""
    cache_dir = env.cache / "kernels"
    stored = cache_dir / "profiles" / f"{profile_key(path, core, threads, xnnpack, env.wheels)}.json"
    if stored.is_file() and not refresh:
        prof = json.loads(stored.read_text())
        if prof.get("sched") != core.sched:
            prof |= schedule(prof, core.sched, cache_dir)
        return prof
    if refresh is None:
        return None
    prof = profile(path, core, threads=threads, xnnpack=xnnpack, env=env, cache_dir=cache_dir, timeout_s=timeout_s)
    stored.parent.mkdir(parents=True, exist_ok=True)
    tmp = stored.with_suffix(".part")
    tmp.write_text(json.dumps(prof))
    tmp.replace(stored)
    return prof


def check_artifact(path) -> Path:
    """``path`` if it is a .tflite or .onnx file; ``UsageError`` otherwise."""
    path = Path(path)
    if path.suffix.lower() not in (".tflite", ".onnx"):
        raise UsageError(f"{path.name}: the kernel-count estimate runs .tflite or .onnx artifacts "
                         "(export the model first)")
    return path


def preflight(path, target, env=None) -> tuple[Path, Core, object]:
    """``(path, core, ARM environment)`` when an estimate of ``path`` on ``target`` can start: a
    .tflite/.onnx file, the target's ``[kernels]`` core, LLVM 19 with a scheduling model of that
    core, and ``make arm-env``'s environment; ``UsageError`` (one line) otherwise. Nothing runs
    under qemu (the ``cpu`` name is checked by the emulated run itself)."""
    path = check_artifact(path)
    core, env = preflight_target(target, env)
    return path, core, env


def preflight_target(target, env=None) -> tuple[Core, object]:
    """``(core, ARM environment)`` when ``target``'s device can be estimated from emulated kernels (its
    ``[kernels]`` core, LLVM 19 with that core's scheduling model, ``make arm-env``'s environment);
    ``UsageError`` (one line) otherwise. For callers that check before the artifact exists."""
    core = core_of(target)
    disasm.llvm_bin("llvm-mca")
    disasm.llvm_bin("llvm-mc")
    sched.check_mcpu(core.sched)
    return core, env or emu.find_env()


def estimate_kernels(path: str | os.PathLike, target, *, threads: int | None = None, xnnpack: bool | None = None,
                     env=None, refresh: bool = False, timeout_s: float = 1800.0) -> KernelEstimate:
    """Estimate ``path`` (.tflite or .onnx) on ``target``'s device from its emulated kernels."""
    t0 = time.perf_counter()
    path, core, env = preflight(path, target, env)
    n = int(threads or target.threads or 1)
    xnn = target.xnnpack if xnnpack is None else xnnpack
    prof = None if refresh else load_profile(path, core, n, xnn, env)
    cached = prof is not None
    if prof is None:
        prof = load_profile(path, core, n, xnn, env, refresh=True, timeout_s=timeout_s)
    spill, bw, speedup = spill_bytes(path, target, n)
    compute_ms = prof["critical_cycles"] / (core.clock_ghz * 1e6)
    memory_ms = model.memory_seconds(spill, bw) * 1e3 / speedup
    notes = []
    if core.note:
        notes.append(core.note)
    if prof["runtime"] == "onnxruntime" or not xnn:
        notes.append("not validated against published figures (only LiteRT + XNNPACK has been)")
    notes += operators.notes(prof.get("per_operator"))
    return KernelEstimate(
        model=str(path), target=target.name, core=core.to_json(), runtime=prof["runtime"],
        runtime_version=prof["runtime_version"], threads=n, xnnpack=xnn, latency_ms=compute_ms + memory_ms,
        compute_ms=compute_ms, memory_ms=memory_ms, instructions=prof["instructions"],
        cycles=prof["critical_cycles"], total_cycles=prof["total_cycles"],
        ipc=prof["instructions"] / prof["total_cycles"] if prof["total_cycles"] else 0.0, mix=prof["mix"],
        per_thread=prof["per_thread"], hot_blocks=prof["hot_blocks"], hot_fraction=prof["hot_fraction"],
        spill_bytes=spill, functions=prof.get("functions", []),
        operators=operators.with_ms(prof.get("per_operator"), core.clock_ghz), cached=cached,
        seconds=round(time.perf_counter() - t0, 2), notes=notes,
        busiest_thread_cycles=prof.get("busiest_thread_cycles", prof["critical_cycles"]),
        work_split=(prof.get("per_operator") or {}).get("work_split", {}))


def kernel_estimates_for(paths, target) -> dict[str, dict]:
    """``{path: {"estimate_ms", "threads", "fitted", "label", "cached", ...}}`` on ``target``'s core, the
    shape of ``cost.estimate.estimates_for``, for ``sweep --estimate-method kernels`` and ``check``'s
    ``estimate_method = "kernels"``. A path that cannot be estimated (no ARM environment or LLVM, a
    target without [kernels] or with a core qemu or llvm-mca does not know, a crash under emulation)
    gets ``{"estimate_error": one line}``; nothing raises per path. Each estimate goes through
    ``estimate_kernels``'s cache (artifact hash, core, threads, runtime version)."""
    out: dict[str, dict] = {}
    for p in paths:
        try:
            e = estimate_kernels(p, target)
        except Exception as err:  # noqa: BLE001 - whatever failed, this path's error, never the caller's end
            out[str(p)] = {"estimate_error": one_line(err, typed=not isinstance(err, MobiledeployError))}
            continue
        out[str(p)] = {"estimate_ms": e.latency_ms, "threads": e.threads, "fitted": False, "label": e.label,
                       "cached": e.cached, "runtime": e.runtime, "runtime_version": e.runtime_version,
                       "notes": list(e.notes)}
    return out

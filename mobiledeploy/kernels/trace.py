"""Count the translation blocks a runtime executes for one inference, under qemu.

qemu-user logs, with ``-d in_asm,exec,nochain,strace``, each translation block (TB)
when it is translated (its instructions, with the encoding of each) and each time it
executes (``Trace CPU: HOSTPTR [CSBASE/PC/FLAGS/CFLAGS]``; ``CPU`` is the guest thread's
CPU index), and every system call. ``-dfilter`` restricts the TB lines to address
ranges: here, the runtime's own shared libraries, found by a first run that only loads
the model (cached per CPU model, runtime and version), so that the guest Python's
start-up is not logged. The guest (``guest.py``) stats two marker paths around the
counted invokes; ``-d strace`` puts them in the same log, so the count is of inference
only (the warm-up invoke, weight packing and start-up fall outside).

Calls into the C library (memcpy, memset) are not in those ranges and are not counted.

Operators: given the entry address of the function the runtime calls once per operator
(``op_entry``; for XNNPACK ``xnn_run_operator_with_index``), the calling thread's blocks
are also cut into operator segments. qemu writes each thread's lines in chunks, so the
threads interleave coarsely in the log, but one thread's lines are in execution order:
on the thread that executes the entry, a segment runs from the entry block to the block
its caller returns to (the instruction after the ``bl``), and what runs between two
segments is the runtime's own work between operators.

Parallel jobs (``pool``): with several threads, every thread's part of each pthreadpool job
is also cut out (from the thread function's entry to its return) and assigned to the job
the calling thread started last before it in the log (see ``pool`` for why that is exact,
and what is checked); the calling thread's operator at that job's start names the operator.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import re
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from mobiledeploy.errors import RuntimeFailure, UsageError
from mobiledeploy.kernels import operators, pool as pthreadpool, tools
from mobiledeploy.machine import possible_cpus
from mobiledeploy.runtimes import emulate as emu

GUEST = Path(__file__).with_name("guest.py")
BEGIN = b"/__mobiledeploy_kernels_begin__"
END = b"/__mobiledeploy_kernels_end__"
# the runtime's libraries: what -dfilter keeps (everything else, Python and libc, is not logged)
RUNTIME_LIBS = {"litert": "/ai_edge_litert/", "onnxruntime": "/onnxruntime/"}
# not anchored at a line start: ``-d strace`` writes a system call's name and arguments, then its
# result when it returns, and other threads' lines land in between, on the same line as the call
_TRACE = re.compile(rb"Trace (\d+): 0x[0-9a-f]+ \[[0-9a-f]+/([0-9a-f]+)/")
_BLOCK = re.compile(rb"^IN: [^\n]*\n((?:0x[0-9a-f]+:  [0-9a-f]{8}[^\n]*\n)+)", re.M)
_INSN = re.compile(rb"^0x[0-9a-f]+:  ([0-9a-f]{8})", re.M)


@dataclass
class Trace:
    """Executed blocks of the counted invokes: ``counts[(cpu_index, pc)]`` and each block's words."""

    counts: Counter = field(default_factory=Counter)
    blocks: dict[int, list[int]] = field(default_factory=dict)  # pc -> instruction words
    invokes: int = 1
    meta: dict = field(default_factory=dict)
    main_cpu: int | None = None  # the thread that runs the operators (when op_entry was given)
    ops: list[Counter] = field(default_factory=list)  # per operator of one invoke: pc -> count (main thread)
    between: Counter = field(default_factory=Counter)  # main thread's blocks outside the operators
    # per parallel job of one invoke: {"op": operator index or None, "threads": {cpu: Counter pc -> count}}
    jobs: list[dict] = field(default_factory=list)
    jobs_note: str = ""  # why the parts could not be assigned to jobs ("" when they were, or no pool)

    def per_invoke(self) -> dict[tuple[int, int], float]:
        return {k: v / self.invokes for k, v in self.counts.items()}

    def instructions(self) -> float:
        return sum(n * len(self.blocks.get(pc, ())) for (_, pc), n in self.counts.items()) / self.invokes


def parse_log(path: str | os.PathLike, invokes: int = 1, op_entry: int | None = None,
              pool: pthreadpool.Pool | None = None) -> Trace:
    """Parse a qemu log (see the module docstring): counts between the markers, all blocks, and with
    ``op_entry`` the main thread's counts per operator (``Trace.ops``, summed over the invokes), with
    ``pool`` also every thread's counts per parallel job (``Trace.jobs``)."""
    path = Path(path)
    tr = Trace(invokes=invokes)
    if path.stat().st_size == 0:
        raise RuntimeFailure(f"{path}: empty qemu log")
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        lo, hi = mm.find(BEGIN), mm.find(END)
        if lo < 0 or hi < lo:
            raise RuntimeFailure(f"{path}: the log has no inference markers (the guest stopped early?)")
        lo = mm.find(b"\n", lo) + 1
        for m in _BLOCK.finditer(mm):
            pc = int(m.group(1)[:m.group(1).index(b":")], 16)
            tr.blocks[pc] = [int(w, 16) for w in _INSN.findall(m.group(1))]
        if op_entry is None:
            tr.counts = Counter((int(c), int(p, 16)) for c, p in _TRACE.findall(mm, lo, hi))
        else:
            _cut_operators(tr, mm, lo, hi, op_entry, pool)
    missing = {pc for _, pc in tr.counts} - set(tr.blocks)
    if missing:
        raise RuntimeFailure(f"{path}: {len(missing)} executed blocks were never logged as translated")
    return tr


def call_returns(blocks: dict[int, list[int]], target: int) -> set[int]:
    """Return addresses of the ``bl target`` instructions in ``blocks`` ({pc: words})."""
    out = set()
    for pc, words in blocks.items():
        for k, w in enumerate(words):
            if w >> 26 == 0b100101:  # BL imm26
                imm = w & 0x3FFFFFF
                if pc + 4 * k + 4 * (imm - (1 << 26) if imm >> 25 else imm) == target:
                    out.add(pc + 4 * k + 4)
    return out


def _marks(tr: Trace, entry: int, pool) -> dict[int, str]:
    """The blocks that change a thread's state: operator entry/return, job start, part entry/end."""
    kinds = {r: "ret" for r in call_returns(tr.blocks, entry) - {entry}}
    if pool is not None:
        kinds |= {r: "end" for r in pthreadpool.indirect_returns(tr.blocks, pool.callers)}
        kinds |= {p: "part" for p in pool.parts} | {pool.job: "job"}
    return kinds | {entry: "op"}


def _cut_operators(tr: Trace, mm, lo: int, hi: int, entry: int, pool=None) -> None:
    """Count ``[lo, hi)`` chunk by chunk between the marks (``_marks``): the main thread's blocks go
    to the current operator's Counter (``Trace.ops``) or to ``between``; with ``pool``, every
    thread's blocks inside a part of a parallel job also go to that job (``Trace.jobs``)."""
    kinds = _marks(tr, entry, pool)
    pcs = b"|".join(f"{p:x}".encode() for p in sorted(kinds))
    mark = re.compile(rb"Trace (\d+): 0x[0-9a-f]+ \[[0-9a-f]+/0*(" + pcs + rb")/")
    marks = [(m.start(), int(m.group(1)), kinds[int(m.group(2), 16)]) for m in mark.finditer(mm, lo, hi)]
    starts = Counter(c for _, c, k in marks if k == "op")
    main, n = starts.most_common(1)[0] if starts else (None, 0)
    per = n // tr.invokes if n and n % tr.invokes == 0 else 0  # operators per invoke
    if per:
        tr.main_cpu, tr.ops = main, [Counter() for _ in range(per)]
    cur, k, op, pos = tr.between, 0, None, lo
    jobs: list[dict] = []  # every job of every invoke: {"op", "threads": {cpu: Counter}}
    part: dict[int, int | None] = {}  # cpu -> the job whose part it is running
    last: dict[int, int] = {}  # cpu -> the last job it ran a part of
    bad = ""
    for at, cpu, kind in [*marks, (hi, None, None)]:
        for (c, p), v in Counter(_TRACE.findall(mm, pos, at)).items():
            cpu_, pc_ = int(c), int(p, 16)
            tr.counts[cpu_, pc_] += v
            if cpu_ == main:
                cur[pc_] += v
            if part.get(cpu_) is not None:
                jobs[part[cpu_]]["threads"].setdefault(cpu_, Counter())[pc_] += v
        pos = at
        if per and cpu == main and kind in ("op", "ret"):
            cur, op, k = (tr.ops[k % per], k % per, k + 1) if kind == "op" else (tr.between, None, k)
        elif kind == "job" and cpu == main:
            late = [c for c, j in part.items() if j is not None]
            if late:
                bad = bad or (f"a thread's part of a parallel job ran on past the start of the next job (thread "
                              f"{late[0]}{' (the calling thread)' if late[0] == main else ''}, job {len(jobs) - 1} "
                              f"of {tr.invokes} invoke(s))")
            jobs.append({"op": op, "threads": {}})
        elif kind == "part":
            if not jobs or last.get(cpu) == len(jobs) - 1 or part.get(cpu) is not None:
                bad = bad or (f"a thread started a part of a parallel job outside a job, or twice in one job "
                              f"(thread {cpu}, job {len(jobs) - 1})")
            part[cpu] = last[cpu] = len(jobs) - 1
        elif kind == "end":
            part[cpu] = None
    if not per:
        tr.between = Counter()
    elif pool is not None and jobs:
        _fold_jobs(tr, jobs, main, bad)


def _fold_jobs(tr: Trace, jobs: list[dict], main: int, bad: str) -> None:
    """``Trace.jobs``: the jobs of one invoke, counts summed over the invokes (each invoke must start
    the same jobs in the same operators, and the calling thread must run a part of each)."""
    n = len(jobs)
    per = n // tr.invokes if n % tr.invokes == 0 else 0
    if not bad and not per:
        bad = f"{n} parallel jobs do not split into {tr.invokes} invokes"
    if not bad and any(jobs[j]["op"] != jobs[j % per]["op"] for j in range(n)):
        bad = "the invokes ran their parallel jobs in different operators"
    if not bad and any(main not in j["threads"] for j in jobs):
        bad = "the calling thread ran no part of a parallel job"
    if bad:
        tr.jobs_note = bad
        return
    tr.jobs = [{"op": jobs[j]["op"], "threads": {}} for j in range(per)]
    for j, job in enumerate(jobs):
        for cpu, c in job["threads"].items():
            tr.jobs[j % per]["threads"].setdefault(cpu, Counter()).update(c)


# ---------------------------------------------------------------- the guest's CPU


def cpu_root(env: emu.ArmEnv, qemu_cpu: str, midr: int) -> Path:
    """A thin sysroot whose /proc/cpuinfo reports ``midr`` with the features qemu's ``qemu_cpu``
    gives the guest (built once per pair, like ``make arm-env``'s per-CPU roots)."""
    model = emu.EmulatedCpu(name=f"{qemu_cpu}-{midr:08x}", qemu_cpu=qemu_cpu, part=(midr >> 4) & 0xFFF,
                            implementer=midr >> 24, variant=(midr >> 20) & 0xF, revision=midr & 0xF)
    root = env.cache / "kernels" / "cpus" / model.name.replace(",", "_").replace("=", "-")
    info = root / "proc" / "cpuinfo"
    if info.is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=root.name + ".", dir=root.parent))
    (tmp / "proc").mkdir(parents=True, exist_ok=True)
    for entry in env.sysroot.iterdir():
        if entry.name != "proc":
            (tmp / entry.name).symlink_to(entry.resolve())
    procs = possible_cpus()  # the guest reads the host's /sys: its cpuinfo must list the same CPUs
    (tmp / "proc" / "cpuinfo").write_text(emu.cpuinfo_text(model, [], procs))
    argv = [env.qemu, "-cpu", qemu_cpu, "-L", str(tmp), str(tmp / emu.GUEST_PYTHON), "-S", "-c", emu.HWCAP_PROBE]
    out = emu.run_guest(argv, _environ(env, []), 300, f"HWCAP probe on -cpu {qemu_cpu}")
    hw, hw2 = (int(v) for v in out.split()[-2:])
    (tmp / "proc" / "cpuinfo").write_text(emu.cpuinfo_text(model, emu.decode_hwcaps(hw, hw2), procs))
    try:
        tmp.rename(root)
    except OSError:  # built by another process meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def _environ(env: emu.ArmEnv, pythonpath: list[str]) -> dict[str, str]:
    # a fixed hash seed: the same allocations, so the libraries load where discovery found them
    return emu.guest_environ(env, pythonpath) | {"PYTHONHASHSEED": "0"}


def _guest_argv(env, root, qemu_cpu, model, *, threads, builtin, invokes, maps_only) -> list[str]:
    args = [str(GUEST), str(Path(model).resolve()), "--threads", str(threads), "--invokes", str(invokes)]
    args += ["--builtin"] if builtin else []
    args += ["--maps-only"] if maps_only else []
    return [env.qemu, "-cpu", qemu_cpu, "-L", str(root), str(root / emu.GUEST_PYTHON), "-S", *args]


def _pythonpath() -> list[str]:
    return [str(GUEST.parent), str(emu.WORKER.parent)]


def _run(argv, environ, timeout_s, what) -> dict:
    out = emu.run_guest(argv, environ, timeout_s, what)
    try:
        return json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RuntimeFailure(f"{what}: the guest printed no result") from None


def runtime_of(model: str | os.PathLike) -> str:
    return "litert" if str(model).lower().endswith(".tflite") else "onnxruntime"


def library_ranges(maps: list, runtime: str) -> list[tuple[int, int]]:
    key = RUNTIME_LIBS[runtime]
    return sorted((lo, hi) for lo, hi, _, path in maps if key in path)


def maps_file(env, root, qemu_cpu, model, threads, builtin, cache: Path) -> Path:
    key = json.dumps([str(root), qemu_cpu, runtime_of(model), env.wheels, threads, builtin])
    return cache / f"maps-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def discover(env, root, qemu_cpu, model, *, threads, builtin, timeout_s, cache: Path) -> list[tuple[int, int]]:
    """The executable ranges of the runtime's libraries in the guest (a run that only loads)."""
    path = maps_file(env, root, qemu_cpu, model, threads, builtin, cache)
    if path.is_file():
        return [tuple(r) for r in json.loads(path.read_text())]
    argv = _guest_argv(env, root, qemu_cpu, model, threads=threads, builtin=builtin, invokes=0, maps_only=True)
    res = _run(argv, _environ(env, _pythonpath()), timeout_s, f"{Path(model).name} on -cpu {qemu_cpu} (load)")
    runtime = runtime_of(model)
    ranges = library_ranges(res["maps"], runtime)
    if not ranges:
        raise RuntimeFailure(f"no {runtime} library found in the guest's address space")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(ranges))
    return ranges


def trace(model: str | os.PathLike, *, qemu_cpu: str, midr: int, threads: int = 1, builtin: bool = False,
          invokes: int = 1, env: emu.ArmEnv | None = None, timeout_s: float = 1800.0,
          workdir: str | os.PathLike | None = None, keep_log: str | os.PathLike | None = None) -> Trace:
    """Run ``model`` under ``qemu -cpu qemu_cpu`` with ``midr`` in the guest's cpuinfo; count its blocks."""
    env = env or emu.find_env()
    if qemu_cpu not in tools.qemu_cpus(env.qemu):
        raise UsageError(f"qemu does not know CPU {qemu_cpu!r} ([kernels] cpu); choose from "
                         f"{', '.join(tools.qemu_cpus(env.qemu))}")
    root = cpu_root(env, qemu_cpu, midr)
    cache = env.cache / "kernels"
    ranges = discover(env, root, qemu_cpu, model, threads=threads, builtin=builtin, timeout_s=timeout_s / 2,
                      cache=cache)
    with tempfile.TemporaryDirectory(prefix="mobiledeploy-kernels-", dir=workdir) as tmp:
        log = Path(keep_log) if keep_log else Path(tmp) / "qemu.log"
        dfilter = ",".join(f"0x{lo:x}..0x{hi - 1:x}" for lo, hi in ranges)
        argv = _guest_argv(env, root, qemu_cpu, model, threads=threads, builtin=builtin, invokes=invokes,
                           maps_only=False)
        argv[1:1] = ["-d", "in_asm,exec,nochain,strace", "-dfilter", dfilter, "-D", str(log)]
        res = _run(argv, _environ(env, _pythonpath()), timeout_s, f"{Path(model).name} on -cpu {qemu_cpu}")
        kernels = max(ranges, key=lambda r: r[1] - r[0])  # the library with the kernels (small ones may move)
        if kernels not in library_ranges(res["maps"], runtime_of(model)):
            maps_file(env, root, qemu_cpu, model, threads, builtin, cache).unlink(missing_ok=True)  # rediscover
            raise RuntimeFailure("the runtime's libraries moved between the discovery run and the counted "
                                 "run; run again")
        libs = [m for m in res["maps"] if RUNTIME_LIBS[runtime_of(model)] in m[3]]
        entry = operators.entry_address(runtime_of(model), not builtin, libs)
        pool = pthreadpool.pool_of(libs) if entry is not None and threads > 1 else None
        tr = parse_log(log, invokes=invokes, op_entry=entry, pool=pool)
    tr.meta = {"runtime": res["runtime"], "version": res["version"], "threads": threads, "builtin": builtin,
               "qemu_cpu": qemu_cpu, "midr": f"0x{midr:08x}", "invokes": invokes,
               "maps": libs, "nodes": res.get("nodes", []), "graph_inputs": res.get("graph_inputs", [])}
    return tr

"""estimate --method kernels with several threads: each thread's part of each pthreadpool job cut
out of the trace and assigned to its job and operator, the critical path through the jobs (per
operator: the calling thread's serial work plus each job's busiest part), the fallback when the
parts cannot be assigned, one thread unchanged, and (slow, with `make arm-env`) a real tiny model
at two threads."""

from __future__ import annotations

from collections import Counter

import pytest

from mobiledeploy.kernels import model, operators, pool, threads, trace
from mobiledeploy.kernels import estimate as ke
from test_kernels import ARM  # the ARM environment's or LLVM 19's absence, or None

NOP, YIELD, FMLA = 0xD503201F, 0xD503203F, 0x4E20CC00
OP = 0x5500001000  # xnn_run_operator_with_index
CALL, RET = 0x5500002000, 0x5500002008  # the interpreter's `bl OP`, and the block it returns to
K1, K2 = 0x5500003000, 0x5500003100  # kernels: 4 and 8 instructions
INTERP = 0x5500004000
JOB, JOB_RET = 0x5500005000, 0x5500005008  # pthreadpool_parallelize: its `blr` to the part, the return
LOOP, LOOP_RET, SPIN = 0x5500006000, 0x5500006008, 0x5500006010  # thread_main: `blr`, return, yield loop
PART = 0x5500007000  # a thread function (thread_parallelize_2d)
POOL = pool.Pool(job=JOB, parts=frozenset({PART}), callers=((JOB, JOB + 0x100), (LOOP, LOOP + 0x100)))


def _bl(src: int, dst: int) -> int:
    return 0x94000000 | (((dst - src) // 4) & 0x3FFFFFF)


BLOCKS = {OP: [NOP, NOP], CALL: [NOP, _bl(CALL + 4, OP)], RET: [NOP, NOP], K1: [FMLA] * 4, K2: [FMLA] * 8,
          INTERP: [NOP] * 3, JOB: [NOP, 0xD63F0100], JOB_RET: [NOP, NOP], LOOP: [NOP, 0xD63F0120],
          LOOP_RET: [NOP, NOP], SPIN: [YIELD, NOP], PART: [NOP, NOP]}
MAIN = [INTERP, CALL, OP, K1, JOB, PART, K1, K1, JOB_RET, RET,  # operator 0: serial K1, then job 0
        CALL, OP, JOB, PART, K2, JOB_RET, JOB, PART, K2, JOB_RET, RET, INTERP]  # operator 1: jobs 1 and 2
WORKER = [LOOP, PART, K1, K1, K1, LOOP_RET, SPIN, SPIN,  # its part of job 0, longer than the calling thread's
          LOOP, PART, K2, K2, LOOP_RET, SPIN, SPIN, SPIN]  # job 1; it misses job 2 (pthreadpool allows it)


def _log(path, chunks: list[tuple[int, list[int]]], invokes: int = 1):
    """A qemu 7.2 log: the blocks, then the trace lines of ``chunks`` ((cpu, pcs) in log order) between
    the inference markers, ``invokes`` times."""
    lines = []
    for pc, words in BLOCKS.items():
        lines += ["----------------", "IN: "] + [f"0x{pc + 4 * k:016x}:  {w:08x}  insn" for k, w in enumerate(words)]
        lines.append("")
    lines.append('1 newfstatat(AT_FDCWD,"/__mobiledeploy_kernels_begin__",0x0,0) = -1 errno=2')
    for _ in range(invokes):
        for cpu, pcs in chunks:
            lines += [f"Trace {cpu}: 0x7f00 [0000000000001001/{pc:016x}/00000001/00080200] " for pc in pcs]
    lines.append('1 newfstatat(AT_FDCWD,"/__mobiledeploy_kernels_end__",0x0,0) = -1 errno=2')
    path.write_text("\n".join(lines) + "\n")
    return path


def _interleaved():
    """The calling thread (0) and a worker (1) as qemu may log them: the worker's part of a job after
    the job's start and before the next one's."""
    return [(0, MAIN[:5]), (1, WORKER[:3]), (0, MAIN[5:8]), (1, WORKER[3:8]), (0, MAIN[8:13]), (1, WORKER[8:11]),
            (0, MAIN[13:15]), (1, WORKER[11:]), (0, MAIN[15:])]


def test_parts_are_assigned_to_their_jobs_and_operators(tmp_path):
    tr = trace.parse_log(_log(tmp_path / "q.log", _interleaved(), invokes=2), invokes=2, op_entry=OP, pool=POOL)
    assert tr.main_cpu == 0 and len(tr.ops) == 2 and tr.jobs_note == ""
    assert [j["op"] for j in tr.jobs] == [0, 1, 1]  # three jobs per invoke, folded over the two invokes
    assert dict(tr.jobs[0]["threads"][0]) == {PART: 2, K1: 4} and dict(tr.jobs[0]["threads"][1]) == {PART: 2, K1: 6}
    assert dict(tr.jobs[1]["threads"][1]) == {PART: 2, K2: 4} and set(tr.jobs[2]["threads"]) == {0}
    assert tr.counts == trace.parse_log(tmp_path / "q.log", invokes=2).counts  # the same totals


def test_a_line_written_after_an_unfinished_system_call_counts(tmp_path):
    """``-d strace`` writes a call, then its result when it returns; another thread's trace line may
    land in between, on the call's line: it is still counted (here the end of the calling thread's
    part of job 0, without which its part would run on into job 1)."""
    log = _log(tmp_path / "q.log", _interleaved())
    text = log.read_text()
    end = f"Trace 0: 0x7f00 [0000000000001001/{JOB_RET:016x}/"
    i = text.index(end)
    log.write_text(text[:i] + "77 futex(0x0,FUTEX_PRIVATE_FLAG|FUTEX_WAIT,-1,NULL)" + text[i:].replace(
        "\n", "\n = 0\n", 1))
    tr = trace.parse_log(log, op_entry=OP, pool=POOL)
    assert tr.jobs_note == "" and dict(tr.jobs[0]["threads"][0]) == {PART: 1, K1: 2}
    assert tr.counts[0, JOB_RET] == 3


def _profile(tr) -> tuple[dict, list[float]]:
    """Every non-wait block hot, as ``estimate.profile_from_trace`` builds it; one cycle per instruction
    except the kernels (K1: 10 cycles, K2: 20)."""
    info = {pc: model.BlockInfo(n=len(w), mix=Counter(), wait=YIELD in w) for pc, w in BLOCKS.items()}
    hot = []
    for pc in BLOCKS:
        counts = {str(c): n / tr.invokes for (c, p), n in tr.counts.items() if p == pc}
        if counts and not info[pc].wait:
            hot.append({"pc": pc, "lines": ["x"] * len(BLOCKS[pc]), "counts": counts})
    prof = {"hot": hot, "cold": {}, "maps": []}
    prof["operators"] = operators.profile(tr, hot, info)
    cyc = {K1: 10.0, K2: 20.0}
    return prof, [cyc.get(b["pc"], float(len(b["lines"]))) for b in hot]


def test_critical_path_through_the_jobs(tmp_path, monkeypatch):
    tr = trace.parse_log(_log(tmp_path / "q.log", _interleaved()), op_entry=OP, pool=POOL)
    prof, cycles = _profile(tr)
    t = operators.table(prof, cycles)
    c = {pc: cy for b, cy in zip(prof["hot"], cycles) for pc in [b["pc"]]}
    op0 = (c[OP] + c[K1] + c[JOB] + c[JOB_RET]) + max(c[PART] + 2 * c[K1], c[PART] + 3 * c[K1])
    op1 = (c[OP] + 2 * c[JOB] + 2 * c[JOB_RET]) + max(c[PART] + c[K2], c[PART] + 2 * c[K2]) + (c[PART] + c[K2])
    between = 2 * c[INTERP] + 2 * c[CALL] + 2 * c[RET]
    rows = t["rows"]
    assert [r["cycles"] for r in rows] == pytest.approx([op0, op1, between])
    assert t["critical_cycles"] == pytest.approx(op0 + op1 + between) and not t["workers_attributed"]
    # every thread's instructions are in the table, the worker's loop outside its parts between operators
    per_thread = model.threads_cycles(prof, cycles)
    assert sum(r["instructions"] for r in rows) == pytest.approx(
        sum(v["instructions"] for v in per_thread["per_thread"].values()))
    # the busiest thread's total misses the worker's longer parts: the critical path is longer
    assert t["critical_cycles"] > per_thread["critical_cycles"]
    assert [(r["parallel_jobs"], r["threads_took_part"]) for r in rows] == [(1, 2), (2, 2), (0, 0)]
    assert rows[0]["busiest_share"] == pytest.approx((2 + 30) / (2 + 20 + 2 + 30))
    split = t["work_split"]
    assert split["jobs"] == 3 and split["threads"] == 2 and split["threads_per_job"] == pytest.approx(5 / 3)
    line = threads.describe(split)
    assert line.startswith("work split: 3 parallel jobs per invoke in 2 of 2 operators") and "50% if even" in line
    assert operators.notes(t)[-1] == line
    # the estimate takes it as the critical path, keeps the busiest thread's total beside it
    s = _schedule(prof, cycles, monkeypatch)
    assert s["critical_cycles"] == pytest.approx(t["critical_cycles"])
    assert s["busiest_thread_cycles"] == pytest.approx(per_thread["critical_cycles"])


def _schedule(prof, cycles, monkeypatch):
    """``estimate.schedule`` with the given cycles per hot block instead of llvm-mca's."""
    from mobiledeploy.kernels import sched

    monkeypatch.setattr(sched, "block_cycles", lambda mcpu, blocks, cache: dict(enumerate(cycles)))
    return ke.schedule(prof, "neoverse-n1", None)


def test_a_part_past_the_next_job_falls_back_to_attribution_by_block(tmp_path, monkeypatch):
    late = [(0, MAIN[:5]), (1, WORKER[:3]), (0, MAIN[5:13]), (1, WORKER[3:]), (0, MAIN[13:])]  # job 0's part
    tr = trace.parse_log(_log(tmp_path / "q.log", late), op_entry=OP, pool=POOL)  # logged after job 1 started
    assert tr.jobs == [] and "ran on past the start of the next job" in tr.jobs_note
    assert len(tr.ops) == 2  # the calling thread's operators stand
    prof, cycles = _profile(tr)
    t = operators.table(prof, cycles)
    assert t["workers_attributed"] and "critical_cycles" not in t and "work_split" not in t
    assert any("ran on past the start" in n and "busiest thread's total" in n for n in operators.notes(t))
    s = _schedule(prof, cycles, monkeypatch)
    assert s["critical_cycles"] == s["busiest_thread_cycles"] == model.threads_cycles(prof, cycles)["critical_cycles"]


def test_one_thread_is_unchanged(tmp_path, monkeypatch):
    """No worker: no job is cut (one thread runs none), the critical path is the thread's total as
    before, and one-thread profiles keep their cache key."""
    solo = [m for m in MAIN if m not in (JOB, PART, JOB_RET)]
    tr = trace.parse_log(_log(tmp_path / "q.log", [(0, solo)]), op_entry=OP, pool=POOL)
    assert tr.jobs == [] and tr.jobs_note == ""
    prof, cycles = _profile(tr)
    assert "jobs" not in prof["operators"]
    t = operators.table(prof, cycles)
    assert "critical_cycles" not in t and not t["workers_attributed"]
    s = _schedule(prof, cycles, monkeypatch)
    assert s["critical_cycles"] == s["busiest_thread_cycles"] == model.threads_cycles(prof, cycles)["critical_cycles"]
    assert sum(r["cycles"] for r in t["rows"]) == pytest.approx(s["critical_cycles"])
    assert ke.ONE_THREAD_FORMAT == 3 and ke.FORMAT > ke.ONE_THREAD_FORMAT


def test_indirect_call_returns_in_range():
    assert pool.indirect_returns(BLOCKS, POOL.callers) == {JOB_RET, LOOP_RET}
    assert pool.indirect_returns(BLOCKS, ((K1, K2),)) == set()


# ---------------------------------------------------------------- real kernels under qemu (slow)


@pytest.mark.slow
@pytest.mark.skipif(ARM is not None, reason=str(ARM))
def test_two_threads_on_a_real_model(tiny_tflite):
    """The tiny MobileNet V1 (fp32, 32x32) at two threads on a Cortex-A76 core, two invokes: pthreadpool
    is found, every thread's part of every job is assigned (no fallback), the jobs fall in XNNPACK's
    operators, and the per-operator critical path sums to the estimate's."""
    tr = trace.trace(tiny_tflite, qemu_cpu="cortex-a76", midr=0x414FD0B1, threads=2, invokes=2)
    assert tr.jobs_note == "" and tr.jobs, tr.jobs_note
    assert all(j["op"] is not None for j in tr.jobs) and any(len(j["threads"]) == 2 for j in tr.jobs)
    prof = ke.profile_from_trace(tr, "neoverse-n1", None)
    per_op = prof["per_operator"]
    assert not per_op["workers_attributed"] and not operators.notes(per_op)[-1].startswith("per operator")
    assert sum(r["cycles"] for r in per_op["rows"]) == pytest.approx(prof["critical_cycles"], rel=1e-6)
    assert sum(r["instructions"] for r in per_op["rows"]) == pytest.approx(prof["instructions"], rel=0.01)
    main = prof["operators"]["main"]  # the critical path holds the calling thread's whole work
    assert prof["critical_cycles"] >= prof["per_thread"][main]["cycles"] * (1 - 1e-9)
    assert per_op["work_split"]["threads"] == 2 and per_op["work_split"]["jobs"] == len(tr.jobs)

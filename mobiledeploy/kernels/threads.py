"""Several threads: the critical path through the parallel jobs, and how the runtime split the work.

Input: a profile's per-operator part with its parallel jobs (``operators.profile``): per job,
the operator it ran in and each thread's executions inside its part of the job (``trace``
and ``pool`` cut them). With each hot block's cycles per execution, per operator:

- the calling thread's **serial** work: its cycles in the operator outside its job parts;
- per **job**, the busiest thread's part (a job ends when its last thread does);
- the operator's **critical path**: serial + the sum over its jobs of the busiest part.

The latency's critical path is the sum over the operators plus the work between them on
the calling thread (jobs started between operators count there too). Spin-waits are not
work (``model``). A worker's blocks outside its parts (its loop waiting for the next job,
joining and leaving one) are counted as work between operators, off the critical path.
"""

from __future__ import annotations

from collections import Counter


def _cost(part: dict, hot: list[dict], cycles: list[float], ipc: float) -> tuple[float, float]:
    """(instructions, cycles) of one ``{"hot": {index: n}, "cold": instructions}`` part."""
    i = sum(n * len(hot[int(k)]["lines"]) for k, n in part["hot"].items()) + part["cold"]
    c = sum(n * cycles[int(k)] for k, n in part["hot"].items()) + part["cold"] / ipc
    return i, c


def split_jobs(prof: dict, cycles: list[float], ipc: float, nsegs: int) -> dict:
    """Per operator (``nsegs`` of them, then the work between): the critical path, the workers'
    (instructions, cycles) per thread, and a row of how the work was split; and a summary."""
    ops, hot = prof["operators"], prof["hot"]
    main = ops["main"]
    segs = [*ops["segments"], ops["between"]]
    main_cycles = [_cost(s, hot, cycles, ipc)[1] for s in segs]
    crit = [0.0] * len(segs)
    in_jobs = [0.0] * len(segs)  # the calling thread's cycles inside its parts
    per_thread = [Counter() for _ in segs]  # cycles inside job parts, per thread
    workers: list[dict] = [{} for _ in segs]
    jobs_of = Counter()
    job_max = job_sum = 0.0
    took_part = []
    seen = set()
    for job in ops["jobs"]:
        s = nsegs if job["op"] is None else job["op"]
        jobs_of[s] += 1
        costs = {cpu: _cost(p, hot, cycles, ipc) for cpu, p in job["threads"].items()}
        busiest = max(c for _, c in costs.values())
        crit[s] += busiest
        job_max += busiest
        job_sum += sum(c for _, c in costs.values())
        took_part.append(sum(1 for _, c in costs.values() if c > 0))
        for cpu, (i, c) in costs.items():
            seen.add(cpu)
            per_thread[s][cpu] += c
            if cpu == main:
                in_jobs[s] += c
            else:
                w = workers[s].setdefault(cpu, [0.0, 0.0])
                w[0] += i
                w[1] += c
    for s in range(len(segs)):
        crit[s] += max(main_cycles[s] - in_jobs[s], 0.0)  # the calling thread's serial work
    # each worker's blocks outside its parts: between operators, off the critical path
    totals: dict[str, list[float]] = {}
    for b, c in zip(hot, cycles):
        for cpu, n in b["counts"].items():
            if cpu != main:
                t = totals.setdefault(cpu, [0.0, 0.0])
                t[0] += n * len(b["lines"])
                t[1] += n * c
    for cpu, n in prof.get("cold", {}).items():
        if cpu != main:
            t = totals.setdefault(cpu, [0.0, 0.0])
            t[0] += n
            t[1] += n / ipc
    for cpu, (ti, tc) in totals.items():
        di = ti - sum(w[cpu][0] for w in workers if cpu in w)
        dc = tc - sum(w[cpu][1] for w in workers if cpu in w)
        w = workers[-1].setdefault(cpu, [0.0, 0.0])
        w[0] += max(di, 0.0)
        w[1] += max(dc, 0.0)
    rows = []
    for s in range(len(segs)):
        pt = per_thread[s]
        work = sum(pt.values())
        rows.append({"parallel_jobs": jobs_of[s], "threads_took_part": sum(1 for v in pt.values() if v > 0),
                     "busiest_share": max(pt.values()) / work if work else None})
    n_threads = len({main, *totals, *seen})
    path = sum(crit)
    summary = {"threads": n_threads, "jobs": len(ops["jobs"]), "operators": nsegs,
               "operators_with_jobs": sum(1 for s in jobs_of if s < nsegs),
               "threads_per_job": sum(took_part) / len(took_part) if took_part else 0.0,
               "busiest_share": job_max / job_sum if job_sum else 0.0,
               "parallel_share_of_path": job_max / path if path else 0.0}
    return {"critical": crit, "workers": [{k: tuple(v) for k, v in w.items()} for w in workers],
            "rows": rows, "summary": summary}


def describe(split: dict) -> str:
    """The one line ``work split: ...``."""
    n = split["threads"]
    return (f"work split: {split['jobs']} parallel jobs per invoke in {split['operators_with_jobs']} of "
            f"{split['operators']} operators, {split['threads_per_job']:.1f} of {n} threads taking part per job on "
            f"average; the busiest thread did {split['busiest_share']:.0%} of the jobs' work ({1 / n:.0%} if even); "
            f"the calling thread's serial work is {1 - split['parallel_share_of_path']:.1%} of the critical path")

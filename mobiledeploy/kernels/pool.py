"""pthreadpool in the guest: where a parallel job starts and where each thread's part of it runs.

XNNPACK runs an operator's parallel work through pthreadpool (statically linked into
LiteRT's library, with its symbols). The calling thread's ``pthreadpool_parallelize``
starts one job: it publishes the job, wakes the workers, runs its own part, then waits
until every worker that joined has finished. Every thread's part is one call of the job's
thread function (``thread_parallelize_1d``, ``thread_parallelize_2d_tile_2d``, ...), made
through a function pointer from ``thread_main`` (a worker) or ``pthreadpool_parallelize``
(the calling thread): the part runs from that function's entry block to the block after
the indirect call (``blr``) in the caller. A worker may join a job late or not at all
(pthreadpool lets idle workers skip a job that is already wrapping up), so the k-th part
of a worker is not the k-th job: the job a part belongs to is the one the calling thread
started last before the part's entry, in the log's order.

That order is real: qemu writes every trace line to one log under a lock, just before it
runs the block, so the log is one interleaving of the threads' blocks in time. A worker
can only join job j after the calling thread started it and must finish before the calling
thread can start job j + 1, so each part lies between two job starts; ``trace`` checks
that it does (and that no thread runs two parts of one job), and otherwise falls back to
attributing by block (``operators``), saying why.
"""

from __future__ import annotations

from dataclasses import dataclass

from mobiledeploy.kernels import symbols

JOB = "pthreadpool_parallelize"  # the calling thread starts a job here
CALLERS = ("thread_main", JOB)  # call each job's thread function through a pointer
PART_PREFIXES = ("thread_parallelize_", "pthreadpool_thread_parallelize_")  # the thread functions


@dataclass(frozen=True)
class Pool:
    """Guest addresses: ``job`` (the entry of ``pthreadpool_parallelize``), ``parts`` (the thread
    functions' entries) and ``callers`` (address ranges of the functions that call them)."""

    job: int
    parts: frozenset
    callers: tuple


def pool_of(maps: list) -> Pool | None:
    """pthreadpool's addresses in the mapped libraries; None when they are not all found."""
    found = symbols.functions_where(lambda n: n == JOB or n in CALLERS or n.startswith(PART_PREFIXES), maps)
    parts = frozenset(lo for n, (lo, _) in found.items() if n.startswith(PART_PREFIXES))
    if JOB not in found or not parts or any(c not in found for c in CALLERS):
        return None
    return Pool(job=found[JOB][0], parts=parts, callers=tuple(found[c] for c in CALLERS))


def indirect_returns(blocks: dict[int, list[int]], ranges) -> set[int]:
    """Return addresses of the ``blr`` instructions of ``blocks`` ({pc: words}) inside ``ranges``."""
    out = set()
    for pc, words in blocks.items():
        if any(lo <= pc < hi for lo, hi in ranges):
            for k, w in enumerate(words):
                if w & 0xFFFFFC1F == 0xD63F0000:  # BLR Xn
                    out.add(pc + 4 * k + 4)
    return out

"""From counted blocks and their scheduled cycles to a device latency.

- **Cycles**: each block's ``llvm-mca`` cycles per execution x its executions per invoke,
  for the hot blocks (those holding ``HOT_FRACTION`` of the instructions); the cold rest
  at the hot blocks' average IPC. Spin-wait blocks (``yield``/``wfe``) are not work:
  how often a thread spins under qemu says nothing about the device.
- **Threads**: qemu-user gives every guest thread its own CPU index, so every count
  belongs to a thread: the work the runtime's thread pool gave each thread, serial parts
  on the calling thread included. ``threads_cycles`` gives each thread's total; its
  busiest thread is the critical path when the parallel jobs could not be cut per thread.
  When they could (LiteRT + XNNPACK, see ``threads``), the critical path runs through
  them: per operator, the calling thread's serial work plus each job's busiest part.
- **Memory**: ``llvm-mca`` assumes every load hits the L1 cache. Where a layer moves
  more bytes than the core's caches hold (the cost model's bytes per layer, the target's
  L2 + L3), the bytes beyond are streamed from DRAM at the cost model's bandwidth; that
  time is added (the cost model's own spill term with its prior, nothing fitted).
- **Clock**: cycles / ``clock_ghz``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

HOT_FRACTION = 0.999
MAX_HOT_BLOCKS = 4000


@dataclass
class BlockInfo:
    n: int  # instructions
    mix: Counter  # class -> instructions of that class in the block
    wait: bool = False


def hot_blocks(instr_by_pc: dict[int, float], fraction: float = HOT_FRACTION,
               limit: int = MAX_HOT_BLOCKS) -> list[int]:
    """The blocks holding ``fraction`` of the executed instructions, most first."""
    total = sum(instr_by_pc.values())
    out, acc = [], 0.0
    for pc, v in sorted(instr_by_pc.items(), key=lambda kv: -kv[1]):
        if acc >= fraction * total or len(out) >= limit:
            break
        out.append(pc)
        acc += v
    return out


def hot_ipc(hot: list[dict], cycles: list[float]) -> float:
    """Instructions per cycle of the hot blocks (all threads): the rate of the cold rest."""
    hi = sum(sum(b["counts"].values()) * len(b["lines"]) for b in hot)
    hc = sum(sum(b["counts"].values()) * c for b, c in zip(hot, cycles))
    return hi / hc if hc else 1.0


def threads_cycles(prof: dict, cycles: list[float]) -> dict:
    """Cycles per invoke of a profile, given each hot block's cycles per execution (``cycles[i]``
    for ``prof["hot"][i]``): per thread (CPU index), total and the critical path (busiest thread).
    The cold blocks run at the hot blocks' instruction-weighted IPC."""
    threads: dict[str, dict] = {}

    def slot(cpu: str) -> dict:
        return threads.setdefault(cpu, {"instructions": 0.0, "cycles": 0.0, "wait_instructions": 0.0})

    for b, c in zip(prof["hot"], cycles):
        for cpu, n in b["counts"].items():
            slot(cpu)["instructions"] += n * len(b["lines"])
            slot(cpu)["cycles"] += n * c
    ipc = hot_ipc(prof["hot"], cycles)
    for cpu, n in prof.get("cold", {}).items():
        slot(cpu)["instructions"] += n
        slot(cpu)["cycles"] += n / ipc
    for cpu, n in prof.get("wait", {}).items():
        slot(cpu)["wait_instructions"] = n
    threads = dict(sorted(threads.items(), key=lambda kv: int(kv[0])))
    return {"per_thread": threads, "critical_cycles": max((t["cycles"] for t in threads.values()), default=0.0),
            "total_cycles": sum(t["cycles"] for t in threads.values())}


def spin_blocks(info: dict[int, BlockInfo], window: int = 256, max_len: int = 8) -> set[int]:
    """Blocks of the spin-wait loops: a block with ``yield``/``wfe`` and the short blocks just
    before it (the loop's load-compare-branch), which run as often as the emulator makes them."""
    waits = sorted(pc for pc, b in info.items() if b.wait)
    out = set(waits)
    for pc, b in info.items():
        if b.n <= max_len and not b.mix.get("store") and any(0 <= y - pc <= window for y in waits):
            out.add(pc)
    return out


def mix_of(counts: dict[tuple[int, int], float], info: dict[int, BlockInfo]) -> Counter:
    """Executed instructions per mix class (spin-waits excluded)."""
    mix: Counter = Counter()
    for (_, pc), n in counts.items():
        if not info[pc].wait:
            for k, v in info[pc].mix.items():
                mix[k] += n * v
    return mix


def memory_seconds(spill_bytes: float, bandwidth_gbs: float) -> float:
    return spill_bytes / (bandwidth_gbs * 1e9) if bandwidth_gbs > 0 else 0.0

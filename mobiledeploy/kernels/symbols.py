"""Name the function each counted block belongs to: the per-kernel breakdown.

The runtimes' aarch64 libraries keep their static symbol tables (XNNPACK's microkernels
are named after their shape, ISA and the core they are tuned for), so a block's guest
address maps to a function: through the guest's mapping of the library (start, file
offset), the library's executable segment (``llvm-readelf -l``) and its symbols
(``llvm-nm``). A stripped library gives no names; its blocks are grouped as ``?``.
"""

from __future__ import annotations

import bisect
import re
import subprocess
from functools import cache
from pathlib import Path

from mobiledeploy.kernels.disasm import llvm_bin

_LOAD = re.compile(r"^\s*LOAD\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+0x[0-9a-f]+\s+0x[0-9a-f]+\s+0x[0-9a-f]+\s+(\S.*?)\s+0x",
                   re.M)
_SYM = re.compile(r"^([0-9a-f]+) [tTwW] (.+)$", re.M)


@cache
def _symbols(path: str) -> tuple[list[int], list[str]]:
    out = subprocess.run([llvm_bin("llvm-nm"), "-C", "--no-sort", path], capture_output=True, text=True, timeout=300)
    pairs = sorted((int(a, 16), n) for a, n in _SYM.findall(out.stdout))
    return [a for a, _ in pairs], [n for _, n in pairs]


@cache
def _segments(path: str) -> list[tuple[int, int]]:
    """(file offset, virtual address) of each executable PT_LOAD segment."""
    out = subprocess.run([llvm_bin("llvm-readelf"), "-lW", path], capture_output=True, text=True, timeout=60)
    return [(int(o, 16), int(v, 16)) for o, v, flags in _LOAD.findall(out.stdout) if "E" in flags]


def function_of(pc: int, maps: list) -> str:
    """The function holding guest address ``pc``; ``maps``: [start, end, file offset, path] rows."""
    for lo, hi, off, path in maps:
        if lo <= pc < hi:
            if not Path(path).is_file():
                return "?"
            segs = _segments(path)
            seg = next(((o, v) for o, v in segs if o & ~0xFFFF == off & ~0xFFFF), None)
            if seg is None:
                return "?"
            vaddr = pc - lo + off + (seg[1] - seg[0])
            addrs, names = _symbols(path)
            i = bisect.bisect_right(addrs, vaddr) - 1
            return names[i] if i >= 0 else "?"
    return "?"


def address_of(name: str, maps: list) -> int | None:
    """The guest address of function ``name`` (the inverse of ``function_of``); None when no mapped
    library defines it."""
    found = functions_where(lambda n: n == name, maps)
    return found[name][0] if name in found else None


def functions_where(match, maps: list) -> dict[str, tuple[int, int]]:
    """``{name: (start, end)}`` guest addresses of the functions whose name satisfies ``match``, in
    the mapped libraries (``end``: the next symbol's address)."""
    out: dict[str, tuple[int, int]] = {}
    for lo, hi, off, path in maps:
        if not Path(path).is_file():
            continue
        addrs, names = _symbols(path)
        for i, name in enumerate(names):
            if name in out or not match(name):
                continue
            nxt = next((a for a in addrs[i + 1:] if a > addrs[i]), addrs[i] + 4)
            for o, v in _segments(path):
                pc = addrs[i] - (v - o) - off + lo
                if o & ~0xFFFF == off & ~0xFFFF and lo <= pc < hi:
                    out[name] = (pc, pc + nxt - addrs[i])
                    break
    return out


def short(name: str, width: int = 96) -> str:
    """A demangled name without its argument list, at most ``width`` characters."""
    base = name.replace("(anonymous namespace)", "{anonymous}").split("(", 1)[0]
    return base if len(base) <= width else base[: width - 3] + "..."

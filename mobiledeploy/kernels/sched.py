"""Cycles per execution of each block, from ``llvm-mca``'s scheduling model of a core.

All uncached blocks go to one ``llvm-mca`` run, one code region each (``# LLVM-MCA-BEGIN``);
a region's steady state over 100 iterations, ``Total Cycles / Iterations``, is the block's
cycles per execution (hot blocks are loop bodies, for which this is the right measure).
Results are cached per scheduling model and block text (``sched-<mcpu>.json``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tempfile
from functools import cache
from pathlib import Path

from mobiledeploy.errors import RuntimeFailure, UsageError
from mobiledeploy.kernels.disasm import llvm_bin

ITERATIONS = 100
# what llvm-mca assembles: every feature, so that a block of any CPU model parses
MCA_ATTRS = "+dotprod,+i8mm,+fullfp16,+fp16fml,+bf16,+rcpc,+lse,+crc,+aes,+sha2"
_REGION = re.compile(r"^\[(\d+)\] Code Region - (\S+)", re.M)
_FIELD = re.compile(r"^(Iterations|Instructions|Total Cycles):\s+(\d+)", re.M)


@cache
def mca_cpus() -> tuple[str, ...]:
    """The ``-mcpu`` names llvm-mca knows for aarch64."""
    out = subprocess.run([llvm_bin("llvm-mca"), "-mtriple=aarch64", "-mcpu=help"], capture_output=True,
                         text=True, timeout=60)
    text = out.stdout + out.stderr
    part = text.split("Available CPUs for this target:", 1)[-1].split("Available features", 1)[0]
    return tuple(ln.split()[0] for ln in part.splitlines() if ln.strip() and "Select the" in ln)


def check_mcpu(mcpu: str) -> None:
    if mcpu not in mca_cpus():
        raise UsageError(f"llvm-mca does not know -mcpu {mcpu!r} ([kernels] sched); choose from "
                         f"{', '.join(c for c in mca_cpus() if c != 'generic')}")


def block_key(mcpu: str, lines: list[str]) -> str:
    return hashlib.sha1((mcpu + "\n" + "\n".join(lines)).encode()).hexdigest()[:20]


def _asm(lines: list[str]) -> list[str]:
    # undecodable words: a nop keeps the count (llvm-mca cannot schedule raw words)
    return ["nop" if ln.startswith(".inst") else ln for ln in lines]


def parse_mca(text: str) -> dict[str, float]:
    """{region name: cycles per iteration} from llvm-mca's summary output."""
    out: dict[str, float] = {}
    heads = list(_REGION.finditer(text))
    for i, h in enumerate(heads):
        body = text[h.end(): heads[i + 1].start() if i + 1 < len(heads) else len(text)]
        f = dict(_FIELD.findall(body))
        if "Total Cycles" in f and int(f.get("Iterations", 0)) > 0:
            out[h.group(2)] = int(f["Total Cycles"]) / int(f["Iterations"])
    return out


def _run_mca(mcpu: str, regions: dict[str, list[str]]) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".s", delete=False) as f:
        for name, lines in regions.items():
            f.write(f"# LLVM-MCA-BEGIN {name}\n" + "\n".join(_asm(lines)) + "\n# LLVM-MCA-END\n")
    try:
        proc = subprocess.run([llvm_bin("llvm-mca"), "-mtriple=aarch64", f"-mcpu={mcpu}", f"-mattr={MCA_ATTRS}",
                               f"-iterations={ITERATIONS}", "-all-views=false", "-summary-view",
                               "--skip-unsupported-instructions=any", f.name],
                              capture_output=True, text=True, timeout=1800)
    finally:
        os.unlink(f.name)
    if proc.returncode != 0:
        raise RuntimeFailure(f"llvm-mca -mcpu={mcpu} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1][:300]}")
    return parse_mca(proc.stdout)


def block_cycles(mcpu: str, blocks: dict[int, list[str]], cache_dir: str | os.PathLike | None) -> dict[int, float]:
    """{pc: cycles per execution} of ``blocks`` ({pc: assembly lines}) on ``mcpu``'s model."""
    check_mcpu(mcpu)
    path = Path(cache_dir) / f"sched-{mcpu}.json" if cache_dir else None
    known: dict[str, float] = {}
    if path and path.is_file():
        try:
            known = json.loads(path.read_text())
        except ValueError:
            known = {}
    keys = {pc: block_key(mcpu, lines) for pc, lines in blocks.items()}
    todo = {keys[pc]: lines for pc, lines in blocks.items() if keys[pc] not in known}
    if todo:
        got = _run_mca(mcpu, todo)
        for k, lines in todo.items():  # a region llvm-mca dropped: one cycle per instruction
            known[k] = got.get(k, float(len(lines)))
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".part")
            tmp.write_text(json.dumps(known))
            tmp.replace(path)
    return {pc: known[k] for pc, k in keys.items()}

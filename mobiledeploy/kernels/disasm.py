"""Decode the counted blocks' instructions with LLVM's disassembler, and classify them.

qemu 7.2's own disassembler prints the dot-product and i8mm instructions as ``.byte``;
``llvm-mc --disassemble`` (LLVM 19) decodes every instruction the runtimes use. The
words come from qemu's ``in_asm`` log (one 32-bit word per instruction).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from mobiledeploy.errors import RuntimeFailure, UsageError

LLVM_VERSION = 19
LLVM_ENV = "MOBILEDEPLOY_LLVM_BIN"
LLVM_HINT = (f"LLVM {LLVM_VERSION} (llvm-mc, llvm-mca) not found: run `make arm-env` "
             f"(installs Debian's llvm-{LLVM_VERSION}) or set ${LLVM_ENV}")
# decode everything the runtimes may use (the CPU model decides what they do use)
DECODE_ATTRS = "+dotprod,+i8mm,+fullfp16,+fp16fml,+bf16,+sve,+sve2,+sme,+rcpc,+lse,+crc,+aes,+sha2"
_ENCODING = re.compile(r"^\s*(\S.*?)\s*// encoding: \[([^\]]*)\]")

# instruction classes of the mix: (name, mnemonic test)
MIX_CLASSES = ("dot", "i8mm", "fp32_fma", "fp16_fma", "int_mla", "load", "store", "branch", "other")
_DOT = {"sdot", "udot", "usdot", "sudot"}
_I8MM = {"smmla", "ummla", "usmmla", "bfmmla"}
_FMA = {"fmla", "fmls", "fmadd", "fmsub", "fnmadd", "fnmsub"}
_INT_MLA = {"smlal", "smlal2", "umlal", "umlal2", "mla", "sadalp", "uadalp", "smull", "smull2", "umull", "umull2"}
_BRANCH = re.compile(r"^(b|bl|br|blr|ret|cbz|cbnz|tbz|tbnz|b\..*)$")


def llvm_bin(tool: str) -> str:
    """Path of an LLVM 19 tool; ``UsageError`` naming ``make arm-env`` when it is absent."""
    candidates = [os.environ.get(LLVM_ENV, ""), f"/usr/lib/llvm-{LLVM_VERSION}/bin"]
    for d in candidates:
        if d and os.access(Path(d) / tool, os.X_OK):
            return str(Path(d) / tool)
    found = shutil.which(f"{tool}-{LLVM_VERSION}")
    if found:
        return found
    raise UsageError(LLVM_HINT)


def word_bytes(word: int) -> str:
    return " ".join(f"0x{b:02x}" for b in word.to_bytes(4, "little"))


def disassemble(words) -> dict[int, str]:
    """{word: assembly text}; a word LLVM cannot decode becomes ``.inst 0x...``."""
    words = sorted(set(words))
    out: dict[int, str] = {}
    if not words:
        return out
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("".join(word_bytes(w) + "\n" for w in words))
    try:
        proc = subprocess.run([llvm_bin("llvm-mc"), "--disassemble", "-triple=aarch64", f"-mattr={DECODE_ATTRS}",
                               "--show-encoding", f.name], capture_output=True, text=True, timeout=600)
    finally:
        os.unlink(f.name)
    if proc.returncode not in (0, 1) or not proc.stdout:
        raise RuntimeFailure(f"llvm-mc --disassemble failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    for line in proc.stdout.splitlines():
        m = _ENCODING.match(line)
        if m:
            enc = [int(b, 16) for b in m.group(2).split(",")]
            if len(enc) == 4:
                out[int.from_bytes(bytes(enc), "little")] = " ".join(m.group(1).split())
    for w in words:
        out.setdefault(w, f".inst 0x{w:08x}")
    return out


def classify(text: str) -> str:
    """The mix class of one instruction's assembly text."""
    mnem = text.split(None, 1)[0].lower() if text else ""
    ops = text[len(mnem):]
    if mnem in _DOT:
        return "dot"
    if mnem in _I8MM:
        return "i8mm"
    if mnem in _FMA:
        return "fp16_fma" if (".8h" in ops or ".4h" in ops or re.search(r"\bh\d", ops)) else "fp32_fma"
    if mnem in _INT_MLA:
        return "int_mla"
    if mnem.startswith("ld") or mnem.startswith("prfm"):
        return "load" if mnem.startswith("ld") else "other"
    if mnem.startswith("st"):
        return "store"
    if _BRANCH.match(mnem):
        return "branch"
    return "other"


def is_wait(texts: list[str]) -> bool:
    """A spin-wait block (``yield``/``wfe``): time that depends on the emulator, never counted as work."""
    return any(t.split(None, 1)[0] in ("yield", "wfe", "wfi") for t in texts if t)

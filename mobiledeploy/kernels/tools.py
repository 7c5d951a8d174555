"""What the installed qemu and llvm-mca know (empty when a tool is absent): the target loader's check."""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import cache

from mobiledeploy.errors import UsageError
from mobiledeploy.kernels import sched

QEMU = "qemu-aarch64-static"


@cache
def qemu_cpus(qemu: str) -> tuple[str, ...]:
    """The ``-cpu`` models of the qemu binary ``qemu``."""
    out = subprocess.run([qemu, "-cpu", "help"], capture_output=True, text=True, timeout=60).stdout
    return tuple(ln.strip() for ln in out.splitlines()[1:] if ln.strip())


def known_qemu_cpus() -> tuple[str, ...]:
    found = shutil.which(QEMU)
    return qemu_cpus(found) if found and os.access(found, os.X_OK) else ()


def known_mca_cpus() -> tuple[str, ...]:
    try:
        return sched.mca_cpus()
    except UsageError:  # LLVM 19 not installed: checked when the estimate runs
        return ()

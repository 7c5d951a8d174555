"""What the installed qemu knows: its ``-cpu`` models, checked when a kernels estimate runs."""

from __future__ import annotations

import subprocess
from functools import cache


@cache
def qemu_cpus(qemu: str) -> tuple[str, ...]:
    """The ``-cpu`` models of the qemu binary ``qemu``."""
    out = subprocess.run([qemu, "-cpu", "help"], capture_output=True, text=True, timeout=60).stdout
    return tuple(ln.strip() for ln in out.splitlines()[1:] if ln.strip())

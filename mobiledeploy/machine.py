"""The machine a number was measured on: CPU model and flags, cores, load, memory (cheap: no
runtime imports). Every fact about the host is read here and nowhere else."""

from __future__ import annotations

import os
import platform
import socket
import sys
from pathlib import Path

from mobiledeploy.lockcheck import matches_lock


def cpu_model() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return cpu


def usable_cores() -> list[int]:
    """The cores this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def host() -> dict:
    """CPU, cores, platform, Python, and whether the converter/runtime versions match requirements.lock
    (True/False; None for an install without a lock)."""
    return {"cpu": cpu_model(), "cores": len(usable_cores()), "logical_cpus": os.cpu_count(),
            "platform": platform.platform(), "python": platform.python_version(),
            "versions_match_lock": matches_lock()}


def loadavg() -> list[float] | None:
    """The load average now (1, 5, 15 minutes), rounded to 0.01; None where there is none."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # not available on this platform
        return None


def conditions() -> dict:
    """Host facts plus the load average now (1, 5, 15 minutes), as every JSON output records them."""
    return {**host(), "loadavg_1_5_15": loadavg()}


def node() -> dict:
    """This machine in a sweep row: host name and processor (``platform.processor()`` or the architecture)."""
    return {"host": socket.gethostname(), "cpu": platform.processor() or platform.machine()}


def arch() -> str:
    """The machine architecture as the OS names it (``x86_64``, ``aarch64``, ``AMD64``...)."""
    return platform.machine()


def python_platform() -> dict:
    """Python version and OS/architecture, as the export manifest records them."""
    return {"python": platform.python_version(), "platform": f"{platform.system()} {platform.machine()}"}


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags (x86 ``flags`` line of /proc/cpuinfo); empty where there is none."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def possible_cpus() -> list[int]:
    """The kernel's possible CPU numbers (/sys/devices/system/cpu/possible)."""
    try:
        text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    except OSError:
        return list(range(os.cpu_count() or 1))
    cpus: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


def auxv_hwcaps() -> list[int] | None:
    """[AT_HWCAP, AT_HWCAP2] of this process on aarch64 Linux: the ISA features the runtimes'
    CPU detection reads (under qemu, what the emulated CPU model offers); None elsewhere."""
    if sys.platform != "linux" or platform.machine() != "aarch64":
        return None
    import ctypes

    libc = ctypes.CDLL(None)
    libc.getauxval.restype, libc.getauxval.argtypes = ctypes.c_ulong, [ctypes.c_ulong]
    return [int(libc.getauxval(16)), int(libc.getauxval(26))]  # AT_HWCAP, AT_HWCAP2


def available_memory() -> int:
    """Bytes of physical memory on this machine."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not Linux
        return 1 << 40

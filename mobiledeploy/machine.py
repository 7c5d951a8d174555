"""The machine a number was measured on: CPU model, cores, load (cheap: no runtime imports)."""

from __future__ import annotations

import os
import platform


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
    from mobiledeploy.lockcheck import matches_lock

    return {"cpu": cpu_model(), "cores": len(usable_cores()), "logical_cpus": os.cpu_count(),
            "platform": platform.platform(), "python": platform.python_version(),
            "versions_match_lock": matches_lock()}


def conditions() -> dict:
    """Host facts plus the load average now (1, 5, 15 minutes), as every JSON output records them."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # not available on this platform
        load = None
    return {**host(), "loadavg_1_5_15": load}


def available_memory() -> int:
    """Bytes of physical memory on this machine."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not Linux
        return 1 << 40

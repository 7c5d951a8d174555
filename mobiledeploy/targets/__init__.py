"""Mobile CPU target profiles: one TOML data file per target, shipped in the package.

A profile says how the *host* should run a model to mimic a device (``[run]``: threads,
pinned host cores, runtime options) and records the device's own figures with their
sources (``[device]``, ``[device.sources]``); ``[cost_model]`` belongs to ``estimate`` and
is passed through untouched, ``emulate``/``emulate_note`` and ``[kernels]`` to
``--emulate`` and ``estimate --method kernels``. The schema is in docs/bench.md,
docs/emulate.md and docs/kernels.md. What the host measures under a profile is the host's
latency with the device's settings, never the device's latency. Unknown top-level keys or
tables are an error, so a typo never silently does nothing.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from mobiledeploy.errors import UsageError
from mobiledeploy.machine import usable_cores
from mobiledeploy.runtimes import ORT_OPT_LEVELS
from mobiledeploy.runtimes.emulate import EMULATED_CPUS

DEFAULT_TARGET = "host"
AFFINITY_POLICIES = ("none", "first")

_TOP_KEYS = {"name", "description", "run", "device", "cost_model", "emulate", "emulate_note", "kernels"}
_KERNELS_KEYS = {"cpu", "midr", "sched", "clock_ghz", "note"}
_RUN_KEYS = {"threads", "affinity", "xnnpack", "ort_opt_level"}
_DEVICE_NUMBERS = ("cores", "clock_ghz", "fp32_flops_per_cycle", "int8_ops_per_cycle", "mem_bandwidth_gbs",
                   "l2_kb", "l3_kb")


@dataclass(frozen=True)
class Target:
    name: str
    description: str = ""
    threads: int | None = None  # None = all host cores
    affinity: str | tuple[int, ...] = "none"
    xnnpack: bool = True
    ort_opt_level: str = "all"
    device: dict = field(default_factory=dict)
    cost_model: dict = field(default_factory=dict)
    path: Path | None = None
    emulate: str | None = None  # the emulated CPU model closest to the device's core (--emulate target)
    emulate_note: str = ""  # what differs between that model and the device's core
    kernels: dict = field(default_factory=dict)  # [kernels]: cpu, midr, sched, clock_ghz (estimate --method kernels)

    @property
    def label(self) -> str:
        """How every number measured under this profile is labelled."""
        return f"host latency, {self.name} settings"

    def to_json(self) -> dict:
        return {"name": self.name, "description": self.description, "threads": self.threads,
                "affinity": list(self.affinity) if isinstance(self.affinity, tuple) else self.affinity,
                "xnnpack": self.xnnpack, "ort_opt_level": self.ort_opt_level,
                "device": self.device, "cost_model": self.cost_model,
                "emulate": self.emulate, "emulate_note": self.emulate_note or None,
                "kernels": ({**self.kernels, "midr": f"0x{self.kernels['midr']:08x}"} if self.kernels else None),
                "path": str(self.path) if self.path else None}


def _shipped_dir() -> Path:
    return Path(str(resources.files("mobiledeploy") / "targets"))


def list_targets() -> list[Target]:
    """Every shipped profile, host first, then by name."""
    names = sorted(p.stem for p in _shipped_dir().glob("*.toml"))
    names.sort(key=lambda n: (n != DEFAULT_TARGET, n))
    return [load_target(n) for n in names]


def load_target(name: str | None = None, *, file: str | os.PathLike | None = None) -> Target:
    """A shipped profile by ``name`` (default "host"), or the profile in ``file``."""
    if file is not None:
        if name is not None:
            raise UsageError("give either --target or --target-file, not both")
        return _parse(Path(file), flag="--target-file")
    name = name or DEFAULT_TARGET
    path = _shipped_dir() / f"{name}.toml"
    if not path.is_file() or "/" in name or name.startswith("."):
        known = ", ".join(sorted(p.stem for p in _shipped_dir().glob("*.toml")))
        raise UsageError(f"unknown target {name!r} (--target); choose from {known}, "
                         f"or give your own profile with --target-file")
    return _parse(path, flag="--target")


def _parse(path: Path, *, flag: str) -> Target:
    where = f"target profile {str(path)!r} ({flag})"
    try:
        from mobiledeploy.guards import regular_file

        if path.exists():
            regular_file(path, what="target profile")  # no FIFO, device or empty file
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{where} not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read {where}: {getattr(e, 'strerror', None) or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{where} is not valid TOML: {e}") from None
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise UsageError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(_TOP_KEYS))}")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise UsageError(f"{where}: 'name' must be a non-empty string")
    run = _table(data, "run", where)
    device = _table(data, "device", where)
    cost_model = _table(data, "cost_model", where)
    bad = sorted(set(run) - _RUN_KEYS)
    if bad:
        raise UsageError(f"{where}: unknown key [run].{bad[0]}; allowed: {', '.join(sorted(_RUN_KEYS))}")
    threads = run.get("threads")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise UsageError(f"{where}: [run].threads must be a positive integer, got {threads!r}")
    affinity = parse_affinity(run.get("affinity", "none"), where=f"{where}: [run].affinity")
    xnnpack = run.get("xnnpack", True)
    if not isinstance(xnnpack, bool):
        raise UsageError(f"{where}: [run].xnnpack must be true or false, got {xnnpack!r}")
    level = run.get("ort_opt_level", "all")
    if level not in ORT_OPT_LEVELS:
        raise UsageError(f"{where}: [run].ort_opt_level {level!r} unknown; choose from {', '.join(ORT_OPT_LEVELS)}")
    for key in _DEVICE_NUMBERS:
        v = device.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0):
            raise UsageError(f"{where}: [device].{key} must be a positive number, got {v!r}")
    emulate = data.get("emulate")
    if emulate is not None:
        if emulate not in EMULATED_CPUS:
            raise UsageError(f"{where}: emulate {emulate!r} is not an emulated CPU model; "
                             f"choose from {', '.join(EMULATED_CPUS)}")
    kernels = _kernels(_table(data, "kernels", where), where) if "kernels" in data else {}
    return Target(name=name, description=str(data.get("description", "")), threads=threads,
                  affinity=affinity, xnnpack=xnnpack, ort_opt_level=level, device=device,
                  cost_model=cost_model, path=path, emulate=emulate,
                  emulate_note=str(data.get("emulate_note", "")), kernels=kernels)


def _kernels(table: dict, where: str) -> dict:
    """The validated [kernels] table: its keys, types and ranges. Whether qemu knows ``cpu`` and
    llvm-mca ``sched`` is checked when a kernels estimate runs (``mobiledeploy.kernels``), so that
    loading a target runs no tool."""
    bad = sorted(set(table) - _KERNELS_KEYS)
    if bad:
        raise UsageError(f"{where}: unknown key [kernels].{bad[0]}; allowed: {', '.join(sorted(_KERNELS_KEYS))}")
    missing = [k for k in ("cpu", "midr", "sched", "clock_ghz") if k not in table]
    if missing:
        raise UsageError(f"{where}: [kernels] needs {', '.join(missing)} (cpu, midr, sched, clock_ghz)")
    for key in ("cpu", "sched"):
        if not isinstance(table[key], str) or not table[key]:
            raise UsageError(f"{where}: [kernels].{key} must be a non-empty string, got {table[key]!r}")
    midr = table["midr"]
    if isinstance(midr, str):
        try:
            midr = int(midr, 16)
        except ValueError:
            midr = None
    if isinstance(midr, bool) or not isinstance(midr, int) or not 0 < midr < 1 << 32:
        raise UsageError(f"{where}: [kernels].midr must be a 32-bit MIDR such as 0x414fd0b1, got {table['midr']!r}")
    clock = table["clock_ghz"]
    if isinstance(clock, bool) or not isinstance(clock, (int, float)) or not 0 < clock < 10:
        raise UsageError(f"{where}: [kernels].clock_ghz must be a clock in GHz, got {clock!r}")
    return {"cpu": table["cpu"], "midr": midr, "sched": table["sched"], "clock_ghz": float(clock),
            "note": str(table.get("note", ""))}


def _table(data: dict, key: str, where: str) -> dict:
    v = data.get(key, {})
    if not isinstance(v, dict):
        raise UsageError(f"{where}: [{key}] must be a table")
    return v


def parse_affinity(value: Any, *, where: str = "--affinity") -> str | tuple[int, ...]:
    """"none", "first", a list of core ids, or (from the command line) "0,1"."""
    if isinstance(value, str) and value in AFFINITY_POLICIES:
        return value
    if isinstance(value, str):
        try:
            value = [int(v) for v in value.split(",") if v.strip()]
        except ValueError:
            value = None
    if isinstance(value, (list, tuple)) and value and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        return tuple(dict.fromkeys(value))
    raise UsageError(f"{where}: expected 'none', 'first' or a list of core ids such as 0,1; got {value!r}")


def host_cores() -> list[int]:
    """The cores this process may run on."""
    return usable_cores()


@dataclass(frozen=True)
class Placement:
    """What a profile becomes on this host: thread count, cores to pin, and notes."""

    threads: int
    cores: tuple[int, ...] | None  # None = no pinning
    notes: tuple[str, ...] = ()


def place(threads: int | None, affinity: str | tuple[int, ...], *, name: str = "profile") -> Placement:
    """Map a profile's threads/affinity onto the host's cores, pinning what exists."""
    avail = host_cores()
    n = threads or len(avail)
    notes = []
    if n > len(avail):
        notes.append(f"{name} asks for {n} threads; this host has {len(avail)} usable cores, "
                     f"so {n} threads share them")
    if affinity == "none":
        cores = None
    elif affinity == "first":
        cores = tuple(avail[:n])
    else:
        cores = tuple(c for c in affinity if c in avail)
        missing = [c for c in affinity if c not in avail]
        if not cores:
            raise UsageError(f"affinity cores {list(affinity)} do not exist on this host "
                             f"(usable cores: {avail}); fix --affinity or the profile")
        if missing:
            notes.append(f"cores {missing} do not exist on this host; pinned {list(cores)}")
    return Placement(threads=n, cores=cores, notes=tuple(notes))

"""Latency harness: each model measured in its own child process, honestly labelled.

``bench_model(path, settings)`` starts ``python -m mobiledeploy.runtimes.child``, which pins the
profile's cores, loads the model on LiteRT or ONNX Runtime, times ``invoke()`` and
reports JSON. A crash, a hang past the timeout or a bad file becomes that model's
``status="error"`` row; ``bench_model`` never raises for a per-model failure.

Every number is the host's latency under a target's settings ("host latency, pixel4-big
settings"), never a phone's latency. With ``emulate`` set, the child runs the aarch64
runtimes under qemu on that CPU model: its times are labelled "emulated, not a latency".
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from mobiledeploy import targets as tg
from mobiledeploy.bench.request import DEFAULT_TIMEOUT_S
from mobiledeploy.errors import MobiledeployError, UsageError
from mobiledeploy.guards import check_model_file
from mobiledeploy.machine import conditions, host
from mobiledeploy.models.artifacts import resolve_models
from mobiledeploy.models.inspect import readable
from mobiledeploy.progress import OnProgress, emit
from mobiledeploy.runtimes import RUNTIMES, runtime_for
from mobiledeploy.runtimes.child import run_child
from mobiledeploy.runtimes.emulate import EMULATED_LABEL, HwCaps, cpu

SCHEMA_VERSION = 1
MODEL_FORMATS = ("tflite", "onnx")
PRECISIONS = ("fp32", "fp16", "dynamic", "int8", "unknown")


@dataclass(frozen=True)
class BenchSettings:
    """How one model is run and timed (see ``runtimes.timing.run_plan`` for runs/min_time_s)."""

    threads: int | None = None  # None = all host cores
    affinity: tuple[int, ...] | None = None  # host cores to pin; None = no pinning
    xnnpack: bool = True
    ort_opt_level: str = "all"
    warmup: int = 10
    runs: int | None = None
    min_time_s: float | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()
    target: str = "host"
    notes: tuple[str, ...] = ()
    seed: int = 0
    emulate: str | None = None  # an emulated CPU model (runtimes.emulate): run under qemu

    def __post_init__(self):
        checks = [(self.warmup >= 0, "--warmup must be >= 0"),
                  (self.runs is None or self.runs >= 1, "--runs must be >= 1"),
                  (self.min_time_s is None or 0 < self.min_time_s < math.inf, "--min-time must be finite and > 0"),
                  (0 < self.timeout_s < math.inf, "--timeout must be finite and > 0"),
                  (self.threads is None or self.threads >= 1, "--threads must be >= 1"),
                  (self.ort_opt_level in tg.ORT_OPT_LEVELS,
                   f"--ort-opt-level must be one of {', '.join(tg.ORT_OPT_LEVELS)}")]
        for ok, msg in checks:
            if not ok:
                raise UsageError(msg)

    @property
    def label(self) -> str:
        return label_for(self.target, self.emulate)

    def to_json(self) -> dict:
        return {"target": self.target, "threads": self.threads,
                "affinity": list(self.affinity) if self.affinity else None, "xnnpack": self.xnnpack,
                "ort_opt_level": self.ort_opt_level, "warmup": self.warmup, "runs": self.runs,
                "min_time_s": self.min_time_s, "timeout_s": self.timeout_s,
                "shapes": {k: list(v) for k, v in self.shapes}, "notes": list(self.notes),
                "emulate": self.emulate}


def label_for(target: str, emulate: str | None = None) -> str:
    """How bench's timings are labelled: host latency, or emulated time (never a latency)."""
    if emulate:
        return f"{EMULATED_LABEL}: {emulate} under qemu, {target} settings"
    return f"host latency, {target} settings"


def settings_for_target(target: tg.Target, **overrides) -> BenchSettings:
    """A profile's settings on this host; ``overrides`` (None = keep) win over the profile.

    ``threads`` and ``affinity`` ("none", "first", core ids) are placed on the host's
    cores: pin what exists, keep the thread count, and note the difference.
    """
    overrides = {k: v for k, v in overrides.items() if v is not None}
    threads = overrides.pop("threads", target.threads)
    affinity = overrides.pop("affinity", target.affinity)
    if isinstance(affinity, (str, list)):
        affinity = tg.parse_affinity(affinity)
    placement = tg.place(threads, affinity, name=f"profile {target.name}")
    shapes = overrides.pop("shapes", ())
    if isinstance(shapes, dict):
        shapes = tuple((k, tuple(v)) for k, v in shapes.items())
    return BenchSettings(threads=placement.threads, affinity=placement.cores,
                         xnnpack=overrides.pop("xnnpack", target.xnnpack),
                         ort_opt_level=overrides.pop("ort_opt_level", target.ort_opt_level),
                         shapes=tuple(shapes), target=target.name, notes=placement.notes, **overrides)


@dataclass(frozen=True)
class BenchResult:
    model: str
    format: str
    runtime: str
    precision: str
    status: str  # "ok" | "error"
    error: str | None
    threads: int | None
    init_ms: float | None = None
    first_ms: float | None = None
    runs: int = 0
    latency_ms: dict = field(default_factory=dict)  # mean, std, min, p50, p90, p99, max
    samples_ms: tuple[float, ...] = ()
    throughput_ips: float | None = None
    peak_rss_mb: float | None = None
    size_bytes: int | None = None
    target: str = "host"
    cores: tuple[int, ...] | None = None
    inputs: tuple[dict, ...] = ()
    usage_error: bool = False  # the failure was the user's input (e.g. a missing --shape)
    emulate: str | None = None  # the emulated CPU model it ran on (None: the host)
    hwcaps: dict | None = None  # under emulation: the ISA features the runtime saw (HwCaps.to_json)
    degraded: dict | None = None  # the export's mark from its manifest (models.artifacts.ModelRef.degraded)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self, *, samples: bool = False) -> dict:
        d = {"model": self.model, "format": self.format, "runtime": self.runtime, "precision": self.precision,
             "status": self.status, "error": self.error, "threads": self.threads, "init_ms": self.init_ms,
             "first_ms": self.first_ms, "runs": self.runs, "latency_ms": dict(self.latency_ms) or None,
             "throughput_ips": self.throughput_ips, "peak_rss_mb": self.peak_rss_mb,
             "size_bytes": self.size_bytes, "label": label_for(self.target, self.emulate),
             "cores": list(self.cores) if self.cores else None, "inputs": list(self.inputs),
             "degraded": self.degraded}
        if self.emulate:
            d |= {"emulate": self.emulate, "hwcaps": self.hwcaps}
        if samples:
            d["samples_ms"] = list(self.samples_ms)
        return d


def latency_stats(samples_ms: Iterable[float]) -> dict:
    a = np.asarray(list(samples_ms), dtype=np.float64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0, "min": float(a.min()),
            "p50": float(p50), "p90": float(p90), "p99": float(p99), "max": float(a.max())}


def bench_model(path: str | os.PathLike, settings: BenchSettings, *, precision: str | None = None,
                degraded: dict | None = None) -> BenchResult:
    """Measure one model in a child process. Never raises for a per-model failure. ``degraded``: the
    export's mark, carried into the result."""
    p = Path(path)
    base = dict(model=str(path), format="unknown", runtime="-", precision=precision or "unknown",
                threads=settings.threads, target=settings.target, cores=settings.affinity,
                emulate=settings.emulate, degraded=degraded)
    try:
        base["size_bytes"] = p.stat().st_size if p.is_file() else None
        rt = runtime_for(p)
        base["format"], base["runtime"] = rt.format, rt.name
        if not precision:  # read here and told to the child, which never reads it (the emulation guest has no onnx)
            from mobiledeploy.models.inspect import precision as read_precision

            base["precision"] = read_precision(p)
    except MobiledeployError as e:
        return BenchResult(status="error", error=str(e), usage_error=e.exit_code == 2, **base)
    try:
        raw = _run_child(p, settings, precision=base["precision"])
    except OSError as e:  # could not start the child (no processes, no memory)
        raw = {"status": "error", "error": f"cannot start the bench child process: {e}"}
    if raw.get("open_error") and not raw.get("usage"):  # the runtime could not open it: is the file corrupt?

        if not readable(p):  # the input's fault (exit 2), as in `info`, with the runtime's own message
            raw = {**raw, "error": raw["open_error"], "usage": True}
    if raw.get("status") != "ok":
        return BenchResult(status="error", error=raw.get("error") or "unknown failure",
                           usage_error=bool(raw.get("usage")), **base)
    samples = tuple(raw["samples_ms"])
    stats = latency_stats(samples)
    base["precision"] = precision or raw.get("precision") or "unknown"
    if settings.emulate:  # what the runtime saw; qemu's own memory is not the model's

        hw = raw.get("hwcaps") or [0, 0]
        base["hwcaps"] = HwCaps(settings.emulate, *hw).to_json()
        raw["peak_rss_mb"] = None
    return BenchResult(status="ok", error=None, init_ms=raw["init_ms"], first_ms=raw["first_ms"],
                       runs=len(samples), latency_ms=stats, samples_ms=samples,
                       throughput_ips=1000.0 / stats["mean"] if stats["mean"] > 0 else None,
                       peak_rss_mb=raw["peak_rss_mb"], inputs=tuple(raw.get("inputs", ())),
                       **{**base, "cores": tuple(raw["cores"]) if settings.affinity and raw.get("cores") else None})


def _run_child(path: Path, settings: BenchSettings, *, precision: str = "unknown") -> dict:
    job = {"task": "bench", "model": str(path), "threads": settings.threads,
           "cores": list(settings.affinity or ()), "xnnpack": settings.xnnpack,
           "ort_opt_level": settings.ort_opt_level, "warmup": settings.warmup, "runs": settings.runs,
           "min_time_s": settings.min_time_s, "shapes": dict(settings.shapes), "seed": settings.seed,
           "precision": precision}
    return run_child(job, timeout_s=settings.timeout_s, emulate=settings.emulate)


# ---------------------------------------------------------------- many models


def collect_models(paths: Iterable[str | os.PathLike]) -> list[tuple[str, str | None, dict | None]]:
    """Expand files and export directories into (model path, precision, the export's degraded mark).

    Directories are expanded by the one artifact resolver (``models.artifacts``): the
    ``.tflite``/``.onnx`` entries of their ``manifest.json``, or every such file when there
    is no manifest. Missing paths, empty directories and files of another kind are usage
    errors; a model a runtime cannot load is left for its own error row.
    """
    out: list[tuple[str, str | None, dict | None]] = []
    for p in paths:
        q = Path(p)
        if (q.exists() or q.is_symlink()) and not q.is_dir():
            try:
                check_model_file(q)
            except UsageError:  # a FIFO, a device, an empty file: its own error row, the others still run
                out.append((str(p), None, None))
                continue
        out += [(r.path, r.precision, r.degraded) for r in resolve_models([p], flag="MODEL_OR_DIR", formats=MODEL_FORMATS)]
    seen: set[str] = set()
    return [m for m in out if not (os.path.realpath(m[0]) in seen or seen.add(os.path.realpath(m[0])))]


@dataclass(frozen=True)
class BenchConfig:
    models: tuple[str, ...]
    settings: BenchSettings
    target: tg.Target


@dataclass(frozen=True)
class BenchReport:
    target: tg.Target
    settings: BenchSettings
    results: tuple[BenchResult, ...]

    @property
    def failed(self) -> tuple[BenchResult, ...]:
        return tuple(r for r in self.results if not r.ok)

    def to_json(self, *, samples: bool = False) -> dict:
        return {"schema_version": SCHEMA_VERSION,
                "label": self.settings.label,
                "target": {"name": self.target.name, "threads": self.settings.threads,
                           "cores": list(self.settings.affinity) if self.settings.affinity else None,
                           "device": {k: v for k, v in self.target.device.items() if k != "sources"},
                           "path": str(self.target.path) if self.target.path else None},
                "settings": self.settings.to_json(), "host": host_info(),
                "emulation": self.emulation(),
                "results": [r.to_json(samples=samples) for r in self.results]}

    def emulation(self) -> dict | None:
        """The emulated CPU model and the ISA features the runtime saw (None on the host)."""
        if not self.settings.emulate:
            return None

        model = cpu(self.settings.emulate)
        seen = next((r.hwcaps for r in self.results if r.ok and r.hwcaps), None)
        return {"cpu": model.name, "qemu_cpu": model.qemu_cpu, "notes": model.notes, "label": EMULATED_LABEL,
                "hwcaps": seen}


def bench_models(config: BenchConfig, *, progress: OnProgress | None = None) -> BenchReport:
    """Bench every model of ``config`` one after another (never in parallel)."""
    results = []
    models = collect_models(config.models)
    for i, (path, precision, degraded) in enumerate(models):
        emit(progress, "bench", f"bench {path} ({config.settings.label})", "start", done=i, total=len(models))
        r = bench_model(path, config.settings, precision=precision, degraded=degraded)
        results.append(r)
        p50 = f"p50 {r.latency_ms['p50']:.3f} ms" if r.ok and "p50" in r.latency_ms else r.status
        # a failure's reason: in the error line after the table
        emit(progress, "bench", f"bench {r.model}: {p50}", done=i + 1, total=len(models), failed=not r.ok,
             metrics={"p50_ms": r.latency_ms.get("p50")})
    return BenchReport(target=config.target, settings=config.settings, results=tuple(results))


def machine_conditions() -> dict:
    """What a benchmark records about the machine at a point in time: host facts and load."""
    import time

    return {"host": host_info(), "loadavg_1_5_15": conditions()["loadavg_1_5_15"],
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def host_info() -> dict:
    return {**host(), "versions": {rt.module: rt.version() for rt in RUNTIMES.values()} | {"numpy": np.__version__}}


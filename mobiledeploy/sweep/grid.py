"""The sweep's options (``SweepConfig``), checked up front, and its expansion into jobs.

``SweepConfig.check()`` runs every cheap check (lists, ranges, targets, data set, the
output directory, the Ray address) before anything is written and before TensorFlow is
imported; each failure is one ``UsageError``. ``jobs(cfg)`` expands the grid into one
``Job`` per (arch, alpha, resolution): one export with every format x precision.

Each job carries two hashes of its inputs: ``export_key`` (what shapes the artifacts:
the export options and the converter versions) names the export directory, ``row_key``
(``export_key`` plus the bench settings, the data set and the runtime versions) names
the job's result file. A rerun finds both and redoes nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from mobiledeploy.bench.request import DEFAULT_TIMEOUT_S
from mobiledeploy.errors import UsageError, one_line
from mobiledeploy.export.formats import FORMATS, PRECISIONS
from mobiledeploy.io import sha256_file
from mobiledeploy.options import Names, OneOf, Seconds, check_fields, estimate_method as method_option, option
from mobiledeploy.options import equalize as equalize_option, judge_on_emulated_cpu
from mobiledeploy.options import onnx_calibration as onnx_calibration_option
from mobiledeploy.options import tflite_calibration as tflite_calibration_option, weight_rounding as weight_rounding_option

PAPER_ALPHAS = (1.0, 0.75, 0.5, 0.25)  # MobileNet paper, Table 6
PAPER_RESOLUTIONS = (224, 192, 160, 128)  # Table 7
DEFAULT_TARGETS = ("pixel4",)
DEFAULT_SAMPLES = 50
DEFAULT_CALIB_SAMPLES = 100  # half of `export`'s 200: int8 calibration dominates a sweep's time
MAX_ALPHA = 1.4  # the widest MobileNet Keras ships (V2 1.4); the paper's V1 grid stops at 1.0
EXECUTORS = ("local", "ray")
SWEEP_FORMATS = tuple(f for f in FORMATS if f != "keras")  # the formats a sweep benches
MAX_CONFIGS = 100  # a bigger grid needs --max-configs (each config is an export, benches and evals: ~0.5-2 min)
MAX_CONFIGS_LIMIT = 10_000  # --max-configs itself: beyond, a sweep would run for weeks
KEY_VERSION = 1  # bump when what a result file holds changes


def _export_default(name: str):
    """``export``'s default for option ``name`` (imported when a config is made, not for ``sweep --help``)."""
    from mobiledeploy.export.pipeline import ExportConfig  # numpy and the runtimes: not at import

    return getattr(ExportConfig(), name)


def _names(flag: str, default: tuple[str, ...] = ()):
    """A repeatable option's values, each a comma list: the names in order, once each (none given: ``default``)."""
    def parse(values) -> tuple[str, ...]:
        items = tuple(dict.fromkeys(v.strip() for raw in values or () for v in str(raw).split(",") if v.strip()))
        if values and not items:
            raise UsageError(f"{flag}: empty list")
        return items or default
    return parse


def _numbers(kind, flag: str):
    """A comma list of numbers of ``kind`` (float or int), in order, once each."""
    def parse(value) -> tuple:
        items = [v.strip() for v in (value or "").split(",") if v.strip()]
        if not items:
            raise UsageError(f"{flag}: empty list; give comma-separated values")
        try:
            return tuple(dict.fromkeys(kind(v) for v in items))
        except ValueError:
            raise UsageError(f"{flag}: expected comma-separated {kind.__name__}s, got {value!r}") from None
    return parse


@dataclass(frozen=True)
class SweepConfig:
    """What ``run_sweep`` does. Fields declared with ``option`` are also ``sweep`` options (``mobiledeploy.options``)."""

    archs: tuple[str, ...] = option(("mobilenet_v1",), flag="--arch", multiple=True, parse=_names("--arch"),
                                    cli_default=("mobilenet_v1",), help="Architectures (comma list or repeated).")
    alphas: tuple[float, ...] = option(PAPER_ALPHAS, flag="--alpha", parse=_numbers(float, "--alpha"),
                                       cli_default=",".join(map(str, PAPER_ALPHAS)),
                                       help="Width multipliers, comma list (the paper's Table 6 by default).")
    resolutions: tuple[int, ...] = option(PAPER_RESOLUTIONS, flag="--res", parse=_numbers(int, "--res"),
                                          cli_default=",".join(map(str, PAPER_RESOLUTIONS)),
                                          help="Input resolutions, comma list (the paper's Table 7 by default).")
    precisions: tuple[str, ...] = option(("fp32", "int8"), flag="--quant", check=Names(PRECISIONS),
                                         help=f"Precisions: {', '.join(PRECISIONS)}.")
    formats: tuple[str, ...] = option(("tflite", "onnx"), check=Names(SWEEP_FORMATS),
                                      help=f"Formats: {', '.join(SWEEP_FORMATS)}.")
    targets: tuple[str, ...] = option(DEFAULT_TARGETS, flag="--target", multiple=True, metavar="NAME",
                                      parse=_names("--target", DEFAULT_TARGETS), cli_default=(),
                                      help=f"Device(s) to estimate latency for and pick for (repeat or comma list; "
                                           f"default {','.join(DEFAULT_TARGETS)}). See `mobiledeploy targets`.")
    estimate_method: str = method_option("--estimate-method")  # how est_ms per --target is found
    bench_target: str = option("host", metavar="NAME",  # whose [run] settings the host latency is measured with
                               help="Profile whose threads/cores/runtime options the host latency is measured with.")
    classes: int = option(1000, help="Output classes of the built models.")
    weights: str | None = option(None, metavar="PATTERN",  # a file, or a pattern with {arch} {alpha} {res}
                                 help="Trained weights per config, e.g. 'w/mobilenet_{alpha}_{res}.h5'; default "
                                      "random init.")
    seed: int = option(0, help=None)
    calib: str = option("digits", metavar="SOURCE", help="int8 calibration data.")
    weight_rounding: str = weight_rounding_option()  # the int8 recipe, as export's options (docs/export.md)
    equalize: str = equalize_option()
    tflite_calibration: str = tflite_calibration_option()
    onnx_calibration: str = onnx_calibration_option()
    emulate: str | None = judge_on_emulated_cpu()  # the exports' int8/dynamic agreement, on an emulated ARM CPU
    calib_samples: int = option(DEFAULT_CALIB_SAMPLES, help=None)
    validate_samples: int = dataclasses.field(default_factory=lambda: _export_default("validate_samples"))
    data: str | None = option(None, metavar="SOURCE",
                              help="Labelled data for top-1 (digits, image folder, .npz); needs matching --classes.")
    eval_limit: int | None = option(None, type=int, help="Evaluate on this many samples of --data.")
    samples: int = option(DEFAULT_SAMPLES,  # timed runs per artifact, all kept for the histograms
                          help="Timed runs per artifact, all kept for the latency histograms.")
    warmup: int = option(5, help=None)
    timeout_s: float = option(DEFAULT_TIMEOUT_S, flag="--timeout", check=Seconds(),
                              help="Seconds per bench child (at most a day).")
    out: str = option("build/sweep", path="dir",
                      help="Output directory (exports, per-config results, tables, report.html).")
    max_latency_ms: float | None = option(None, type=float, help="Recommend under this device estimate.")
    max_size_kb: float | None = option(None, type=float, help="Recommend under this artifact size.")
    min_top1: float | None = option(None, type=float, help="Recommend at least this top-1 (fraction, 0.7 = 70 %).")
    executor: str = option("local", check=OneOf(EXECUTORS, "executor"),
                           help="local: worker processes on this machine; ray: tasks on a Ray cluster.")
    ray_address: str | None = option(None, metavar="HOST:PORT",
                                     help="Ray cluster to join (default: start a local Ray instance).")
    jobs: int | None = option(None, type=int,  # parallel workers; None = the host's cores
                              help="Parallel workers (default: this machine's cores).")
    max_configs: int = option(MAX_CONFIGS,  # the largest grid run without complaint
                              help=f"Refuse a larger grid (archs x alphas x resolutions); at most "
                                   f"{MAX_CONFIGS_LIMIT}.")

    # ------------------------------------------------------------ checks

    def check(self) -> None:
        """Every check that needs neither TensorFlow nor a write. Raises UsageError."""
        for flag, values in (("--arch", self.archs), ("--alpha", self.alphas), ("--res", self.resolutions),
                             ("--quant", self.precisions), ("--formats", self.formats), ("--target", self.targets)):
            if not values:
                raise UsageError(f"{flag} is empty; give at least one value")
        check_fields(self)  # the declared checks: names, choices, --timeout
        for a in self.alphas:
            if isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a) or not 0 < a <= MAX_ALPHA:
                raise UsageError(f"alpha (width multiplier, --alpha) must be in (0, {MAX_ALPHA}], received {a!r}")
        self._check_size()  # before the grid is expanded: a huge one is refused at once
        for job in jobs(self, keys=False):
            job.export.check()  # arch, resolution, formats x precisions, calibration data, weights
        self._check_targets()
        _positive("--samples", self.samples, integer=True)
        _positive("--jobs", self.jobs, integer=True)
        _positive("--eval-limit", self.eval_limit, integer=True)
        _positive("--max-latency-ms", self.max_latency_ms)
        _positive("--max-size-kb", self.max_size_kb)
        if self.warmup < 0:
            raise UsageError(f"--warmup must be >= 0, received {self.warmup!r}")
        if self.min_top1 is not None:
            if not isinstance(self.min_top1, (int, float)) or not 0.0 <= self.min_top1 <= 1.0:
                raise UsageError(f"--min-top1 is a fraction in [0, 1] (0.7 for 70 %), received {self.min_top1!r}")
            if self.data is None:
                raise UsageError("--min-top1 needs accuracy: give a labelled data set with --data")
        if self.data is not None:
            self._check_data()
        check_out_dir(self.out)
        self._check_executor()

    @property
    def size(self) -> int:
        """Configs in the grid (duplicates dropped): archs x alphas x resolutions."""
        return (len(dict.fromkeys(self.archs)) * len(dict.fromkeys(float(a) for a in self.alphas))
                * len(dict.fromkeys(self.resolutions)))

    def _check_size(self) -> None:
        m = self.max_configs
        if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= MAX_CONFIGS_LIMIT:
            raise UsageError(f"--max-configs must be an integer in [1, {MAX_CONFIGS_LIMIT}], received {m!r}")
        n = self.size
        if n > m:
            raise UsageError(f"the grid has {n} configs ({len(dict.fromkeys(self.archs))} arch x "
                             f"{len(dict.fromkeys(float(a) for a in self.alphas))} alpha x "
                             f"{len(dict.fromkeys(self.resolutions))} resolution), more than --max-configs {m}; "
                             f"narrow --arch/--alpha/--res" + (f", or pass --max-configs {n} to run them all"
                                                               if n <= MAX_CONFIGS_LIMIT else ""))

    def _check_targets(self) -> None:
        from mobiledeploy.targets import load_target

        targets = [load_target(name) for name in self.targets]
        load_target(self.bench_target)
        if self.estimate_method == "kernels":  # LLVM 19 and the ARM environment: before an hour of exports
            from mobiledeploy.kernels.estimate import preflight_target

            missing = []
            for t in targets:
                try:
                    preflight_target(t)
                    break
                except UsageError as e:
                    missing.append(e)
            else:  # no target can be estimated: the first reason (a target without [kernels] is that row's error)
                raise missing[0]

    def _check_data(self) -> None:
        from mobiledeploy.data.datasets import load_dataset

        ds = load_dataset(self.data, resolution=32, preprocessing="raw", labelled=True, limit=self.eval_limit)
        n = ds.num_classes
        if self.weights is None and n is not None and n != self.classes:
            raise UsageError(f"the data set {self.data!r} (--data) has {n} classes but the models are built with "
                             f"{self.classes} (--classes); pass --classes {n}")

    def _check_executor(self) -> None:
        if self.executor == "local":
            if self.ray_address:
                raise UsageError("--ray-address needs --executor ray")
            return
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise UsageError("--executor ray needs Ray: pip install 'mobiledeploy[ray]'")
        if self.ray_address and self.ray_address not in ("auto", "local"):
            check_ray_address(self.ray_address)

    @property
    def random_weights(self) -> bool:
        return self.weights is None

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        if d["estimate_method"] == "cost":  # the defaults are not written: results as before the options existed
            del d["estimate_method"]
        if d["emulate"] is None:
            del d["emulate"]
        return d


def _positive(flag: str, value, *, integer: bool = False) -> None:
    if value is None:
        return
    ok = not isinstance(value, bool) and isinstance(value, int if integer else (int, float))
    if not ok or not math.isfinite(value) or value <= 0:
        kind = "a positive integer" if integer else "a positive number"
        raise UsageError(f"{flag} must be {kind}, received {value!r}")


def check_out_dir(out: str | os.PathLike) -> None:
    """``out`` exists as a writable directory, or can be created; creates nothing."""
    p = Path(out).expanduser().absolute()
    if p.exists():
        if not p.is_dir():
            raise UsageError(f"output path {str(out)!r} (--out) is not a directory")
        if not os.access(p, os.W_OK | os.X_OK):
            raise UsageError(f"output directory {str(out)!r} (--out) is not writable")
        return
    parent = p.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"cannot create output directory {str(out)!r} (--out): {str(parent)!r} is not writable")


def check_ray_address(address: str, timeout_s: float = 3.0) -> None:
    """A Ray address (``host:port`` or ``ray://host:port``) answers a TCP connect, or UsageError."""
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UsageError(f"Ray address {address!r} (--ray-address) is not host:port or ray://host:port")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as e:
        raise UsageError(f"Ray address {address!r} (--ray-address) is unreachable: "
                         f"{e.strerror or type(e).__name__}") from None


# ---------------------------------------------------------------- expansion and keys


@dataclass(frozen=True)
class Job:
    """One (arch, alpha, resolution): one export, its benches, evals and estimates."""

    name: str  # e.g. mobilenet_v1_0.25_128
    arch: str
    alpha: float
    resolution: int
    export: object  # mobiledeploy.export.pipeline.ExportConfig (out = the export directory)
    bench_target: str
    samples: int
    warmup: int
    timeout_s: float
    data: str | None
    eval_limit: int | None
    targets: tuple[str, ...]
    estimate_method: str = "cost"  # cost | kernels (not in the keys: estimates are redone, not the job)
    export_key: str = ""
    row_key: str = ""

    @property
    def result_name(self) -> str:
        return f"{self.name}-{self.row_key[:12]}.json"


def jobs(cfg: SweepConfig, *, keys: bool = True) -> list[Job]:
    """The grid in the order given (arch, then alpha, then resolution), duplicates dropped."""
    from mobiledeploy.export.pipeline import ExportConfig

    out = Path(cfg.out).expanduser().absolute()
    shared = _shared_inputs(cfg.bench_target, cfg.data) if keys else None  # the same for every job: once
    result = []
    for arch in dict.fromkeys(cfg.archs):
        for alpha in dict.fromkeys(float(a) for a in cfg.alphas):
            for res in dict.fromkeys(cfg.resolutions):
                name = f"{arch}_{alpha}_{res}"
                export = ExportConfig(arch=arch, alpha=alpha, resolution=res, classes=cfg.classes,
                                      weights=_weights_for(cfg.weights, arch, alpha, res), seed=cfg.seed,
                                      formats=tuple(cfg.formats), precisions=tuple(cfg.precisions),
                                      calib=cfg.calib, calib_samples=cfg.calib_samples,
                                      weight_rounding=cfg.weight_rounding, equalize=cfg.equalize,
                                      tflite_calibration=cfg.tflite_calibration,
                                      onnx_calibration=cfg.onnx_calibration, emulate=cfg.emulate,
                                      validate_samples=cfg.validate_samples, out=str(out / "exports" / name))
                job = Job(name=name, arch=arch, alpha=alpha, resolution=res, export=export,
                          bench_target=cfg.bench_target, samples=cfg.samples, warmup=cfg.warmup,
                          timeout_s=cfg.timeout_s, data=cfg.data, eval_limit=cfg.eval_limit,
                          targets=tuple(dict.fromkeys(cfg.targets)), estimate_method=cfg.estimate_method)
                result.append(with_keys(job, shared) if keys else job)
    return result


def _weights_for(pattern: str | None, arch: str, alpha: float, res: int) -> str | None:
    if pattern is None:
        return None
    try:
        return pattern.format(arch=arch, alpha=alpha, res=res)
    except (KeyError, IndexError, ValueError) as e:
        raise UsageError(f"--weights pattern {pattern!r}: only {{arch}}, {{alpha}} and {{res}} may be "
                         f"substituted ({one_line(e, typed=True)})") from None


def _shared_inputs(bench_target: str, data: str | None) -> dict:
    """The hashed inputs every job of a sweep shares (package versions, bench target, data set)."""
    from mobiledeploy.export.pipeline import versions

    return {"versions": versions(), "bench_target": _target_fingerprint(bench_target),
            "data_fingerprint": _path_fingerprint(data)}


def with_keys(job: Job, shared: dict | None = None) -> Job:
    """The job with its two hashes filled in, its export directory named by the first."""
    shared = shared or _shared_inputs(job.bench_target, job.data)
    v = shared["versions"]
    export_inputs = {k: val for k, val in dataclasses.asdict(job.export).items() if k != "out"}
    if job.export.weights:
        export_inputs["weights_sha256"] = sha256_file(Path(job.export.weights))
    export_inputs["versions"] = {k: v.get(k) for k in ("mobiledeploy", "tensorflow", "keras", "tf2onnx",
                                                       "onnx", "onnxruntime", "ai-edge-litert", "python")}
    export_key = input_hash({"key_version": KEY_VERSION, **export_inputs})
    row_inputs = {"export_key": export_key, "bench_target": shared["bench_target"],
                  "samples": job.samples, "warmup": job.warmup, "data": job.data,
                  "data_fingerprint": shared["data_fingerprint"], "eval_limit": job.eval_limit,
                  "runtimes": {k: v.get(k) for k in ("onnxruntime", "ai-edge-litert", "numpy")}}
    row_key = input_hash({"key_version": KEY_VERSION, **row_inputs})
    export = dataclasses.replace(job.export, out=f"{job.export.out}-{export_key[:12]}")
    return dataclasses.replace(job, export=export, export_key=export_key, row_key=row_key)


def input_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _target_fingerprint(name: str) -> dict:
    from mobiledeploy.targets import load_target

    t = load_target(name)
    return {"name": t.name, "threads": t.threads, "affinity": t.affinity, "xnnpack": t.xnnpack,
            "ort_opt_level": t.ort_opt_level}


def _path_fingerprint(source: str | None) -> list | None:
    """Size and mtime of a data file or folder (not its content: folders can be big)."""
    if source is None or source in ("digits", "random"):
        return None
    p = Path(source).expanduser()
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    return [[str(f.relative_to(p)) if f != p else f.name, f.stat().st_size, int(f.stat().st_mtime)]
            for f in files]


def target_fingerprint_hash(name: str) -> str:
    """A hash of a target profile's file (its cost model): estimates are redone when it changes."""
    from mobiledeploy.targets import load_target

    t = load_target(name)
    return sha256_file(t.path)[:16] if t.path else "-"

"""``export_model``: build or load a Keras MobileNet, convert it to every requested
format x precision, validate each artifact against the Keras model, write a manifest.

Everything is produced in a staging directory inside ``--out`` and moved into place
only when every artifact converted and validated; on any failure (or Ctrl-C) the
staging directory is removed and ``--out`` is left as it was.

The library never prints: ``progress(step)`` (a context manager per slow step) and
``warn(message)`` are optional hooks the CLI fills in.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, ContextManager

import numpy as np

from mobiledeploy import io
from mobiledeploy.io import sha256_file

from mobiledeploy.models import archs
from mobiledeploy.export.calibration import choose_source, load_calibration
from mobiledeploy.export.formats import DEFAULT_FORMATS, DEFAULT_PRECISIONS, FORMATS, PRECISIONS
from mobiledeploy.quiet import quiet_converter
from mobiledeploy.errors import UsageError, ValidationError
from mobiledeploy.export.recipes import (ONNX_CALIBRATION, ONNX_QUANT_TYPES, QuantRecipe, choose_onnx_types,
                                         int8_choices)
from mobiledeploy.export.validate import DEFAULT_ATOL, DEFAULT_RTOL, Reference, Validation, judge, validate_artifact

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
STAGING_PREFIX = ".mobiledeploy-export-"
CONSTANT_OUTPUT = 1e-6  # reference outputs that vary less than this across inputs carry no signal


@dataclass(frozen=True)
class ExportConfig:
    # model source: build (arch ...) or load (model_path)
    arch: str = "mobilenet_v1"
    alpha: float = 1.0
    resolution: int = 224
    classes: int = 1000
    depth_multiplier: int = 1
    dropout: float = 1e-3
    weights: str | None = None
    seed: int = 0
    model_path: str | None = None
    unsafe_load: bool = False
    # what to produce
    formats: tuple[str, ...] = DEFAULT_FORMATS
    precisions: tuple[str, ...] = DEFAULT_PRECISIONS
    int8_io: bool = False
    onnx_quant_types: str | None = None  # None: chosen for this host
    per_channel: bool = True  # int8 weights per output channel (False: per tensor)
    onnx_calibration: str = "minmax"  # ONNX Runtime calibration method (recipes.ONNX_CALIBRATION)
    bias_correction: bool | None = None  # int8 weight bias correction; None: on for trained weights
    float_layers: tuple[str, ...] | None = None  # kept in float in int8; None: the stem for trained weights
    # data
    calib: str | None = None  # None: chosen by calibration.choose_source (never digits for ImageNet weights)
    calib_samples: int = 200
    preprocessing: str | None = None  # None: the architecture's
    validate_samples: int = 32
    # checks and output
    atol: float = DEFAULT_ATOL
    rtol: float = DEFAULT_RTOL
    strict: bool = True
    out: str = "build"

    def check(self) -> None:
        """Every cheap check, before TensorFlow is imported. Raises UsageError."""
        _check_names(self.formats, tuple(FORMATS), "--formats")
        _check_names(self.precisions, PRECISIONS, "--quant")
        if not any(p in FORMATS[f].precisions for f in self.formats
                   for p in (self.precisions if FORMATS[f].per_precision else ("fp32",))):
            raise UsageError(f"nothing to export: {', '.join(self.formats)} cannot produce "
                             f"{', '.join(self.precisions)} (--formats / --quant)")
        if self.model_path is not None:
            archs.check_model_path(self.model_path)
        else:
            archs.check_build_args(self.arch, alpha=self.alpha, resolution=self.resolution, classes=self.classes,
                                   depth_multiplier=self.depth_multiplier, dropout=self.dropout,
                                   weights=self.weights)
        if self.onnx_quant_types is not None and self.onnx_quant_types not in ONNX_QUANT_TYPES:
            raise UsageError(f"unknown ONNX quantization types {self.onnx_quant_types!r} (--onnx-quant-types); "
                             f"choose from {', '.join(ONNX_QUANT_TYPES)}")
        if self.onnx_calibration not in ONNX_CALIBRATION:
            raise UsageError(f"unknown ONNX calibration method {self.onnx_calibration!r} (--onnx-calibration); "
                             f"choose from {', '.join(ONNX_CALIBRATION)}")
        if self.preprocessing is not None:
            from mobiledeploy.models.preprocessing import get_preprocessing

            get_preprocessing(self.preprocessing)
        if not isinstance(self.calib_samples, int) or self.calib_samples < 1:
            raise UsageError(f"--calib-samples must be >= 1, received {self.calib_samples!r}")
        if not isinstance(self.validate_samples, int) or self.validate_samples < 1:
            raise UsageError(f"--validate-samples must be >= 1, received {self.validate_samples!r}")
        for flag, v in (("--atol", self.atol), ("--rtol", self.rtol)):
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise UsageError(f"{flag} must be a finite number >= 0, received {v!r}")
        if self.model_path is None:  # the calibration images too must fit beside the model
            from mobiledeploy.models.limits import check_fits

            check_fits(self.arch, alpha=self.alpha, resolution=self.resolution, classes=self.classes,
                       depth_multiplier=self.depth_multiplier, samples=self.calib_samples + self.validate_samples)
        if self.calib not in (None, "digits", "random") and not Path(self.calib).expanduser().exists():
            raise UsageError(f"calibration data not found (--calib): {self.calib!r}; expected 'digits', "
                             "'random', a folder of images or a .npz file")


@dataclass(frozen=True)
class Artifact:
    file: str
    format: str
    precision: str
    size_bytes: int
    sha256: str
    validation: Validation
    path: Path = field(compare=False)

    def to_json(self) -> dict:
        return {"file": self.file, "format": self.format, "precision": self.precision,
                "size_bytes": self.size_bytes, "sha256": self.sha256, "validation": self.validation.to_json()}


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    manifest_path: Path
    model: dict
    artifacts: tuple[Artifact, ...]
    skipped: tuple[dict, ...]
    calibration: dict
    quantization: dict
    versions: dict
    warnings: tuple[str, ...]
    seconds: float
    timings: dict = field(default_factory=dict)  # step -> wall seconds
    reference: dict = field(default_factory=dict)  # what validation compared, and how much it varied
    source_model: dict | None = None  # {"file": ".keras in the directory", ...}: the float model, for eval --per-layer

    def to_json(self) -> dict:
        """The manifest (``manifest.json``)."""
        return {"schema_version": SCHEMA_VERSION, "model": self.model,
                "artifacts": [a.to_json() for a in self.artifacts], "skipped": list(self.skipped),
                "reference": self.reference, "source_model": self.source_model,
                "calibration": self.calibration, "quantization": self.quantization,
                "versions": self.versions, "warnings": list(self.warnings),
                "export_seconds": round(self.seconds, 2),
                "timings_s": {k: round(v, 2) for k, v in self.timings.items()}}


Progress = Callable[[str], ContextManager]


def export_model(config: ExportConfig, *, progress: Progress | None = None,
                 warn: Callable[[str], None] | None = None) -> ExportResult:
    """Run the export described by ``config``; see the module docstring."""
    t0 = time.perf_counter()
    outer = progress or (lambda _name: contextlib.nullcontext())
    timings: dict[str, float] = {}

    @contextlib.contextmanager
    def step(name: str):
        t = time.perf_counter()
        with outer(name):
            yield
        timings[name] = time.perf_counter() - t

    warnings: list[str] = []

    def _warn(msg: str) -> None:
        warnings.append(msg)
        if warn:
            warn(msg)

    config.check()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    out_existed = Path(config.out).exists()
    out = io.ensure_writable_dir(config.out)
    clean_stale_staging(out)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=out))
    try:
        result = _export(config, out, staging, step, _warn, warnings, t0)
        result = replace(result, timings=dict(timings))
        files = [a.path for a in result.artifacts]
        if result.source_model and result.source_model["file"] not in {f.name for f in files}:
            files.append(staging / result.source_model["file"])
        _commit(staging, out, files, result.to_json())
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if not out_existed:
            with contextlib.suppress(OSError):
                out.rmdir()  # only if we created it and it is still empty
        raise
    shutil.rmtree(staging, ignore_errors=True)
    return result


def _export(config, out, staging, step, warn, warnings, t0) -> ExportResult:
    if config.model_path:  # the file says what resolution and input it takes
        model, info, model_json = _source(config, step, warn)
        cal = _calibration(config, info.resolution, info.preprocessing, step, warn, classes=info.classes)
    else:  # bad calibration data fails before TensorFlow is even imported
        pre = config.preprocessing or archs.ARCHS[config.arch].preprocessing
        cal = _calibration(config, config.resolution, pre, step, warn, classes=config.classes)
        model, info, model_json = _source(config, step, warn)
    with step("keras reference outputs"):
        reference = keras_reference(model, cal.validation)
    if reference.values.size and float(np.ptp(reference.values, axis=0).max()) < CONSTANT_OUTPUT:
        warn(f"the model's {reference.compared} barely change across the validation inputs: validation, "
             "top-1 agreement and SQNR say little; export trained weights (--weights/--model) for "
             "meaningful figures")
    needs_int8 = "int8" in config.precisions and "onnx" in config.formats
    bias, float_layers, reasons = int8_choices(model, trained=bool(config.weights or config.model_path),
                                               bias_correction=config.bias_correction,
                                               float_layers=config.float_layers)
    recipe = QuantRecipe(calib=cal.calib, int8_io=config.int8_io, per_channel=config.per_channel,
                         onnx=choose_onnx_types(config.onnx_quant_types) if needs_int8 else None,
                         onnx_calibration=config.onnx_calibration, bias_correction=bias,
                         float_layers=float_layers)
    stem = _stem(info, config)
    artifacts, skipped = [], []
    for fmt_name in config.formats:
        fmt = FORMATS[fmt_name]
        precisions = ("fp32",) if not fmt.per_precision else config.precisions
        for precision in precisions:
            reason = _unsupported(fmt, precision, config)
            if reason:
                skipped.append({"format": fmt_name, "precision": precision, "reason": reason})
                warn(f"skipped {fmt_name} {precision}: {reason}")
                continue
            with step(f"{fmt_name} {precision}"):
                path = fmt.converter()(model, precision, recipe, staging, stem)
                artifacts.append(_validated(path, fmt_name, precision, model, cal, reference, config, warn))
    source_model = _source_model(model, artifacts, staging, config, warn)
    quant = recipe.to_json()
    for key, why in reasons.items():
        quant[key]["reason"] = why
    return ExportResult(out_dir=out, manifest_path=out / MANIFEST, model=model_json,
                        artifacts=tuple(artifacts), skipped=tuple(skipped),
                        calibration={**cal.to_json(), "seed": config.seed}, quantization=quant, versions=versions(),
                        warnings=tuple(warnings), seconds=time.perf_counter() - t0, reference=reference.to_json(),
                        source_model=source_model)


SOURCE_KERAS = "source.keras"


def _source_model(model, artifacts, staging: Path, config, warn) -> dict | None:
    """The float Keras model inside the export (its .keras artifact, else ``source.keras``), so that
    eval --per-layer never has to follow a path outside the directory."""
    keras_art = next((a for a in artifacts if a.format == "keras"), None)
    if keras_art is not None:
        return {"file": keras_art.file, "sha256": keras_art.sha256, "size_bytes": keras_art.size_bytes}
    if _unsupported(FORMATS["keras"], "fp32", config):
        return None
    path = staging / SOURCE_KERAS
    try:
        model.save(str(path))
    except Exception as e:  # Keras raises many types for unserialisable models; informative only
        warn(f"the float source model could not be saved as {SOURCE_KERAS} (eval --per-layer will need "
             f"--source-model): {' '.join(str(e).split())[:200]}")
        return None
    return {"file": SOURCE_KERAS, "sha256": sha256_file(path), "size_bytes": path.stat().st_size}


def _unsupported(fmt, precision: str, config: ExportConfig) -> str | None:
    if precision not in fmt.precisions:
        return f"{fmt.name} has no {precision} export (available: {', '.join(fmt.precisions)})"
    if fmt.name == "keras" and config.model_path and Path(config.model_path).is_dir():
        return "a SavedModel source is wrapped in a TFSMLayer, which Keras cannot save as .keras"
    return None


def _validated(path: Path, fmt: str, precision: str, model, cal, reference, config, warn) -> Artifact:
    if fmt == "keras":
        v = _validate_keras(path, model, cal, reference, config)
    else:
        with quiet_converter():  # LiteRT prints its delegate banner from C++
            v = validate_artifact(path, fmt=fmt, precision=precision, x=cal.validation, reference=reference,
                                  atol=config.atol, rtol=config.rtol, strict=config.strict, int8_io=config.int8_io,
                                  inputs=cal.validation_inputs)
    if v.status == "fail":
        warn(f"{path.name} is outside the tolerance ({v.summary}); kept because of --no-strict")
    return Artifact(file=path.name, format=fmt, precision=precision, size_bytes=path.stat().st_size,
                    sha256=sha256_file(path), validation=v, path=path)


def _validate_keras(path: Path, model, cal, reference, config) -> Validation:
    """The saved source model must load back (safe mode) and give the same outputs (logits)."""
    again = keras_reference(archs.load_model(path, unsafe=config.unsafe_load), cal.validation)
    if again.compared != reference.compared:
        raise ValidationError(f"{path.name} loads back without the source model's final softmax")
    return judge(path.name, precision="fp32", reference=reference.values, out=again.values, atol=config.atol,
                 rtol=config.rtol, strict=config.strict, runtime="keras", inputs=cal.validation_inputs,
                 compared=reference.compared)


def _source(config: ExportConfig, step, warn):
    label = f"load {Path(config.model_path).name}" if config.model_path else f"build {config.arch}"
    with step(label), quiet_converter():
        model = (archs.load_model(config.model_path, unsafe=config.unsafe_load) if config.model_path else
                 archs.build_model(config.arch, alpha=config.alpha, resolution=config.resolution,
                                   classes=config.classes, depth_multiplier=config.depth_multiplier,
                                   dropout=config.dropout, weights=config.weights, seed=config.seed,
                                   vary_batch_norm=True))
        info = archs.describe(model, arch=None if config.model_path else config.arch,
                              alpha=None if config.model_path else config.alpha,
                              preprocessing=config.preprocessing)
        if info.input_shape[1] != info.input_shape[2]:
            raise UsageError(f"model input is {info.input_shape[1]}x{info.input_shape[2]}; export supports "
                             "square inputs only")
        return model, info, _model_json(model, info, config, warn)


def _calibration(config: ExportConfig, resolution: int, preprocessing: str, step, warn, *, classes: int):
    trained = bool(config.weights or config.model_path)
    source, chosen, notes = choose_source(config.calib, trained=trained, classes=classes)
    with step(f"calibration data ({Path(source).name if chosen else source})"):
        cal = load_calibration(source, resolution=resolution, preprocessing=preprocessing,
                               samples=config.calib_samples, validate=config.validate_samples, seed=config.seed)
    cal = replace(cal, chosen=chosen)
    for w in (*notes, *cal.warnings):
        warn(w)
    return cal


def keras_reference(model, x: np.ndarray) -> Reference:
    """The Keras model's outputs on ``x`` and, when it ends in a softmax, its logits."""
    from mobiledeploy.export.logits import keras_logits_model

    twin = keras_logits_model(model)
    return Reference(outputs=keras_outputs(model, x), logits=None if twin is None else keras_outputs(twin, x))


def keras_outputs(model, x: np.ndarray, *, batch: int = 8) -> np.ndarray:
    """The Keras model's float outputs on ``x`` (eager, inference mode, no tracing)."""
    import warnings

    with warnings.catch_warnings():  # Keras 3 warns when a single-input model is called with a bare tensor
        warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match")
        parts = [np.asarray(model(x[i:i + batch], training=False), np.float32) for i in range(0, len(x), batch)]
    return np.concatenate(parts) if parts else np.zeros((0,), np.float32)


def _model_json(model, info: archs.ModelInfo, config: ExportConfig, warn) -> dict:
    d = info.to_json()
    d.update({"source": str(config.model_path) if config.model_path else "build",
              "params": int(model.count_params()), "macs": None})
    try:
        from mobiledeploy.cost.info import keras_stats

        stats = keras_stats(model, arch=info.arch, alpha=info.alpha)
        d["params"], d["macs"] = int(stats.params), int(stats.macs)
    except Exception as e:  # counting is informative only; never fail an export on it
        warn(f"could not count multiply-accumulates: {type(e).__name__}: {e}")
    if not config.model_path:
        d.update({"depth_multiplier": config.depth_multiplier, "dropout": config.dropout, "seed": config.seed,
                  "weights": _weights_json(config)})
        if not config.weights:
            d["init"] = archs.random_init_json(config.seed)
    d["trained"] = bool(config.weights or config.model_path)
    return d


def _weights_json(config: ExportConfig) -> dict | None:
    """The weights' name, SHA-256, origin and that they are trained (``models/weights.py``)."""
    if not config.weights:
        return None
    from mobiledeploy.models.weights import describe_weights, resolve_weights

    return describe_weights(resolve_weights(config.weights, arch=config.arch, alpha=config.alpha,
                                            resolution=config.resolution, classes=config.classes))


def _stem(info: archs.ModelInfo, config: ExportConfig) -> str:
    if info.arch and info.alpha is not None:
        return f"{info.arch}_{float(info.alpha)}_{info.resolution}"
    if info.arch:
        return f"{info.arch}_{info.resolution}"
    return f"{Path(config.model_path).stem}_{info.resolution}"


def clean_stale_staging(out: Path) -> list[Path]:
    """Remove staging folders that earlier exports into ``out`` left behind (killed with SIGKILL,
    power loss). A folder whose process is still running is another export at work: kept."""
    removed = []
    for d in out.glob(STAGING_PREFIX + "*"):
        pid = d.name[len(STAGING_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and _alive(int(pid)):
            continue
        if d.is_dir() and not d.is_symlink():
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def _previous_files(out: Path) -> set[str]:
    """The files the manifest already in ``out`` lists (plain names inside ``out`` only)."""
    try:
        import json

        m = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        entries = list(m.get("artifacts") or []) + [m.get("source_model") or {}]
        names = {e.get("file") for e in entries if isinstance(e, dict)}
    except (OSError, ValueError, AttributeError, TypeError):
        return set()
    return {n for n in names if isinstance(n, str) and n and Path(n).name == n and n not in (".", "..", MANIFEST)}


def _commit(staging: Path, out: Path, files: list[Path], manifest: dict) -> None:
    """Move the artifacts, then the manifest, from staging into ``out``; then remove what the
    previous manifest listed and this one does not, so the directory equals its manifest.

    Each move is an atomic rename in the same directory tree; Ctrl-C is held back
    until the few renames are done, so ``out`` never holds half of an export.
    """
    io.write_json(staging / MANIFEST, io.stamp(manifest))
    stale = _previous_files(out) - {f.name for f in files}
    with _sigint_deferred():
        for f in files:
            os.replace(f, out / f.name)
        os.replace(staging / MANIFEST, out / MANIFEST)
        for name in stale:
            p = out / name
            if p.is_file() or p.is_symlink():
                with contextlib.suppress(OSError):
                    p.unlink()


@contextlib.contextmanager
def _sigint_deferred():
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda *a: received.append(a))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            raise KeyboardInterrupt


VERSIONED = {"mobiledeploy": ("mobiledeploy",), "tensorflow": ("tensorflow", "tensorflow-cpu"),
             "keras": ("keras",), "tf2onnx": ("tf2onnx",), "onnx": ("onnx",), "onnxruntime": ("onnxruntime",),
             "ai-edge-litert": ("ai-edge-litert",), "numpy": ("numpy",)}


def versions() -> dict:
    """Versions of everything that shaped the artifacts (installed distributions)."""
    import importlib.metadata as md

    out = {"python": platform.python_version(), "platform": f"{platform.system()} {platform.machine()}"}
    for key, dists in VERSIONED.items():
        for dist in dists:
            with contextlib.suppress(md.PackageNotFoundError):
                out[key] = md.version(dist)
                break
    return out


def _check_names(values: tuple[str, ...], allowed: tuple[str, ...], flag: str) -> None:
    if not values:
        raise UsageError(f"{flag} is empty; choose from {', '.join(allowed)}")
    bad = [v for v in values if v not in allowed]
    if bad:
        raise UsageError(f"unknown value {bad[0]!r} for {flag}; choose from {', '.join(allowed)}")

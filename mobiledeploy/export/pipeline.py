"""``export_model``: build or load a Keras MobileNet, convert it to every requested
format x precision, validate each artifact against the Keras model, write a manifest.

Everything is produced in a staging directory inside ``--out`` and moved into place
only when every artifact converted and validated; on any failure (or Ctrl-C) the
staging directory is removed and ``--out`` is left as it was.

The library never prints: ``progress`` (the one progress event, ``mobiledeploy.progress``: a
start and an end per slow step) and ``warn(message)`` are optional hooks the CLI fills in.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from mobiledeploy import io
from mobiledeploy.errors import UsageError, ValidationError, one_line
from mobiledeploy.export.calibration import choose_source, load_calibration
from mobiledeploy.export.config import ExportConfig  # noqa: F401 - re-exported (export_model's argument)
from mobiledeploy.export.formats import FORMATS
from mobiledeploy.export.logits import keras_logits_model, keras_outputs  # keras_outputs: re-exported
from mobiledeploy.export.recipes import (S8S8_HOST_NOTE, Calibration, OnnxQuant, QuantRecipe, TfliteQuant,
                                         choose_onnx_types, int8_choices)
from mobiledeploy.export.staging import (MANIFEST, STAGING_PREFIX, clean_stale_staging,  # noqa: F401 - re-exported
                                          commit_staging)
from mobiledeploy.export.validate import AgreementFloor, Reference, Validation, agreement_floor, judge, \
    validate_artifact
from mobiledeploy.io import sha256_file
from mobiledeploy.machine import python_platform
from mobiledeploy.models import archs
from mobiledeploy.models.weights import describe_weights, resolve_weights
from mobiledeploy.progress import OnProgress, emit
from mobiledeploy.quiet import quiet_converter

SCHEMA_VERSION = 1
CONSTANT_OUTPUT = 1e-6  # reference outputs that vary less than this across inputs carry no signal
EMULATED_PRECISIONS = ("dynamic", "int8")  # --emulate: judged on the ARM runtime (float: the host's tolerance)


@dataclass(frozen=True)
class Artifact:
    file: str
    format: str
    precision: str
    size_bytes: int
    sha256: str
    validation: Validation
    path: Path = field(compare=False)
    agreement: AgreementFloor | None = None  # quantized artifacts: agreement against the floor

    @property
    def degraded(self) -> bool:
        return self.agreement is not None and self.agreement.degraded

    def to_json(self) -> dict:
        d = {"file": self.file, "format": self.format, "precision": self.precision,
             "size_bytes": self.size_bytes, "sha256": self.sha256, "validation": self.validation.to_json()}
        if self.agreement is not None:
            d.update(degraded=self.degraded, agreement_floor=self.agreement.to_json())
        return d


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


def export_model(config: ExportConfig, *, progress: OnProgress | None = None,
                 warn: Callable[[str], None] | None = None) -> ExportResult:
    """Run the export described by ``config``; see the module docstring."""
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    @contextlib.contextmanager
    def step(name: str):
        t = time.perf_counter()
        emit(progress, "export", name, "start")
        try:
            yield
        except BaseException:
            emit(progress, "export", name, failed=True, metrics={"seconds": time.perf_counter() - t})
            raise
        timings[name] = time.perf_counter() - t
        emit(progress, "export", name, metrics={"seconds": timings[name]})

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
        commit_staging(staging, out, files, result.to_json())
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
    recipe = QuantRecipe(per_channel=config.per_channel, bias_correction=bias, float_layers=float_layers,
                         rounding=config.weight_rounding, equalize=config.equalize,
                         tflite=TfliteQuant(int8_io=config.int8_io, calibration=config.tflite_calibration),
                         onnx=OnnxQuant(choose_onnx_types(config.onnx_quant_types, judged_on=config.emulate)
                                        if needs_int8 else None, config.onnx_calibration))
    calibration = Calibration(cal.calib)
    equalized = _equalized(model, recipe, calibration, cal, reference, config, step, warn)
    stem = _stem(info, config)
    budget, budget_files = None, {}
    if config.target is not None:  # the accuracy budget chooses the float layers
        from mobiledeploy.export.budget import search_recipe  # here, not at the top: budget imports this module

        recipe, budget, budget_files = search_recipe(model, recipe, calibration, cal, reference, config, staging,
                                                     stem, step)
        reasons["float_layers"] = f"chosen by the accuracy budget (--min-agreement {config.min_agreement:g}, " \
                                  f"--target {config.target})"
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
                if precision == "int8" and fmt_name in budget_files:  # the search's chosen candidate
                    path = staging / budget_files[fmt_name].name
                    os.replace(budget_files[fmt_name], path)
                else:
                    path = fmt.converter()(model, precision, recipe, calibration, staging, stem)
                artifacts.append(_validated(path, fmt_name, precision, model, cal, reference, config, warn,
                                            note=_host_note(fmt_name, precision, recipe)))
    source_model = _source_model(model, artifacts, staging, config, warn)
    quant = recipe.to_json(calibration.samples)
    for key, why in reasons.items():
        quant[key]["reason"] = why
    if budget is not None:
        quant["budget_search"] = budget.to_json()
    if equalized is not None:
        quant["equalize"].update(equalized)
    return ExportResult(out_dir=out, manifest_path=out / MANIFEST, model=model_json,
                        artifacts=tuple(artifacts), skipped=tuple(skipped),
                        calibration={**cal.to_json(), "seed": config.seed}, quantization=quant, versions=versions(),
                        warnings=tuple(warnings), seconds=time.perf_counter() - t0, reference=reference.to_json(),
                        source_model=source_model)


def _equalized(model, recipe, calibration, cal, reference, config, step, warn) -> dict | None:
    """--equalize: the equalized float model against the original (the manifest's record), when int8 is made."""
    if recipe.equalize == "none" or "int8" not in config.precisions:
        return None
    from mobiledeploy.export.float_change import equalization_record

    with step("cross-layer equalization"):
        record, warning = equalization_record(model, calibration.equalized(model, recipe.equalize), recipe.equalize,
                                              cal.validation, reference, atol=config.atol, rtol=config.rtol)
    if warning:
        warn(warning)
    return record


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
             f"--source-model): {one_line(e, 200)}")
        return None
    return {"file": SOURCE_KERAS, "sha256": sha256_file(path), "size_bytes": path.stat().st_size}


def _unsupported(fmt, precision: str, config: ExportConfig) -> str | None:
    if precision not in fmt.precisions:
        return f"{fmt.name} has no {precision} export (available: {', '.join(fmt.precisions)})"
    if fmt.name == "keras" and config.model_path and Path(config.model_path).is_dir():
        return "a SavedModel source is wrapped in a TFSMLayer, which Keras cannot save as .keras"
    return None


def _host_note(fmt: str, precision: str, recipe) -> str:
    """What a degraded artifact's message adds about this host: an S8S8 ONNX file validated on an x86-64
    CPU without VNNI (whose ONNX Runtime kernel can saturate) understates ARM's agreement."""
    types = recipe.onnx.types
    understated = fmt == "onnx" and precision == "int8" and types is not None and types.host_understates
    return S8S8_HOST_NOTE if understated else ""


def _validated(path: Path, fmt: str, precision: str, model, cal, reference, config, warn, *,
               note: str = "") -> Artifact:
    if fmt == "keras":
        v = _validate_keras(path, model, cal, reference, config)
    else:
        with quiet_converter():  # LiteRT prints its delegate banner from C++
            v = validate_artifact(path, fmt=fmt, precision=precision, x=cal.validation, reference=reference,
                                  atol=config.atol, rtol=config.rtol, strict=config.strict, int8_io=config.int8_io,
                                  inputs=cal.validation_inputs,
                                  emulate=config.emulate if precision in EMULATED_PRECISIONS else None)
    if v.status == "fail":
        warn(f"{path.name} is outside the tolerance ({v.summary}); kept because of --no-strict")
    floor = agreement_floor(v, precision, min_agreement=config.min_agreement,
                            trained=bool(config.weights or config.model_path))
    if floor is not None and floor.degraded:
        message = floor.message(path.name, precision) + (f"; {note}" if note else "")
        if config.min_agreement is not None:  # asked for: nothing is written
            raise ValidationError(message)
        warn(message)
    return Artifact(file=path.name, format=fmt, precision=precision, size_bytes=path.stat().st_size,
                    sha256=sha256_file(path), validation=v, path=path, agreement=floor)


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
    twin = keras_logits_model(model)
    return Reference(outputs=keras_outputs(model, x), logits=None if twin is None else keras_outputs(twin, x))


def _model_json(model, info: archs.ModelInfo, config: ExportConfig, warn) -> dict:
    d = info.to_json()
    d.update({"source": str(config.model_path) if config.model_path else "build",
              "params": int(model.count_params()), "macs": None})
    try:
        from mobiledeploy.cost.info import keras_stats

        stats = keras_stats(model, arch=info.arch, alpha=info.alpha)
        d["params"], d["macs"] = int(stats.params), int(stats.macs)
    except Exception as e:  # counting is informative only; never fail an export on it
        warn(f"could not count multiply-accumulates: {one_line(e, None, typed=True)}")
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

    return describe_weights(resolve_weights(config.weights, arch=config.arch, alpha=config.alpha,
                                            resolution=config.resolution, classes=config.classes))


def _stem(info: archs.ModelInfo, config: ExportConfig) -> str:
    if info.arch and info.alpha is not None:
        return f"{info.arch}_{float(info.alpha)}_{info.resolution}"
    if info.arch:
        return f"{info.arch}_{info.resolution}"
    return f"{Path(config.model_path).stem}_{info.resolution}"


VERSIONED = {"mobiledeploy": ("mobiledeploy",), "tensorflow": ("tensorflow", "tensorflow-cpu"),
             "keras": ("keras",), "tf2onnx": ("tf2onnx",), "onnx": ("onnx",), "onnxruntime": ("onnxruntime",),
             "ai-edge-litert": ("ai-edge-litert",), "numpy": ("numpy",)}


def versions() -> dict:
    """Versions of everything that shaped the artifacts (installed distributions)."""
    import importlib.metadata as md

    out = python_platform()
    for key, dists in VERSIONED.items():
        for dist in dists:
            with contextlib.suppress(md.PackageNotFoundError):
                out[key] = md.version(dist)
                break
    return out


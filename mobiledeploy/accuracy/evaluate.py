"""Accuracy and agreement of Keras, TFLite and ONNX models on one data set.

``evaluate(models, dataset, reference=...)`` runs every model on the same preprocessed
samples and returns an ``EvalReport``: per model top-1/top-5, samples, host throughput,
and its agreement with a reference model (top-1 agreement, max/mean absolute output
difference, SQNR in dB). ``run_eval(EvalConfig)`` is what ``mobiledeploy eval`` calls:
it expands export directories (``manifest.json``), takes the preprocessing from the
manifest / the model / the flag, loads the data set and calls ``evaluate``.

TFLite and ONNX models run in a child process each (``mobiledeploy.runtimes.child``), so a
runtime crash is one failed row, not a dead command. Keras models run in-process
(TensorFlow is imported only when a ``.keras`` model is evaluated).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from mobiledeploy import metrics
from mobiledeploy.accuracy.emulated import emulated_eval
from mobiledeploy.data.datasets import Dataset, check_options, load_dataset
from mobiledeploy.errors import UsageError, one_line
from mobiledeploy.export.augment import calibration_warnings
from mobiledeploy.export.perlayer import per_layer_report
from mobiledeploy.models.archs import check_model_path
from mobiledeploy.models.artifacts import (ModelRef, default_reference, load_keras, model_input, model_layout,
                                           preprocessing_for, resolve_models)
from mobiledeploy.models.siblings import sibling_reference
from mobiledeploy.options import AtLeast, OneOf, Seconds, check_fields, option
from mobiledeploy.progress import OnProgress, emit
from mobiledeploy.runtimes import emulate as emu
from mobiledeploy.runtimes.child import run_child


@dataclass(frozen=True)
class Agreement:
    reference: str
    top1_agreement: float
    max_abs_diff: float
    mean_abs_diff: float
    sqnr_db: float  # inf when the outputs are identical (JSON: "inf")

    def to_json(self) -> dict:
        return {"reference": self.reference, "top1_agreement": self.top1_agreement,
                "max_abs_diff": self.max_abs_diff, "mean_abs_diff": self.mean_abs_diff,
                "sqnr_db": self.sqnr_db}


@dataclass(frozen=True)
class ModelResult:
    model: str
    format: str
    precision: str
    runtime: str
    status: str  # "ok" | "error"
    error: str | None = None
    top1: float | None = None
    top5: float | None = None
    samples: int = 0
    seconds: float | None = None  # wall time of the predictions (host)
    throughput_ips: float | None = None  # samples per second on this host (batch 1 for TFLite/ONNX)
    agreement: Agreement | None = None
    per_layer: object | None = None  # an export.perlayer.PerLayerReport when asked for
    per_class: dict | None = None  # {class name: {"samples", "correct", "predicted"}} with class names
    outputs: np.ndarray | None = field(default=None, repr=False, compare=False)  # (N, C) float scores
    degraded: dict | None = None  # the export's mark (models.artifacts.ModelRef.degraded), None when unmarked

    @property
    def predictions(self) -> np.ndarray | None:
        return None if self.outputs is None else np.argmax(self.outputs, axis=1)

    def to_json(self) -> dict:
        d = {"model": self.model, "format": self.format, "precision": self.precision, "runtime": self.runtime,
             "status": self.status, "top1": self.top1, "top5": self.top5, "samples": self.samples,
             "seconds": self.seconds, "throughput_ips": self.throughput_ips,
             "agreement": self.agreement.to_json() if self.agreement else None, "degraded": self.degraded}
        if self.error:
            d["error"] = self.error
        if self.per_layer is not None:
            d["per_layer"] = self.per_layer.to_json()
        if self.per_class is not None:
            d["per_class"] = self.per_class
        return d


@dataclass(frozen=True)
class EvalReport:
    data: dict
    results: tuple[ModelResult, ...]
    warnings: tuple[str, ...] = ()
    emulated: tuple = ()  # accuracy.emulated.EmulatedEval per model, with --emulate

    @property
    def ok(self) -> bool:
        return all(r.status == "ok" for r in self.results)

    def to_json(self) -> dict:
        d = {"schema_version": 1, "data": self.data, "results": [r.to_json() for r in self.results],
             "warnings": list(self.warnings)}
        if self.emulated:
            d["emulated"] = [e.to_json() for e in self.emulated]
        return d


DEFAULT_TIMEOUT_S = 600.0  # seconds per model before it is reported as failed


@dataclass(frozen=True)
class EvalConfig:
    """What ``run_eval`` does. Fields declared with ``option`` are also ``eval`` options (``mobiledeploy.options``)."""

    models: tuple[str, ...]
    data: str = option("digits", metavar="SOURCE",
                       help="'digits', an image folder with class sub-folders, or a .npz with x and y.")
    split: str = option("test", check=OneOf(("test", "train", "all"), "split"), help="Split of the digits set.")
    limit: int | None = option(None, type=int, help="Evaluate a seeded subset of this many samples.")
    preprocessing: str | None = option(  # None: from the manifest / the model
        None, help="Input preprocessing: mobilenet, raw, unit, torch, caffe (default: from the manifest, the ONNX "
                   "metadata or the Keras model).")
    labels_file: str | None = option(None, flag="--labels", path="file", exists=True,
                                     help="Class names, one per line.")
    reference: str | None = option(None, path="any",  # None: the float model of the same export
                                   help="Model to compare outputs with (default: the float model of the same "
                                        "export).")
    threads: int | None = option(None, check=AtLeast(1), help="Runtime threads (default: the runtime's).")
    timeout_s: float = option(DEFAULT_TIMEOUT_S, flag="--timeout", check=Seconds(),
                              help="Seconds per model before it is reported as failed.")
    seed: int = option(0, help="Seed for the --limit subset.")
    per_layer: bool = option(False, help="Per-layer quantization error of int8 artifacts.")
    source_model: str | None = option(None, path="any", exists=True,  # when there is no manifest
                                      help="Float Keras model for --per-layer of a TFLite file without a manifest.")
    unsafe_load: bool = option(False, help="Allow Keras models with Lambda layers (trusted files only).")
    compare: bool = True  # False: no reference model, no agreement (what `bench --data` asks)
    emulate: str | None = option(  # also run each artifact under qemu on this CPU model (accuracy.emulated)
        None, metavar="CPU",
        help="Also run each .tflite/.onnx on the real aarch64 runtimes under qemu on this CPU model (cortex-a53, "
             "cortex-a55, cortex-a76, neoverse-n1, max, 'max,sme=off'; needs `make arm-env`): its top-1 and its "
             "agreement with the host run. --timeout is scaled x50 for it.")
    progress: OnProgress | None = None  # a Progress as each model starts and ends (the CLI's stderr lines)
    layout: str | None = option(None, check=OneOf(("nhwc", "nchw"), "layout"),  # None: from the input shape
                                help="Input layout of TFLite/ONNX models (default: read from the input shape).")
    label_pattern: str | None = option(  # class id from file names (data/labels.py)
        None, metavar="REGEX",
        help=r"Class id from each file name's first group, e.g. 'imagenet_\d+_(\d+)' (flat folders).")


# ---------------------------------------------------------------- core


def evaluate(models: Sequence[ModelRef | str], dataset: Dataset, *, reference: ModelRef | str | None = None,
             threads: int | None = None, timeout_s: float = DEFAULT_TIMEOUT_S, require_labels: bool = True,
             unsafe_load: bool = False, progress: OnProgress | None = None,
             layouts: dict[str, str] | None = None) -> EvalReport:
    """Run ``models`` (and ``reference``, if not among them) on ``dataset``.

    Raises ``UsageError`` when labels are needed but absent or when a model's output
    size differs from the data set's classes. A model that fails to load or run is a
    result with ``status="error"``; the others are still evaluated.
    """
    if require_labels and not dataset.labelled:
        raise UsageError(f"data set {dataset.source!r} has no labels; accuracy needs labels (--data: class "
                         "sub-folders, a .npz with 'y', or 'digits')")
    refs = [m if isinstance(m, ModelRef) else resolve_models([m])[0] for m in models]
    ref = None if reference is None else (reference if isinstance(reference, ModelRef)
                                          else resolve_models([reference])[0])
    if ref is not None:
        same = [r for r in refs if os.path.realpath(r.path) == os.path.realpath(ref.path)]
        if same:
            ref = same[0]
        else:
            refs = [ref, *refs]

    def predict(r: ModelRef):
        emit(progress, "eval", f"eval {r.path}", "start")
        out = _predict(r, dataset, threads=threads, timeout_s=timeout_s, unsafe_load=unsafe_load,
                       layout=(layouts or {}).get(r.path, "nhwc"))
        emit(progress, "eval", f"eval {r.path}: " + (f"{out[1]:.1f} s" if out[0] is not None else "error"),
             failed=out[0] is None)
        return out

    raw = {r.path: predict(r) for r in refs}
    for r in refs:  # a class-count mismatch is the user's data, not a runtime failure
        out = raw[r.path][0]
        if out is not None:
            _check_classes(r, out, dataset)
    ref_out = raw[ref.path][0] if ref is not None else None
    results = []
    for r in refs:
        out, seconds, error = raw[r.path]
        if out is None:
            results.append(ModelResult(model=r.path, format=r.format, precision=r.precision, runtime=r.runtime,
                                       status="error", error=error, degraded=r.degraded))
            continue
        top1 = top5 = None
        if dataset.labelled:
            top1 = metrics.topk_accuracy(out, dataset.y, 1)
            top5 = metrics.topk_accuracy(out, dataset.y, 5) if out.shape[1] >= 5 else None
        agree = None
        if ref_out is not None and r.path != ref.path:
            agree = Agreement(reference=ref.path, top1_agreement=metrics.top1_agreement(ref_out, out),
                              max_abs_diff=metrics.max_abs_diff(ref_out, out),
                              mean_abs_diff=metrics.mean_abs_diff(ref_out, out),
                              sqnr_db=metrics.sqnr_db(ref_out, out))
        results.append(ModelResult(model=r.path, format=r.format, precision=r.precision, runtime=r.runtime,
                                   status="ok", top1=top1, top5=top5, samples=len(dataset), seconds=seconds,
                                   throughput_ips=len(dataset) / seconds if seconds else None,
                                   agreement=agree, outputs=out, per_class=per_class(out, dataset),
                                   degraded=r.degraded))
    return EvalReport(data=dataset.to_json(), results=tuple(results))


def _check_classes(r: ModelRef, out: np.ndarray, ds: Dataset) -> None:
    n_out = out.shape[1]
    if ds.class_names is not None and len(ds.class_names) != n_out:
        raise UsageError(f"{Path(r.path).name} has {n_out} output classes but the data set {ds.source!r} has "
                         f"{len(ds.class_names)} ({', '.join(ds.class_names[:5])}{', ...' if len(ds.class_names) > 5 else ''});"
                         " evaluate on matching data (--data) or fix the class names (--labels)")
    if ds.y is not None and len(ds.y) and int(ds.y.max()) >= n_out:
        raise UsageError(f"{Path(r.path).name} has {n_out} output classes but the data set {ds.source!r} has "
                         f"label {int(ds.y.max())}; evaluate on matching data (--data)")


def per_class(out: np.ndarray, ds: Dataset) -> dict | None:
    """Top-1 per true class, named: {name: {"samples", "correct", "predicted": most frequent prediction}}."""
    if ds.y is None or ds.class_names is None or out.shape[1] != len(ds.class_names):
        return None
    pred = out.argmax(axis=1)
    summary = {}
    for k in np.unique(ds.y):
        mine = pred[ds.y == k]
        summary[ds.class_names[int(k)]] = {"samples": int(len(mine)), "correct": int((mine == k).sum()),
                                           "predicted": ds.class_names[int(np.bincount(mine).argmax())]}
    return summary


def _predict(r: ModelRef, ds: Dataset, *, threads, timeout_s, unsafe_load,
             layout: str = "nhwc") -> tuple[np.ndarray | None, float, str | None]:
    """(outputs (N, C) float32 or None, seconds, error text); NCHW models get the samples transposed."""
    if r.format == "keras":
        model = load_keras(r.path, unsafe_load)  # UsageError for a bad file, before any work
        try:
            model.predict(ds.x[:1], verbose=0)  # build the graph before timing
            t0 = time.perf_counter()
            out = np.asarray(model.predict(ds.x, batch_size=64, verbose=0), np.float32)
        except Exception as e:  # noqa: BLE001 - Keras raises many types; one failed row
            return None, 0.0, f"{r.name}: Keras failed: {one_line(e, typed=True)}"
        return _flat(out), time.perf_counter() - t0, None

    job = {"task": "predict", "model": str(Path(r.path).resolve()), "threads": threads}
    x = ds.x.astype(np.float32, copy=False)
    if layout == "nchw":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    res = run_child(job, timeout_s=timeout_s, arrays={"x": x}, keep=("out",))
    if res.get("status") != "ok":
        if res.get("usage"):
            raise UsageError(res["error"])
        err = res.get("error") or "unknown failure"
        return None, 0.0, err if r.name in err else f"{r.name}: {err}"
    return _flat(res["arrays"]["out"]), float(res["seconds"]), None


def _flat(out: np.ndarray) -> np.ndarray:
    return out.reshape(out.shape[0], -1).astype(np.float32, copy=False)


# ---------------------------------------------------------------- what the CLI calls


def run_eval(cfg: EvalConfig) -> EvalReport:
    """Resolve ``cfg.models`` (files and export directories), load the data set, evaluate."""
    check_fields(cfg)

    check_options(cfg.data, preprocessing=cfg.preprocessing, split=cfg.split, limit=cfg.limit, seed=cfg.seed,
                  label_pattern=cfg.label_pattern)  # before any model is read (a .keras imports TensorFlow)
    if cfg.per_layer and cfg.source_model:
        check_model_path(cfg.source_model, flag="--source-model")
    if cfg.emulate:  # a bad CPU name or no environment: one line, before any work

        emu.cpu(cfg.emulate)
        emu.find_env()
    refs = resolve_models(cfg.models)
    if cfg.reference:
        reference = resolve_models([cfg.reference], flag="--reference")[0]
    else:
        reference = (default_reference(refs) or sibling_reference(refs)) if cfg.compare else None
    everyone = refs + ([reference] if reference is not None and reference not in refs else [])
    pres = {preprocessing_for(r, override=cfg.preprocessing, unsafe_load=cfg.unsafe_load) for r in everyone}
    layouts = {r.path: model_layout(r, cfg.layout, unsafe_load=cfg.unsafe_load) for r in everyone}
    resolutions = {model_input(r, unsafe_load=cfg.unsafe_load, layout=layouts[r.path])[0] for r in everyone}
    if len(pres) > 1:
        raise UsageError(f"the models expect different preprocessings ({', '.join(sorted(pres))}); evaluate them "
                         "separately or force one with --preprocessing")
    if len(resolutions) > 1:
        raise UsageError(f"the models take different resolutions ({', '.join(map(str, sorted(resolutions)))}); "
                         "evaluate them separately")
    ds = load_dataset(cfg.data, resolution=resolutions.pop(), preprocessing=pres.pop(), split=cfg.split,
                      limit=cfg.limit, labelled=True, seed=cfg.seed, labels_file=cfg.labels_file,
                      label_pattern=cfg.label_pattern)
    report = evaluate(refs, ds, reference=reference, threads=cfg.threads, timeout_s=cfg.timeout_s,
                      unsafe_load=cfg.unsafe_load, progress=cfg.progress, layouts=layouts)
    report = _replace(report, data={**report.data, "layouts": sorted(set(layouts.values()))},
                      warnings=tuple(calibration_warnings(everyone, ds)))
    if cfg.emulate:
        by_path = {m.path: m for m in everyone}
        report = _replace(report, emulated=emulated_eval([by_path[r.model] for r in report.results], ds,
                                                         cfg.emulate, threads=cfg.threads,
                                                         timeout_s=cfg.timeout_s, progress=cfg.progress))
    if not cfg.per_layer:
        return report

    by_path = {m.path: m for m in everyone}
    results = []
    for res in report.results:
        r = by_path[res.model]
        if res.status == "ok" and res.precision == "int8" and r.format in ("tflite", "onnx"):
            emit(cfg.progress, "per-layer", f"per-layer {r.path}", "start")
            pl = per_layer_report(r, dataset=ds, source_model=cfg.source_model, unsafe_load=cfg.unsafe_load)
            emit(cfg.progress, "per-layer", f"per-layer {r.path}: {len(pl.flagged)} of {len(pl.layers)} layers flagged")
            res = _replace(res, per_layer=pl)
        results.append(res)
    return EvalReport(data=report.data, results=tuple(results), warnings=report.warnings, emulated=report.emulated)


def _replace(res, **kw):
    import dataclasses

    return dataclasses.replace(res, **kw)


def accuracy_for(models: Sequence[str], data: str, *, threads: int | None = None,
                 limit: int | None = None) -> dict[str, dict]:
    """{model path as given: {"top1", "top5", "samples", "data", "status"}} for ``bench --data``.

    Each model is evaluated on its own (its preprocessing and resolution come from its
    manifest), without a reference. Usage errors (no labels, unknown preprocessing) raise.
    """
    out: dict[str, dict] = {}
    for m in models:
        rep = run_eval(EvalConfig(models=(m,), data=data, limit=limit, threads=threads, compare=False))
        r = rep.results[0]
        out[m] = {"top1": r.top1, "top5": r.top5, "samples": r.samples, "status": r.status,
                  "data": rep.data["source"] + (f" {rep.data['split']}" if rep.data.get("split") else "")}
        if r.error:
            out[m]["error"] = r.error
    return out

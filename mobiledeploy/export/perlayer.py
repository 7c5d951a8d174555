"""Per-layer quantization error of int8 artifacts, worst layers first.

- TFLite: ``tf.lite.experimental.QuantizationDebugger`` re-runs the export's int8 recipe
  on the float Keras source (the manifest's ``.keras``, or ``--source-model``) with the
  export's calibration data, and compares every quantized tensor with its float twin.
  The metric is ``rmse/scale``: the RMS error in units of the tensor's quantization
  step. Pure rounding noise gives about 0.29 (1/sqrt(12)); layers above 0.7 are flagged.
  It reports on the recipe's model, which is the artifact only if the recipe is the
  same, so the artifact's file is not itself inspected. Needs TensorFlow.
- ONNX: ``onnxruntime.quantization.qdq_loss_debug`` makes every tensor of the QDQ model
  an output, runs it, and gives SQNR in dB per tensor: against the float ONNX model of
  the same export when there is one (``xmodel``), and across each Quantize/Dequantize
  pair (``qdq``). Low SQNR is bad; tensors below 20 dB are flagged. No TensorFlow.
"""

from __future__ import annotations

import math
import re
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from mobiledeploy.data.datasets import load_dataset
from mobiledeploy.errors import ConversionError, UsageError, one_line
from mobiledeploy.export.formats.tflite import converter_for, debug_model, float_nodes
from mobiledeploy.export.recipes import Calibration, QuantRecipe, TfliteQuant, calibration_reader
from mobiledeploy.models.artifacts import contained_path, load_keras, resolve_models
from mobiledeploy.models.inspect import onnx_model as _onnx_model
from mobiledeploy.quiet import import_tensorflow, quiet_converter

TFLITE_FLAG = 0.7  # rmse/scale above this is flagged; ~0.29 is rounding noise alone
ONNX_FLAG_DB = 20.0  # SQNR below this is flagged
DEBUG_SAMPLES = 32  # samples the debuggers run (each runs the model once per sample)


@dataclass(frozen=True)
class LayerError:
    name: str
    op: str
    value: float  # rmse/scale (TFLite) or SQNR dB (ONNX)
    flagged: bool
    detail: tuple[tuple[str, float], ...] = ()
    tensor: str = ""  # the full tensor name, when ``name`` is a shortened one

    def to_json(self) -> dict:
        return {"name": self.name, "op": self.op, "value": self.value, "flagged": self.flagged,
                "tensor": self.tensor or self.name, **dict(self.detail)}


@dataclass(frozen=True)
class PerLayerReport:
    model: str
    method: str
    metric: str  # "rmse/scale" (higher is worse) or "sqnr_db" (lower is worse)
    threshold: float
    samples: int
    layers: tuple[LayerError, ...]  # worst first
    note: str = ""

    @property
    def flagged(self) -> tuple[LayerError, ...]:
        return tuple(layer for layer in self.layers if layer.flagged)

    def to_json(self) -> dict:
        return {"model": self.model, "method": self.method, "metric": self.metric, "threshold": self.threshold,
                "samples": self.samples, "flagged": len(self.flagged), "note": self.note,
                "layers": [layer.to_json() for layer in self.layers]}


def per_layer_report(ref, *, dataset, source_model: str | None = None, unsafe_load: bool = False,
                     samples: int = DEBUG_SAMPLES) -> PerLayerReport:
    """Per-layer error of the int8 artifact ``ref`` (a ``modelref.ModelRef``) on ``dataset``."""
    x = dataset.x[:samples]
    if ref.format == "tflite":
        return _tflite_report(ref, x, dataset, source_model=source_model, unsafe_load=unsafe_load)
    if ref.format == "onnx":
        return _onnx_report(ref, x)
    raise UsageError(f"--per-layer needs an int8 .tflite or .onnx artifact, got {ref.name} ({ref.format})")


# ---------------------------------------------------------------- TFLite


def _calibration(ref, dataset) -> tuple[np.ndarray, str]:
    """The export's calibration samples (from its manifest), else the evaluation samples."""
    cal = ref.calibration if isinstance(ref.calibration, dict) else {}
    why = "no manifest calibration"
    if cal.get("source"):
        try:
            source = cal["source"]
            if source not in ("digits", "random"):  # a path in a manifest: only inside its directory
                if ref.manifest is None:
                    raise UsageError("no manifest")
                mdir = Path(ref.manifest).parent
                try:
                    source = str(contained_path(mdir, source, key="calibration.source", source=ref.manifest,
                                                must_exist=False))
                except UsageError:
                    raise UsageError("it lies outside the export directory (an absolute path or ..)") from None
            pre = cal.get("preprocessing") or dataset.preprocessing
            if cal.get("distinct_images") is not None and Path(source).is_dir():
                from mobiledeploy.export.calibration import load_calibration

                again = load_calibration(source, resolution=int(dataset.x.shape[1]), preprocessing=pre,
                                         samples=int(cal["samples"]), validate=int(cal.get("validation_samples") or 1),
                                         seed=int(cal.get("seed", 0)))  # the same split and crops as the export
                return again.calib, f"calibration: {cal['source']} ({len(again.calib)} samples, as in the export)"
            ds = load_dataset(source, resolution=int(dataset.x.shape[1]), preprocessing=pre,
                              split=cal.get("split", "train"), limit=cal.get("samples"), seed=cal.get("seed", 0))
            return ds.x, f"calibration: {cal['source']} ({len(ds)} samples, as recorded in the manifest)"
        except (UsageError, TypeError, ValueError) as e:
            why = f"the manifest's calibration data is not used: {one_line(e, 160)}"
    return dataset.x[:100], f"calibration: {min(100, len(dataset))} evaluation samples ({why})"


def _tflite_report(ref, x, dataset, *, source_model, unsafe_load) -> PerLayerReport:
    src = source_model or ref.source
    if not src:
        raise UsageError(f"--per-layer for {ref.name} needs its float Keras model: evaluate the export directory "
                         "(its manifest names it) or pass --source-model")
    tf = import_tensorflow()

    model = load_keras(str(src), unsafe_load)
    calib, cal_note = _calibration(ref, dataset)
    per_channel = tflite_per_channel(Path(ref.path))  # what the artifact holds, whatever the manifest says
    recorded = QuantRecipe.from_manifest(ref.quantization)
    recipe = replace(recorded, per_channel=per_channel, tflite=TfliteQuant(calibration=recorded.tflite.calibration))
    conv = converter_for(model, "int8", recipe, Calibration(calib))  # the exporter's own converter and recipe
    debug = lambda: ([x[i:i + 1]] for i in range(len(x)))  # noqa: E731
    try:
        with quiet_converter():
            options = tf.lite.experimental.QuantizationDebugOptions(
                denylisted_nodes=_float_nodes(model, recipe) or None)
            source = ({"converter": conv} if recipe.tflite.calibration == "minmax" else  # else: the recipe's ranges
                      {"quant_debug_model_content": debug_model(model, recipe, Calibration(calib),
                                                                options.denylisted_nodes)})
            dbg = tf.lite.experimental.QuantizationDebugger(debug_dataset=debug, debug_options=options, **source)
            dbg.run()
    except Exception as e:  # the converter raises many types
        raise ConversionError(f"QuantizationDebugger failed on {Path(src).name}: "
                              f"{one_line(e)}") from None
    layers = []
    for stats_name, stats in dbg.layer_statistics.items():
        det = _tflite_tensor(dbg, stats_name)
        scale = det.get("scale") or float("nan")
        mse = float(stats.get("mean_squared_error", float("nan")))
        value = math.sqrt(mse) / scale if scale and mse == mse else float("nan")
        short = short_tflite_name(stats_name)
        layers.append(LayerError(name=short, op=short.rsplit("/", 1)[-1] if "/" in short else "", value=value,
                                 flagged=bool(value > TFLITE_FLAG),
                                 tensor=stats_name,
                                 detail=(("scale", float(scale)), ("mean_squared_error", mse),
                                         ("max_abs_error", float(stats.get("max_abs_error", float("nan")))))))
    layers.sort(key=lambda layer: -layer.value if layer.value == layer.value else math.inf)
    return PerLayerReport(model=ref.path, method="tf.lite.experimental.QuantizationDebugger", metric="rmse/scale",
                          threshold=TFLITE_FLAG, samples=len(x), layers=tuple(layers),
                          note=f"recipe re-run on {Path(src).name} ({'; '.join(_recipe_parts(recipe))}); "
                               f"{cal_note}; "
                               "~0.29 is rounding noise alone")


def _recipe_parts(recipe) -> list[str]:
    """How the re-run recipe is described in the report's note."""
    parts = [f"{'per-channel' if recipe.per_channel else 'per-tensor'} int8 weights, as in the artifact"]
    if recipe.equalize != "none":
        parts.append(f"equalized ({recipe.equalize}), as in the manifest")
    if recipe.bias_correction:
        parts.append("bias-corrected, as in the manifest")
    if recipe.rounding == "adaround":
        parts.append("learned rounding (adaround), as in the manifest")
    if recipe.tflite.calibration != "minmax":
        parts.append(f"{recipe.tflite.calibration} activation ranges, as in the manifest")
    if recipe.float_layers:
        parts.append(", ".join(recipe.float_layers) + " in float")
    return parts


def _float_nodes(model, recipe) -> list[str]:
    """The TFLite nodes of the layers the recipe keeps in float (named as in the float conversion)."""
    if not recipe.float_layers:
        return []
    return float_nodes(model, recipe.float_layers, converter_for(model, "fp32", recipe).convert())


def tflite_per_channel(path: Path) -> bool:
    """True when the artifact's int8 weight tensors carry one scale per output channel."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(path.read_bytes(), 0)
    sg = model.Subgraphs(0)
    counts = []
    for i in range(sg.TensorsLength()):
        t = sg.Tensors(i)
        q = t.Quantization()
        if (t.Type() == schema.TensorType.INT8 and q is not None and t.ShapeLength() >= 2
                and model.Buffers(t.Buffer()).DataLength() > 0):  # a constant: weights
            counts.append(q.ScaleLength())
    return not counts or max(counts) > 1


def _tflite_tensor(dbg, name: str) -> dict:
    """scale and op name of the quantized tensor ``name`` in the debugger's model."""
    try:
        for d in dbg._quant_interpreter.get_tensor_details():  # noqa: SLF001 - no public accessor
            if d["name"] == name:
                scales = d.get("quantization_parameters", {}).get("scales")
                scale = float(scales[0]) if scales is not None and len(scales) else float(d["quantization"][0])
                return {"scale": scale, "op": ""}
    except Exception:  # noqa: BLE001 - only decoration is lost
        pass
    return {}


# ---------------------------------------------------------------- ONNX


def _onnx_report(ref, x) -> PerLayerReport:
    from onnxruntime.quantization.qdq_loss_debug import (collect_activations, compute_activation_error,
                                                         create_activation_matching,
                                                         modify_model_output_intermediate_tensors)

    g = _onnx_model(Path(ref.path)).graph
    inits = {i.name for i in g.initializer}
    input_name = next(i.name for i in g.input if i.name not in inits)
    ops = {o: n.op_type for n in g.node for o in n.output}

    float_path = _float_onnx(ref)
    with tempfile.TemporaryDirectory(prefix="mobiledeploy-perlayer-") as tmp:
        try:
            with quiet_converter():
                aug = Path(tmp) / "qdq_aug.onnx"
                modify_model_output_intermediate_tensors(ref.path, aug)
                q_acts = collect_activations(str(aug), calibration_reader(input_name, x, batch=1))
                f_acts = None
                if float_path:
                    faug = Path(tmp) / "float_aug.onnx"
                    modify_model_output_intermediate_tensors(float_path, faug)
                    f_acts = collect_activations(str(faug), calibration_reader(input_name, x, batch=1))
                matching = create_activation_matching(q_acts, f_acts)
                for m in matching.values():  # ORT reads m["float"] even when no float model was given
                    m.setdefault("float", [])
                errors = compute_activation_error(matching)
        except Exception as e:  # noqa: BLE001 - ORT raises its own types
            raise ConversionError(f"qdq_loss_debug failed on {ref.name}: {one_line(e)}") from None
    layers = []
    for name, err in errors.items():
        qdq = float(err.get("qdq_err", float("nan")))
        xm = err.get("xmodel_err")
        value = float(xm) if xm is not None else qdq
        detail = (("qdq_sqnr_db", qdq),) + ((("xmodel_sqnr_db", float(xm)),) if xm is not None else ())
        layers.append(LayerError(name=short_tflite_name(name), op=ops.get(name, ""), value=value,
                                 flagged=bool(value < ONNX_FLAG_DB), detail=detail, tensor=name))
    if not layers:
        raise UsageError(f"{ref.name} has no QuantizeLinear/DequantizeLinear pairs; --per-layer needs a QDQ "
                         "int8 ONNX model")
    layers.sort(key=lambda layer: layer.value if layer.value == layer.value else -math.inf)
    what = f"vs the float model {Path(float_path).name}" if float_path else "across each Q/DQ pair (no float ONNX)"
    return PerLayerReport(model=ref.path, method="onnxruntime.quantization.qdq_loss_debug", metric="sqnr_db",
                          threshold=ONNX_FLAG_DB, samples=len(x), layers=tuple(layers),
                          note=f"SQNR {what}; higher is better")


def _float_onnx(ref) -> str | None:
    if not ref.manifest:
        return None

    for r in resolve_models([str(Path(ref.manifest).parent)]):
        if r.format == "onnx" and r.precision == "fp32":
            return r.path
    return None


_TFLITE_NAME = re.compile(r"^(?:NumericVerify/)?(?P<name>[^;]*?)(?::\d+)?(?:;.*)?$")


def short_tflite_name(name: str) -> str:
    """'NumericVerify/model_1/conv1_relu_1/Relu6;model_1/conv1_bn_1/...:118' -> 'conv1_relu_1/Relu6'.

    Also shortens ONNX tensor names ('model_1/conv_pw_7_relu_1/Relu6:0' -> 'conv_pw_7_relu_1/Relu6').
    """
    m = _TFLITE_NAME.match(name)
    core = (m.group("name") if m else name).split(";")[0]
    core = re.sub(r":\d+$", "", core)
    parts = core.split("/")
    return "/".join(parts[1:]) if len(parts) > 2 else core

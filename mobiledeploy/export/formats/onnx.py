"""Keras -> ONNX with tf2onnx (NHWC input kept), then ONNX Runtime quantization.

- fp32: tf2onnx from the frozen trace (the ``onnx`` row's opset, 17), tensors named ``input``/``output``,
  NHWC input with a dynamic batch.
- int8: the fp32 graph (of the bias-corrected model when the recipe asks for it, converted
  on the side; the fp32 artifact stays the original) is pre-processed (``quant_pre_process``) and quantized with
  ``quantize_static`` in QDQ format over the recipe's calibration samples; per-channel or
  per-tensor weights, activation/weight types and the calibration method from the recipe
  (see ``mobiledeploy.export.recipes``).
- fp16: ONNX Runtime's float16 converter (``onnxruntime.transformers.float16``):
  weights and activations in half precision, ``keep_io_types`` so the input and output
  stay float32 like every other artifact. Where ONNX Runtime's CPU provider has no
  fp16 kernel it inserts casts and computes that node in float32.
- dynamic: ``quantize_dynamic`` (int8 weights, uint8 activations quantized per tensor at run
  time, ConvInteger). On the real ImageNet MobileNet V1 it collapses (17 of 120 images agree
  with fp32; docs/export.md): use int8 (static, QDQ) for convolutional models.

The fp32 ONNX is converted once per staging directory and reused by the quantizers.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from mobiledeploy.errors import ConversionError, one_line
from mobiledeploy.export import float_layers as fl
from mobiledeploy.export.formats import FORMATS
from mobiledeploy.export.formats._graph import INPUT_NAME, OUTPUT_NAME, frozen_function
from mobiledeploy.export.recipes import CALIB_BATCH, calibration_reader
from mobiledeploy.quiet import import_tensorflow, quiet_converter

OPSET = FORMATS["onnx"].opset  # stated on the format's row
WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")
CALIBRATION_METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                       "percentile": CalibrationMethod.Percentile}


def _fp32(model, out_dir: Path, stem: str) -> Path:
    path = Path(out_dir) / FORMATS["onnx"].filename(stem, "fp32")
    if path.exists():
        return path
    try:
        with quiet_converter():
            import_tensorflow()
            import tf2onnx

            cf = frozen_function(model)
            names = {cf.inputs[0].name: INPUT_NAME, cf.outputs[0].name: OUTPUT_NAME}
            tf2onnx.convert.from_graph_def(cf.graph.as_graph_def(), input_names=[cf.inputs[0].name],
                                           output_names=[cf.outputs[0].name], opset=OPSET,
                                           tensors_to_rename=names, output_path=str(path))
    except Exception as e:
        path.unlink(missing_ok=True)
        raise ConversionError(f"ONNX conversion (tf2onnx) failed: {one_line(e)}") from None
    return path


def _batch(recipe) -> int:
    """MinMax statistics do not depend on batching; ORT's histogram calibrators need equal batches."""
    return CALIB_BATCH if recipe.onnx.calibration == "minmax" else 1


def _fp16(fp32: Path, path: Path) -> Path:
    try:
        with quiet_converter():
            import onnx
            from onnxruntime.transformers.float16 import convert_float_to_float16

            onnx.save(convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True), str(path))
    except Exception as e:
        path.unlink(missing_ok=True)
        raise ConversionError(f"ONNX fp16 conversion failed: {one_line(e)}") from None
    return path


def _float_nodes(model, graph: Path, recipe) -> list[str]:
    """The ONNX nodes of ``recipe.float_layers`` (with their fused batch-norm/activation), for nodes_to_exclude."""
    import onnx

    g = onnx.load(str(graph)).graph
    nodes = fl.matching_nodes([n.name for n in g.node], fl.with_fused(model, recipe.float_layers))
    producer = {o: n for n in g.node for o in n.output}
    for n in [n for n in g.node if n.name in nodes and n.op_type not in WEIGHTED_OPS]:  # a batch-norm, an activation
        p = producer.get(n.input[0]) if n.input else None
        while p is not None and p.name not in nodes and p.op_type in ("Add", "Mul", "BatchNormalization"):
            p = producer.get(p.input[0])
        if p is not None and p.op_type in WEIGHTED_OPS and p.name not in nodes:
            nodes.append(p.name)  # tf2onnx names plain convolutions Conv__N: found through what consumes them
    if not nodes:
        raise ConversionError(f"ONNX int8: no node of {', '.join(recipe.float_layers)} found to keep in float")
    return nodes


def convert(model, precision: str, recipe, calibration, out_dir: Path, stem: str) -> Path:
    fp32 = _fp32(model, out_dir, stem)
    if precision == "fp32":
        return fp32
    path = Path(out_dir) / FORMATS["onnx"].filename(stem, precision)
    if precision == "fp16":
        return _fp16(fp32, path)
    try:
        with tempfile.TemporaryDirectory(dir=out_dir) as tmp, quiet_converter():
            source = fp32
            if precision == "int8":  # the recipe's source: bias-corrected for ORT's weight grid when it says so
                corrected = calibration.quant_source(model, recipe, recipe.onnx.types.weight_grid)
                if corrected is not model:
                    source = _fp32(corrected, Path(tmp), stem)
            pre = Path(tmp) / "pre.onnx"
            quant_pre_process(str(source), str(pre), skip_symbolic_shape=True)
            if precision == "dynamic":
                quantize_dynamic(str(pre), str(path), per_channel=recipe.per_channel, weight_type=QuantType.QInt8)
            elif precision == "int8":
                types = recipe.onnx.types
                excluded = _float_nodes(model, pre, recipe) if recipe.float_layers else []
                quantize_static(
                    str(pre), str(path), calibration_reader(INPUT_NAME, calibration.x, batch=_batch(recipe)),
                    quant_format=QuantFormat.QDQ,
                    per_channel=recipe.per_channel, calibrate_method=CALIBRATION_METHODS[recipe.onnx.calibration],
                    reduce_range=types.reduce_range,
                    activation_type=QuantType.QInt8 if types.name == "s8s8" else QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    nodes_to_exclude=excluded,
                    extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
                )
            else:
                raise ConversionError(f"ONNX cannot produce precision {precision!r}")
    except ConversionError:
        raise
    except Exception as e:
        path.unlink(missing_ok=True)
        raise ConversionError(f"ONNX {precision} quantization failed: {one_line(e)}") from None
    return path

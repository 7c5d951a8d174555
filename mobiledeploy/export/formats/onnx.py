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
REQUANTIZED_AT_LOAD = ("Conv", "ConvTranspose", "Gemm")  # ONNX Runtime's WeightBiasQuantization (see _feed_float)
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


def _feed_float(path: Path, excluded: list[str]) -> None:
    """Give each float Conv/Gemm behind an int8 producer its own per-axis DequantizeLinear.

    ONNX Runtime's session-time WeightBiasQuantization (basic graph optimizations, on by default) rewrites a
    Conv/Gemm whose input comes from a DequantizeLinear with a per-tensor scale and whose weight is a float
    initializer: it quantizes that weight to int8 with one scale for the whole tensor. A layer kept in float
    behind an int8 producer thus ran with per-tensor int8 weights, worse than the per-channel int8 it was kept
    out of (a depthwise layer or an outlier weight loses its other weights to zero). The same scale and zero
    point repeated per input channel (axis 1) dequantize to the very same values, and the rewrite leaves a
    per-axis DequantizeLinear alone, so the layer computes in float.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(str(path))
    g = m.graph
    init = {t.name: t for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    changed = False
    for n in list(g.node):
        if n.name not in excluded or n.op_type not in REQUANTIZED_AT_LOAD or len(n.input) < 2 or n.input[1] not in init:
            continue
        dq = producer.get(n.input[0])
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[1] not in init:
            continue
        scale = numpy_helper.to_array(init[dq.input[1]])
        if scale.size != 1:
            continue  # already per-axis: left as is
        w = numpy_helper.to_array(init[n.input[1]])
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type == "Gemm":
            channels = w.shape[1] if attrs.get("transB", 0) else w.shape[0]
        else:  # Conv weight (M, C/group, ...); ConvTranspose weight (C, M/group, ...)
            channels = w.shape[1] * attrs.get("group", 1) if n.op_type == "Conv" else w.shape[0]
        names = [f"{n.name}_input_scale_per_axis", f"{n.name}_input_zero_point_per_axis"]
        g.initializer.append(numpy_helper.from_array(np.full(channels, scale.item(), scale.dtype), names[0]))
        inputs = [dq.input[0], names[0]]
        if len(dq.input) > 2 and dq.input[2]:
            zp = numpy_helper.to_array(init[dq.input[2]])
            g.initializer.append(numpy_helper.from_array(np.full(channels, zp.item(), zp.dtype), names[1]))
            inputs.append(names[1])
        out = f"{n.name}_input_dequantized"
        dq_per_axis = helper.make_node("DequantizeLinear", inputs, [out], name=f"{n.name}_input_dq", axis=1)
        g.node.insert(list(g.node).index(n), dq_per_axis)
        n.input[0] = out
        changed = True
    if not changed:
        return
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    for n in [n for n in g.node if n.op_type == "DequantizeLinear" and not any(o in used for o in n.output)]:
        g.node.remove(n)  # the per-tensor DequantizeLinear nothing else reads
    onnx.save(m, str(path))


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
                if excluded:
                    _feed_float(path, excluded)
            else:
                raise ConversionError(f"ONNX cannot produce precision {precision!r}")
    except ConversionError:
        raise
    except Exception as e:
        path.unlink(missing_ok=True)
        raise ConversionError(f"ONNX {precision} quantization failed: {one_line(e)}") from None
    return path

"""Keras -> TFLite (fp32, fp16, dynamic-range, full int8) with TensorFlow's converter.

Every precision is converted from the same frozen GraphDef of the model
(``mobiledeploy.export.formats._graph``), so exporting four precisions traces and freezes once.
The GraphDef goes through the converter's GraphDef entry point
(``tf.compat.v1.lite.TFLiteConverter``): the TF2 entry points re-freeze the function on
every call (about 1 s of CPU per precision at 128x128). The same MLIR converter and
quantizer run behind both; the input is fixed at batch 1, as on a phone. That entry point
writes no SignatureDef, so every file gets its ``serving_default`` signature afterwards
(``mobiledeploy.export.signature``: input ``input``, output ``output``). Full int8 with layers
kept in float or activation ranges other than min/max (``--tflite-calibration``) goes through
the converter's two steps, calibrate then ``mlir_quantize``, with ``export.ranges`` between them.
"""

from __future__ import annotations

from pathlib import Path

from mobiledeploy.errors import ConversionError, one_line
from mobiledeploy.export import float_layers as fl
from mobiledeploy.export.formats import FORMATS
from mobiledeploy.export.formats._graph import frozen_function
from mobiledeploy.export.signature import add_signature
from mobiledeploy.quiet import import_tensorflow, quiet_converter

def converter_for(model, precision: str, recipe, calibration=None):
    """The converter for ``precision``; full int8 converts the recipe's source (bias-corrected when it says so)
    and calibrates on ``calibration`` (``recipes.Calibration``, needed for int8 only)."""
    tf = import_tensorflow()

    if precision == "int8":
        model = calibration.quant_source(model, recipe, "int8")
    cf = frozen_function(model)
    shape = [1] + [int(d) for d in cf.inputs[0].shape[1:]]
    conv = tf.compat.v1.lite.TFLiteConverter(
        cf.graph.as_graph_def(), None, None, input_arrays_with_shape=[(_op(cf.inputs[0]), shape)],
        output_arrays=[_op(cf.outputs[0])])
    if precision == "fp16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif precision == "dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif precision == "int8":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = calibration.representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if not recipe.per_channel:
            conv._experimental_disable_per_channel = True  # noqa: SLF001 - the converter's only switch for it
        if recipe.tflite.int8_io:
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
    elif precision != "fp32":
        raise ConversionError(f"TFLite cannot produce precision {precision!r}")
    return conv


def _op(tensor) -> str:
    return tensor.name.split(":")[0]


def calibrated(model, recipe, calibration) -> bytes:
    """The converter's calibrate-only model (float, each activation's [min, max] recorded), with the ranges of
    ``recipe.tflite.calibration`` (``export.ranges``; min/max: as calibrated)."""
    from mobiledeploy.export.ranges import narrow_ranges

    conv = converter_for(model, "int8", recipe, calibration)
    conv._experimental_calibrate_only = True  # noqa: SLF001 - QuantizationDebugger's own route
    return narrow_ranges(conv.convert(), calibration.x, recipe.tflite.calibration)


def debug_model(model, recipe, calibration, denylisted_nodes=None) -> bytes:
    """The recipe's int8 model with NumericVerify ops, for ``tf.lite.experimental.QuantizationDebugger``."""
    import_tensorflow()
    from tensorflow.lite.python import convert as tflite_convert

    return tflite_convert.mlir_quantize(calibrated(model, recipe, calibration),
                                        disable_per_channel=not recipe.per_channel, enable_numeric_verify=True,
                                        denylisted_nodes=denylisted_nodes)


def float_nodes(model, float_layers: tuple[str, ...], data: bytes) -> list[str]:
    """The nodes of ``data`` (a float TFLite model converted from ``model``) to denylist so that ``float_layers``
    stay float: their operators, and with the classifier its tail up to the output, whose last operator is named
    after the output tensor (``Identity``), not after its layer."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=data)
    nodes = fl.matching_nodes([d["name"] for d in it.get_tensor_details()], fl.with_fused(model, float_layers))
    if nodes and fl.keeps_output(model, float_layers):
        nodes += [d["name"] for d in it.get_output_details() if d["name"] not in nodes]
    return nodes


def _selective_int8(model, recipe, calibration) -> bytes:
    """Full int8 in the converter's two steps: calibrate (with the recipe's activation ranges), then quantize with
    the nodes of ``recipe.float_layers`` denylisted (kept in float)."""
    tf = import_tensorflow()
    from tensorflow.lite.python import convert as tflite_convert

    data = calibrated(model, recipe, calibration)
    nodes = None
    if recipe.float_layers:
        nodes = float_nodes(model, recipe.float_layers, data)
        if not nodes:
            raise ConversionError(f"TFLite int8: no operator of {', '.join(recipe.float_layers)} found to keep in "
                                  "float")
    io_type = tf.int8 if recipe.tflite.int8_io else tf.float32
    return tflite_convert.mlir_quantize(data, disable_per_channel=not recipe.per_channel,
                                        fully_quantize=recipe.tflite.int8_io, input_data_type=io_type,
                                        output_data_type=io_type, denylisted_nodes=nodes)


def convert(model, precision: str, recipe, calibration, out_dir: Path, stem: str) -> Path:
    path = Path(out_dir) / FORMATS["tflite"].filename(stem, precision)
    try:
        with quiet_converter():
            if precision == "int8" and (recipe.float_layers or recipe.tflite.calibration != "minmax"):
                data = _selective_int8(model, recipe, calibration)  # converter_for applies the correction
            else:
                data = converter_for(model, precision, recipe, calibration).convert()
            data = add_signature(data)  # serving_default: input -> output (export/signature.py)
    except ConversionError:
        raise
    except Exception as e:  # the converter raises ConverterError, ValueError, RuntimeError...
        raise ConversionError(f"TFLite {precision} conversion failed: {one_line(e)}") from None
    path.write_bytes(data)
    return path

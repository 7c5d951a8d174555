"""Keras -> TFLite (fp32, fp16, dynamic-range, full int8) with TensorFlow's converter.

Every precision is converted from the same frozen trace of the model
(``mobiledeploy.convert._graph``), so exporting four precisions traces once.
"""

from __future__ import annotations

from pathlib import Path

from mobiledeploy.convert import FORMATS
from mobiledeploy.convert._graph import frozen_function
from mobiledeploy.convert._quiet import quiet_converter
from mobiledeploy.errors import ConversionError

def converter_for(model, precision: str, recipe):
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_concrete_functions([frozen_function(model)])
    if precision == "fp16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif precision == "dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif precision == "int8":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = recipe.representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if recipe.int8_io:
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
    elif precision != "fp32":
        raise ConversionError(f"TFLite cannot produce precision {precision!r}")
    return conv


def convert(model, precision: str, recipe, out_dir: Path, stem: str) -> Path:
    path = Path(out_dir) / FORMATS["tflite"].filename(stem, precision)
    try:
        with quiet_converter():
            data = converter_for(model, precision, recipe).convert()
    except ConversionError:
        raise
    except Exception as e:  # the converter raises ConverterError, ValueError, RuntimeError...
        raise ConversionError(f"TFLite {precision} conversion failed: {' '.join(str(e).split())[:300]}") from None
    path.write_bytes(data)
    return path

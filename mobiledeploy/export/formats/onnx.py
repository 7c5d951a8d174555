"""Keras -> ONNX with tf2onnx (NHWC input kept), then ONNX Runtime quantization.

- fp32: tf2onnx from the frozen trace (opset 17), tensors named ``input``/``output``,
  NHWC input with a dynamic batch.
- int8: the fp32 graph is pre-processed (``quant_pre_process``) and quantized with
  ``quantize_static`` in QDQ format, per-channel weights, over the recipe's calibration
  samples; activation/weight types from the recipe (see ``mobiledeploy.export.recipes``).
- fp16: ONNX Runtime's float16 converter (``onnxruntime.transformers.float16``):
  weights and activations in half precision, ``keep_io_types`` so the input and output
  stay float32 like every other artifact. Where ONNX Runtime's CPU provider has no
  fp16 kernel it inserts casts and computes that node in float32.
- dynamic: ``quantize_dynamic`` (int8 weights, activations quantized at run time).

The fp32 ONNX is converted once per staging directory and reused by the quantizers.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from mobiledeploy.export.formats import FORMATS
from mobiledeploy.export.formats._graph import INPUT_NAME, OUTPUT_NAME, frozen_function
from mobiledeploy.export.formats._quiet import quiet_converter
from mobiledeploy.errors import ConversionError

OPSET = 17


def _fp32(model, out_dir: Path, stem: str) -> Path:
    path = Path(out_dir) / FORMATS["onnx"].filename(stem, "fp32")
    if path.exists():
        return path
    try:
        with quiet_converter():
            import tf2onnx

            cf = frozen_function(model)
            names = {cf.inputs[0].name: INPUT_NAME, cf.outputs[0].name: OUTPUT_NAME}
            tf2onnx.convert.from_graph_def(cf.graph.as_graph_def(), input_names=[cf.inputs[0].name],
                                           output_names=[cf.outputs[0].name], opset=OPSET,
                                           tensors_to_rename=names, output_path=str(path))
    except Exception as e:
        path.unlink(missing_ok=True)
        raise ConversionError(f"ONNX conversion (tf2onnx) failed: {' '.join(str(e).split())[:300]}") from None
    return path


def _fp16(fp32: Path, path: Path) -> Path:
    try:
        with quiet_converter():
            import onnx
            from onnxruntime.transformers.float16 import convert_float_to_float16

            onnx.save(convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True), str(path))
    except Exception as e:
        path.unlink(missing_ok=True)
        raise ConversionError(f"ONNX fp16 conversion failed: {' '.join(str(e).split())[:300]}") from None
    return path


CALIB_BATCH = 10  # MinMax statistics are the same however samples are batched; batches run faster


class _Reader(CalibrationDataReader):
    """Calibration samples in batches (the ONNX batch is dynamic)."""

    def __init__(self, name: str, calib: np.ndarray) -> None:
        self._it = iter([{name: calib[i:i + CALIB_BATCH]} for i in range(0, calib.shape[0], CALIB_BATCH)])

    def get_next(self):
        return next(self._it, None)


def convert(model, precision: str, recipe, out_dir: Path, stem: str) -> Path:
    fp32 = _fp32(model, out_dir, stem)
    if precision == "fp32":
        return fp32
    path = Path(out_dir) / FORMATS["onnx"].filename(stem, precision)
    if precision == "fp16":
        return _fp16(fp32, path)
    try:
        with tempfile.TemporaryDirectory(dir=out_dir) as tmp, quiet_converter():
            pre = Path(tmp) / "pre.onnx"
            quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
            if precision == "dynamic":
                quantize_dynamic(str(pre), str(path), per_channel=True, weight_type=QuantType.QInt8)
            elif precision == "int8":
                types = recipe.onnx
                quantize_static(
                    str(pre), str(path), _Reader(INPUT_NAME, recipe.calib), quant_format=QuantFormat.QDQ, per_channel=True,
                    reduce_range=types.reduce_range,
                    activation_type=QuantType.QInt8 if types.name == "s8s8" else QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
                )
            else:
                raise ConversionError(f"ONNX cannot produce precision {precision!r}")
    except ConversionError:
        raise
    except Exception as e:
        path.unlink(missing_ok=True)
        raise ConversionError(f"ONNX {precision} quantization failed: {' '.join(str(e).split())[:300]}") from None
    return path

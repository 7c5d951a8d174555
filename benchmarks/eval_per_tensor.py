"""Does `eval` make a bad int8 recipe impossible to miss? Per-channel vs per-tensor on the reference model.

Krishnamoorthi (2018) reports that per-tensor post-training int8 of MobileNet V1 1.0-224
collapses ImageNet top-1 (70.9 % -> ~0.1 %) while per-channel loses ~0.6 points. This
script quantizes the committed reference model both ways (TFLite and ONNX, same 200
digits calibration samples as `export`), then runs `mobiledeploy eval --per-layer` on
each and prints top-1, agreement with float and the worst layers. Results go to
``benchmarks/results/eval_per_tensor.json``.

    python -m benchmarks run eval_per_tensor
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from benchmarks.harness import ROOT

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
KIND = "study"
MODEL = ROOT / "models/mobilenet_v1_0.25_32_digits.keras"


def add_arguments(ap) -> None:
    pass


def run(args) -> dict:
    import tensorflow as tf
    import tf2onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from mobiledeploy.models.archs import load_model
    from mobiledeploy.data.datasets import load_dataset
    from mobiledeploy.accuracy.evaluate import EvalConfig, run_eval
    from mobiledeploy.export.recipes import calibration_reader

    model = load_model(MODEL)
    cal = load_dataset("digits", resolution=32, split="train", limit=200).x
    tmp = Path(tempfile.mkdtemp(prefix="per-tensor-"))
    results = {}
    try:
        shutil.copy(MODEL, tmp / "m_fp32.keras")
        onnx_fp32 = tmp / "m_fp32.onnx"
        tf2onnx.convert.from_keras(model, input_signature=(tf.TensorSpec((None, 32, 32, 3), tf.float32,
                                                                         name="input"),),
                                   opset=17, output_path=str(onnx_fp32))
        for per_channel in (True, False):
            tag = "per_channel" if per_channel else "per_tensor"
            d = tmp / tag
            d.mkdir()
            shutil.copy(MODEL, d / "m_fp32.keras")
            shutil.copy(onnx_fp32, d / "m_fp32.onnx")
            conv = tf.lite.TFLiteConverter.from_keras_model(model)
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = lambda: ([x[None]] for x in cal)
            conv._experimental_disable_per_channel = not per_channel  # noqa: SLF001 - the documented switch
            (d / "m_int8.tflite").write_bytes(conv.convert())
            quantize_static(str(onnx_fp32), str(d / "m_int8.onnx"), calibration_reader("input", cal, batch=1), quant_format=QuantFormat.QDQ,
                            per_channel=per_channel, activation_type=QuantType.QInt8,
                            weight_type=QuantType.QInt8)
            arts = [("m_fp32.keras", "keras", "fp32"), ("m_int8.tflite", "tflite", "int8"),
                    ("m_fp32.onnx", "onnx", "fp32"), ("m_int8.onnx", "onnx", "int8")]
            (d / "manifest.json").write_text(json.dumps({
                "schema_version": 1, "model": {"resolution": 32, "classes": 10, "preprocessing": "mobilenet"},
                "artifacts": [{"file": f, "format": fmt, "precision": p} for f, fmt, p in arts],
                "calibration": {"source": "digits", "samples": 200, "preprocessing": "mobilenet"}}))
            rep = run_eval(EvalConfig(models=(str(d),), data="digits", per_layer=True))
            results[tag] = []
            for r in rep.results:
                row = {"model": Path(r.model).name, "top1": r.top1,
                       "agreement": r.agreement.to_json() if r.agreement else None}
                if r.per_layer is not None:
                    pl = r.per_layer
                    row["per_layer"] = {"metric": pl.metric, "flagged": len(pl.flagged), "layers": len(pl.layers),
                                        "worst": [(x.name, round(x.value, 3)) for x in pl.layers[:3]]}
                results[tag].append(row)
                print(tag, json.dumps(row))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return results

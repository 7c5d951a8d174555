"""One inspector: format, precision and inputs from a model file, the same for every command."""

from __future__ import annotations

import pytest

from mobiledeploy.models import inspect
from tests.conftest import quiet


@pytest.fixture(scope="module")
def variants(tiny_keras, tiny_tflite, tiny_tflite_int8, tiny_onnx, tmp_path_factory):
    """{precision: [files]} over both formats, each converted the way users do."""
    import tensorflow as tf
    from onnxruntime.quantization import QuantType, quantize_dynamic

    d = tmp_path_factory.mktemp("variants")
    conv = tf.lite.TFLiteConverter.from_keras_model(tiny_keras)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]  # no data: dynamic range
    dyn = d / "m_dyn.tflite"
    conv16 = tf.lite.TFLiteConverter.from_keras_model(tiny_keras)
    conv16.optimizations = [tf.lite.Optimize.DEFAULT]
    conv16.target_spec.supported_types = [tf.float16]
    f16 = d / "m_half.tflite"
    with quiet():
        dyn.write_bytes(conv.convert())
        f16.write_bytes(conv16.convert())
    onnx_dyn = d / "m_dyn.onnx"
    quantize_dynamic(str(tiny_onnx), str(onnx_dyn), weight_type=QuantType.QInt8)
    return {"fp32": [tiny_tflite, tiny_onnx], "int8": [tiny_tflite_int8], "dynamic": [dyn, onnx_dyn],
            "fp16": [f16]}


def test_precision_from_content_and_every_reader_agrees(variants):
    from mobiledeploy.bench.core import BenchSettings, bench_model
    from mobiledeploy.cost.info import model_stats
    from mobiledeploy.models.artifacts import resolve_models

    for want, files in variants.items():
        for f in files:
            assert inspect.precision(f) == want, f.name
            assert bench_model(f, BenchSettings(runs=1, warmup=0)).precision == want, f.name  # what bench reports
            assert model_stats(str(f)).precision == want, f.name  # what info/estimate report
            assert resolve_models([str(f)])[0].precision == want, f.name  # what eval reports


def test_inputs_and_formats(tiny_tflite, tiny_onnx, tmp_path):
    (t,) = inspect.inputs(tiny_tflite)
    (o,) = inspect.inputs(tiny_onnx)
    assert t.shape[1:] == (32, 32, 3) and t.dtype == "float32"
    assert o.shape == (None, 32, 32, 3) and o.name == "input"  # dynamic batch stays dynamic
    (tmp_path / "m.keras").write_bytes(b"PK\x03\x04")  # by suffix; the file must exist and not be empty
    assert inspect.detect_format(tmp_path / "m.keras") == "keras"
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    with pytest.raises(Exception, match="neither a TFLite nor an ONNX"):
        inspect.detect_format(bad)
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\0" * 64)
    assert inspect.precision(junk) == "unknown"

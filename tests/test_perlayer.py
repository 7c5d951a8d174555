"""Per-layer quantization error on tiny int8 models (TFLite debugger, ONNX Runtime QDQ debug)."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from mobiledeploy.cli import cli
from mobiledeploy.data.datasets import load_dataset
from mobiledeploy.errors import UsageError
from mobiledeploy.models.artifacts import resolve_models
from mobiledeploy.export.perlayer import TFLITE_FLAG, per_layer_report, short_tflite_name


@pytest.fixture(scope="module")
def tiny_onnx_int8(tiny_onnx, tiny_calib, tmp_path_factory):
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from mobiledeploy.export.recipes import calibration_reader

    path = tmp_path_factory.mktemp("q") / "tiny_int8.onnx"
    quantize_static(str(tiny_onnx), str(path), calibration_reader("input", tiny_calib, batch=1), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return path


@pytest.fixture(scope="module")
def int8_export(tiny_keras, tiny_tflite_int8, tiny_onnx, tiny_onnx_int8, tmp_path_factory):
    d = tmp_path_factory.mktemp("export_q")
    tiny_keras.save(d / "tiny_fp32.keras")
    for src, name in ((tiny_tflite_int8, "tiny_int8.tflite"), (tiny_onnx, "tiny_fp32.onnx"),
                      (tiny_onnx_int8, "tiny_int8.onnx")):
        shutil.copy(src, d / name)
    arts = [("tiny_fp32.keras", "keras", "fp32"), ("tiny_int8.tflite", "tflite", "int8"),
            ("tiny_fp32.onnx", "onnx", "fp32"), ("tiny_int8.onnx", "onnx", "int8")]
    (d / "manifest.json").write_text(json.dumps({
        "schema_version": 1, "model": {"arch": "mobilenet_v1", "resolution": 32, "classes": 10,
                                       "preprocessing": "mobilenet"},
        "artifacts": [{"file": f, "format": fmt, "precision": p} for f, fmt, p in arts],
        "calibration": {"source": "random", "samples": 16, "preprocessing": "mobilenet"}}))
    return d


def test_cli_per_layer_reports_both_int8_artifacts_worst_first(int8_export, tmp_path):
    out = tmp_path / "pl.json"
    r = CliRunner().invoke(cli, ["eval", str(int8_export), "--limit", "16", "--per-layer", "--json", str(out)])
    assert r.exit_code == 0, r.output + r.stderr
    rows = {x["model"].rsplit("/", 1)[-1]: x for x in json.loads(out.read_text())["results"]}
    assert "per_layer" not in rows["tiny_fp32.keras"] and "per_layer" not in rows["tiny_fp32.onnx"]

    tfl = rows["tiny_int8.tflite"]["per_layer"]
    assert tfl["metric"] == "rmse/scale" and tfl["threshold"] == TFLITE_FLAG
    vals = [layer["value"] for layer in tfl["layers"]]
    assert len(vals) >= 20 and vals == sorted(vals, reverse=True)  # worst (largest) first
    assert all(v >= 0 and math.isfinite(v) for v in vals), vals  # reshapes carry no new error
    # rounding noise alone is ~0.29: the bulk of a sane int8 model sits near it
    assert 0.1 < float(np.median(vals)) < 0.7
    assert tfl["flagged"] == sum(v > TFLITE_FLAG for v in vals)
    assert "/" not in tfl["layers"][0]["name"].split("/")[0] or tfl["layers"][0]["tensor"]

    onx = rows["tiny_int8.onnx"]["per_layer"]
    assert onx["metric"] == "sqnr_db"
    sq = [float(layer["value"]) for layer in onx["layers"] if layer["value"] != "nan"]  # "inf": identical
    assert len(sq) >= 20 and sq == sorted(sq)  # worst (lowest SQNR) first
    assert "xmodel_sqnr_db" in onx["layers"][0]  # compared with the float ONNX of the same export
    assert "per-layer rmse/scale" in r.output and "per-layer sqnr_db" in r.output


def test_onnx_per_layer_without_float_model_uses_qdq_pairs(tiny_onnx_int8):
    ref = resolve_models([str(tiny_onnx_int8)])[0]
    assert ref.precision == "int8"
    ds = load_dataset("random", resolution=32, limit=8)
    rep = per_layer_report(ref, dataset=ds)
    assert rep.samples == 8 and rep.layers
    assert all("xmodel_sqnr_db" not in layer.to_json() for layer in rep.layers)
    vals = [layer.value for layer in rep.layers]
    assert not any(math.isnan(v) for v in vals) and vals == sorted(vals)
    assert max(vals) > 20  # (a random-init model has dead and saturated tensors, so only a loose bound)
    from io import StringIO

    from rich.console import Console

    from mobiledeploy.cli.eval import PER_LAYER_TOP, _print_per_layer

    con = Console(width=80, record=True, file=StringIO())
    _print_per_layer(con, rep, wide=False)  # fits 80 columns, every figure shown in full
    text = con.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert all(("inf" if v == math.inf else f"{v:.1f}") in text for v in vals[:PER_LAYER_TOP])


def test_tflite_per_layer_needs_the_float_model(tiny_tflite_int8, tiny_keras, tmp_path):
    ref = resolve_models([str(tiny_tflite_int8)])[0]
    ds = load_dataset("random", resolution=32, limit=4)
    with pytest.raises(UsageError, match="--source-model"):
        per_layer_report(ref, dataset=ds)


def test_short_tflite_names():
    assert short_tflite_name("NumericVerify/m_1/conv1_relu_1/Relu6;m_1/conv1_bn_1/batchnorm/add_1:118") \
        == "conv1_relu_1/Relu6"
    assert short_tflite_name("plain") == "plain"


def test_tflite_recipe_detection_per_channel_vs_per_tensor(tiny_keras, tiny_calib, tiny_tflite_int8, tmp_path):
    """The debugger re-runs the artifact's own recipe: it must tell per-tensor from per-channel weights."""
    import tensorflow as tf

    from conftest import quiet
    from mobiledeploy.export.perlayer import tflite_per_channel

    conv = tf.lite.TFLiteConverter.from_keras_model(tiny_keras)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([x[None]] for x in tiny_calib)
    conv._experimental_disable_per_channel = True
    path = tmp_path / "per_tensor_int8.tflite"
    with quiet():
        path.write_bytes(conv.convert())
    assert tflite_per_channel(tiny_tflite_int8) is True
    assert tflite_per_channel(path) is False


def test_tflite_per_layer_follows_the_recipe_float_layers(tiny_keras, tmp_path):
    """An export that kept its stem in float: --per-layer re-runs the recipe with the same layers in float, so
    they are not reported as int8 layers, and the note says so."""
    from mobiledeploy.export.pipeline import ExportConfig, export_model

    src = tmp_path / "trained.keras"
    tiny_keras.save(str(src))
    res = export_model(ExportConfig(model_path=str(src), formats=("tflite",), precisions=("int8",), calib="random",
                                    calib_samples=8, validate_samples=4, out=str(tmp_path / "e")))
    ref = next(r for r in resolve_models([str(res.out_dir)]) if r.precision == "int8")
    rep = per_layer_report(ref, dataset=load_dataset("random", resolution=32, limit=8))
    assert "conv1, conv_dw_1, conv_pw_1 in float" in rep.note and "bias-corrected" in rep.note
    names = [layer.name for layer in rep.layers]
    assert names and not any(n.split("/")[0] in ("conv1_relu_1", "conv_dw_1_relu_1", "conv_pw_1_relu_1")
                             for n in names), names
    assert any(n.startswith("conv_pw_2") or "conv_dw_2" in n for n in names)

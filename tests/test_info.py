"""`info`: the MobileNet paper's counts, the same totals from Keras/TFLite/ONNX, the CLI."""

from __future__ import annotations

import json
import math
import warnings

import pytest
from click.testing import CliRunner

from mobiledeploy.cli import cli
from mobiledeploy.cost.info import config_stats, keras_stats, model_stats

# MobileNet V1 body: (pointwise output channels, depthwise stride) per block (paper Table 1).
V1_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]


def v1_formula(alpha: float, res: int, classes: int = 1000) -> tuple[int, int]:
    """(MACs, params) from the paper's cost formulas, written independently of the parser.

    MACs: first 3x3 conv + per block D_K*D_K*M*D_F*D_F (depthwise) + M*N*D_F*D_F
    (pointwise) + the classifier (1024a x classes). Channels are int(c * alpha) as Keras
    builds them; stride-2 layers use 'same' padding, so D_F = ceil(D_F / 2).
    Params: kernels + one bias per output channel (BatchNorm folded) + classifier.
    """
    c = int(32 * alpha)
    h = math.ceil(res / 2)
    macs = h * h * 3 * 3 * 3 * c
    params = 3 * 3 * 3 * c + c
    for n, stride in V1_BLOCKS:
        cout = int(n * alpha)
        h = math.ceil(h / stride)
        macs += h * h * 9 * c + h * h * c * cout
        params += 9 * c + c + c * cout + cout
        c = cout
    macs += c * classes
    params += c * classes + classes
    return macs, params


# The paper's Tables 6 and 7 (million mult-adds) and parameters (millions).
PAPER_MACS = {(1.0, 224): 569, (0.75, 224): 325, (0.5, 224): 149, (0.25, 224): 41,
              (1.0, 192): 418, (1.0, 160): 290, (1.0, 128): 186}
PAPER_PARAMS = {1.0: 4.2, 0.75: 2.6, 0.5: 1.3, 0.25: 0.5}


def test_formula_reproduces_the_paper_cells():
    for (alpha, res), want in PAPER_MACS.items():
        macs, _ = v1_formula(alpha, res)
        assert abs(macs / 1e6 - want) / want < 0.01, (alpha, res, macs)
    for alpha, want in PAPER_PARAMS.items():
        _, params = v1_formula(alpha, 224)
        assert round(params / 1e6, 1) == want, (alpha, params)


@pytest.fixture(scope="module")
def paper_grid():
    return {(a, r): config_stats("mobilenet_v1", alpha=a, resolution=r, classes=1000)
            for a in (1.0, 0.75, 0.5, 0.25) for r in (224, 192, 160, 128)}


def test_keras_counts_reproduce_paper_tables_6_and_7(paper_grid):
    for (alpha, res), want in PAPER_MACS.items():
        got = paper_grid[(alpha, res)].macs / 1e6
        assert abs(got - want) / want < 0.01, f"alpha {alpha} res {res}: {got:.1f} M vs paper {want} M"
    for alpha, want in PAPER_PARAMS.items():
        for res in (224, 192, 160, 128):  # parameters do not depend on resolution
            assert round(paper_grid[(alpha, res)].params / 1e6, 1) == want


def test_all_16_grid_cells_follow_the_paper_formula(paper_grid):
    # The 9 cells the paper does not print follow the same formula, exactly.
    for (alpha, res), stats in paper_grid.items():
        macs, params = v1_formula(alpha, res)
        assert stats.macs == macs, (alpha, res)
        assert stats.params == params, (alpha, res)
        assert stats.arch == "mobilenet_v1" and stats.alpha == alpha and stats.resolution == res


def test_per_layer_classes_and_fusion(paper_grid):
    s = paper_grid[(1.0, 224)]
    by = s.by_class()
    assert by["depthwise"]["layers"] == 13 and by["conv1x1"]["layers"] == 13
    assert by["convkxk"]["layers"] == 1 and by["fc"]["layers"] == 1
    assert by["fc"]["macs"] == 1024 * 1000
    # BatchNorm and ReLU are fused into their conv, not layers of their own
    assert not any(layer.type in ("BatchNormalization", "ReLU") for layer in s.layers)
    conv1 = s.layers[0]
    assert conv1.name == "conv1" and set(conv1.fused) == {"conv1_bn", "conv1_relu"}
    assert conv1.output_shape == (1, 112, 112, 32) and conv1.macs == 112 * 112 * 27 * 32
    assert sum(layer.macs for layer in s.layers) == s.macs


@pytest.fixture(scope="module")
def tiny_all(tiny_keras, tiny_tflite, tiny_tflite_int8, tiny_onnx):
    return {"keras": keras_stats(tiny_keras), "tflite": model_stats(tiny_tflite),
            "tflite_int8": model_stats(tiny_tflite_int8), "onnx": model_stats(tiny_onnx)}


def test_tflite_and_onnx_totals_match_keras(tiny_all):
    ref = tiny_all["keras"]
    macs, params = v1_formula(0.25, 32, classes=10)
    assert (ref.macs, ref.params) == (macs, params)
    for name, s in tiny_all.items():
        assert (s.macs, s.params) == (ref.macs, ref.params), name
        heavy = {k: v["macs"] for k, v in s.by_class().items() if v["macs"]}
        assert heavy == {k: v["macs"] for k, v in ref.by_class().items() if v["macs"]}, name
        assert s.resolution == 32 and s.input_shape[1:3] == (32, 32), name
    assert tiny_all["tflite"].format == "tflite" and tiny_all["tflite"].precision == "fp32"
    assert tiny_all["tflite_int8"].precision == "int8"
    assert tiny_all["onnx"].format == "onnx" and tiny_all["onnx"].precision == "fp32"
    # bytes moved follow the element size of the file's tensors
    conv = next(layer for layer in tiny_all["tflite_int8"].layers if layer.op_class == "conv1x1")
    assert conv.bytes_moved(1, 1) * 4 == conv.bytes_moved(4, 4)


def test_unknown_op_is_counted_as_other_with_a_warning():
    import keras

    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inp)
    x = keras.layers.UpSampling2D()(x)
    model = keras.Model(inp, keras.layers.Conv2D(2, 1)(x))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = keras_stats(model)
    assert [layer.op_class for layer in s.layers] == ["convkxk", "other", "conv1x1"]
    assert any("UpSampling2D" in str(w.message) and "other" in str(w.message) for w in caught)
    assert s.macs == 8 * 8 * 27 * 4 + 16 * 16 * 4 * 2


def test_cli_json_for_a_file(tiny_tflite):
    r = CliRunner().invoke(cli, ["info", str(tiny_tflite), "--json", "-"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert {"arch", "alpha", "resolution", "params", "macs", "layers"} <= set(data)
    macs, params = v1_formula(0.25, 32, classes=10)
    assert data["macs"] == macs and data["params"] == params and data["resolution"] == 32
    assert {"name", "type", "output_shape", "params", "macs"} <= set(data["layers"][0])


def test_cli_config_table_and_json_file(tmp_path):
    out = tmp_path / "info.json"
    r = CliRunner().invoke(cli, ["info", "--alpha", "0.25", "--res", "128", "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert "13,570,048 MACs" in r.stdout and "conv_dw_1" in r.stdout
    assert json.loads(out.read_text())["macs"] == v1_formula(0.25, 128)[0]


def test_cli_errors_are_one_line(tmp_path, tiny_tflite):
    runner = CliRunner()
    r = runner.invoke(cli, ["info", str(tiny_tflite), "--alpha", "0.5"])
    assert r.exit_code == 2 and "not both" in r.stderr
    r = runner.invoke(cli, ["info", str(tmp_path / "missing.tflite")])
    assert r.exit_code == 2
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a model at all")
    r = runner.invoke(cli, ["info", str(bad)])
    assert r.exit_code == 2 and r.stderr.startswith("error: broken.onnx is not a readable onnx model")
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    bad = tmp_path / "broken.tflite"
    bad.write_bytes(b"xxxxTFL3 truncated")
    r = runner.invoke(cli, ["info", str(bad)])
    assert r.exit_code == 2 and ("cannot read TFLite model" in r.stderr or "not a readable tflite" in r.stderr)
    r = runner.invoke(cli, ["info", "--alpha", "0.3", "--arch", "mobilenet_v3_small", "--res", "20"])
    assert r.exit_code == 2 and "Traceback" not in r.stderr


def test_quantized_onnx_qdq_and_qoperator_match_keras(tiny_keras, tiny_onnx, tiny_calib, tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": x[None]} for x in tiny_calib[:4]])

        def get_next(self):
            return next(self.it, None)

    ref = keras_stats(tiny_keras)
    for fmt, act in ((QuantFormat.QDQ, QuantType.QInt8), (QuantFormat.QOperator, QuantType.QUInt8)):
        out = tmp_path / f"q_{fmt.name}.onnx"
        quantize_static(str(tiny_onnx), str(out), Reader(), quant_format=fmt, activation_type=act,
                        weight_type=QuantType.QInt8)
        s = model_stats(out)
        assert s.precision == "int8", fmt
        assert (s.macs, s.params) == (ref.macs, ref.params), fmt
        assert {k: v["macs"] for k, v in s.by_class().items() if v["macs"]} == \
            {k: v["macs"] for k, v in ref.by_class().items() if v["macs"]}


def test_keras_file_is_loaded_safely_and_counted(tiny_keras, tmp_path):
    path = tmp_path / "mobilenet_v1_0.25_32.keras"
    tiny_keras.save(path)
    r = CliRunner().invoke(cli, ["info", str(path), "--json", "-"])
    assert r.exit_code == 0, r.output + r.stderr
    data = json.loads(r.stdout)
    assert (data["macs"], data["params"]) == v1_formula(0.25, 32, classes=10)
    assert data["format"] == "keras" and data["arch"] == "mobilenet_v1" and data["alpha"] == 0.25

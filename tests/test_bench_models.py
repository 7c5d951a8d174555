"""Models a user would bring: several inputs/outputs, float16 weights, dynamic dims, int8/uint8 inputs.

Every model is built here (Keras -> TFLite, or ONNX with onnx.helper), then benched
through the child process, and its outputs checked where a reference exists.
"""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from mobiledeploy.bench import core as b
from mobiledeploy import runtimes
from mobiledeploy.cli import cli

from conftest import quiet

FAST = b.BenchSettings(warmup=1, runs=3, timeout_s=120)


@pytest.fixture(scope="module")
def two_head_keras():
    """Two inputs (an image and a vector), two outputs (class scores and a regression)."""
    import keras

    keras.utils.set_random_seed(1)
    img = keras.Input((16, 16, 3), name="image")
    vec = keras.Input((4,), name="meta")
    x = keras.layers.Conv2D(4, 3, activation="relu")(img)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Concatenate()([x, keras.layers.Dense(4)(vec)])
    cls = keras.layers.Dense(5, activation="softmax", name="cls")(x)
    reg = keras.layers.Dense(1, name="reg")(x)
    return keras.Model([img, vec], [cls, reg])


def _convert(model, path, fp16=False):
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if fp16:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    with quiet():
        path.write_bytes(conv.convert())
    return path


@pytest.fixture(scope="module")
def two_head_tflite(two_head_keras, tmp_path_factory):
    d = tmp_path_factory.mktemp("two_head")
    return _convert(two_head_keras, d / "two_head.tflite"), _convert(two_head_keras, d / "two_head_fp16.tflite", True)


def test_multi_input_multi_output_tflite(two_head_keras, two_head_tflite):
    fp32, fp16 = two_head_tflite
    sess = runtimes.open_session(fp32, threads=1)
    assert len(sess.inputs) == 2 and len(sess.outputs) == 2
    feeds = runtimes.random_inputs(sess, seed=3)
    by_rank = {len(v.shape): v for v in feeds.values()}
    ref = two_head_keras.predict([by_rank[4], by_rank[2]], verbose=0)
    got = runtimes.run(sess, feeds)
    ref_by_shape = {r.shape: r for r in ref}
    for out in got:  # outputs may come back in any order: match them by shape
        np.testing.assert_allclose(out, ref_by_shape[out.shape], atol=1e-5)
    for path, precision in [(fp32, "fp32"), (fp16, "fp16")]:
        r = b.bench_model(path, FAST)
        assert r.status == "ok", r.error
        assert r.precision == precision and len(r.inputs) == 2 and r.runs == 3


def _onnx_model(path):
    """Three inputs: A float [N,3,H,W], B uint8 [N,5], C int8 [N,4]; three outputs."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.arange(15, dtype=np.float32).reshape(5, 3) / 10, "W")
    nodes = [
        helper.make_node("ReduceMean", ["A"], ["a_mean"], axes=[2, 3], keepdims=0),
        helper.make_node("Cast", ["B"], ["b_f"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["b_f", "W"], ["b_proj"]),
        helper.make_node("Add", ["a_mean", "b_proj"], ["Y"]),
        helper.make_node("Identity", ["a_mean"], ["Z"]),
        helper.make_node("Cast", ["C"], ["c_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["c_f"], ["S"], keepdims=1),
    ]
    graph = helper.make_graph(
        nodes, "three_inputs",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, ["N", 3, "H", "W"]),
         helper.make_tensor_value_info("B", TensorProto.UINT8, ["N", 5]),
         helper.make_tensor_value_info("C", TensorProto.INT8, ["N", 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 3]),
         helper.make_tensor_value_info("Z", TensorProto.FLOAT, ["N", 3]),
         helper.make_tensor_value_info("S", TensorProto.FLOAT, [1, 1])],
        [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _onnx_fp16(path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.eye(4, dtype=np.float16), "W")
    graph = helper.make_graph([helper.make_node("MatMul", ["X", "W"], ["Y"])], "fp16",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT16, ["batch", 4])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT16, ["batch", 4])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_onnx_dynamic_dims_need_shape_and_then_run(tmp_path):
    path = _onnx_model(tmp_path / "three.onnx")
    r = b.bench_model(path, FAST)
    assert r.status == "error" and r.usage_error
    assert "input 'A' has dynamic dimensions" in r.error and "--shape A=" in r.error
    s = b.BenchSettings(warmup=1, runs=3, shapes=(("A", (1, 3, 8, 8)),))
    r = b.bench_model(path, s)
    assert r.status == "ok", r.error
    shapes = {i["name"]: (i["shape"], i["dtype"]) for i in r.inputs}
    assert shapes == {"A": ([1, 3, 8, 8], "float32"), "B": ([1, 5], "uint8"), "C": ([1, 4], "int8")}
    # the data the harness feeds is of the right kind and the outputs are the graph's
    sess = runtimes.open_session(path, shapes={"A": (1, 3, 8, 8)})
    feeds = runtimes.random_inputs(sess)
    assert feeds["B"].dtype == np.uint8 and feeds["C"].dtype == np.int8
    y, z, s_ = runtimes.run(sess, feeds)
    np.testing.assert_allclose(z, feeds["A"].mean(axis=(2, 3)), rtol=1e-5)
    np.testing.assert_allclose(y - z, feeds["B"].astype(np.float32) @ (np.arange(15).reshape(5, 3) / 10), rtol=1e-4)
    assert s_.item() == feeds["C"].astype(np.float32).sum()


def test_onnx_fp16_and_cli_shape_flag(tmp_path):
    fp16 = _onnx_fp16(tmp_path / "half.onnx")
    three = _onnx_model(tmp_path / "three.onnx")
    out = tmp_path / "r.json"
    res = CliRunner().invoke(cli, ["bench", str(fp16), str(three), "--shape", "A=1x3x4x4", "--runs", "3",
                                   "--warmup", "0", "--json", str(out)])
    # --shape names an input of one model only: the other model reports it as a usage error row
    rows = {r["model"].rsplit("/", 1)[-1]: r for r in json.loads(out.read_text())["results"]}
    assert rows["three.onnx"]["status"] == "ok" and rows["three.onnx"]["inputs"][0]["shape"] == [1, 3, 4, 4]
    assert rows["half.onnx"]["status"] == "error" and "has no input named 'A'" in rows["half.onnx"]["error"]
    assert res.exit_code == 2 and res.stderr.count("error:") == 1
    r = b.bench_model(fp16, FAST)
    assert r.status == "ok" and r.precision == "fp16" and r.inputs[0]["shape"] == [1, 4]


def test_quantized_inputs_are_fed_with_scale_and_zero_point(tiny_tflite_int8):
    sess = runtimes.open_session(tiny_tflite_int8, threads=1)
    spec = sess.inputs[0]
    x = runtimes.random_inputs(sess, seed=0)[spec.name]
    assert x.dtype == np.int8 and x.shape == (1, 32, 32, 3)
    # uniform over the representable range: the quantized values span (almost) all of int8
    assert x.min() <= -120 and x.max() >= 120
    real = (x.astype(np.float32) - spec.zero_point) * spec.scale
    assert -1.1 < real.min() < -0.9 and 0.9 < real.max() < 1.1  # MobileNet input range [-1, 1]


def _onnx_endless_loop(path):
    """A valid ONNX model that never finishes: a Loop with 2**62 iterations."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Add", ["x_in", "one"], ["x_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x_in", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x_out", TensorProto.FLOAT, [1])],
        [numpy_helper.from_array(np.ones(1, np.float32), "one")])
    graph = helper.make_graph(
        [helper.make_node("Loop", ["M", "cond", "X"], ["Y"], body=body)], "endless",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1])],
        [numpy_helper.from_array(np.array(2**62, np.int64), "M"), numpy_helper.from_array(np.array(True), "cond")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_a_model_that_hangs_the_runtime_is_killed_at_the_timeout(tmp_path):
    path = _onnx_endless_loop(tmp_path / "endless.onnx")
    r = b.bench_model(path, b.BenchSettings(warmup=0, runs=1, timeout_s=3))
    assert r.status == "error" and r.error.startswith("timed out after 3 s"), r.error


def test_tflite_dynamic_spatial_dims_need_shape(tmp_path):
    """A fully convolutional Keras model with (None, None) spatial dims, converted to TFLite."""
    import keras

    keras.utils.set_random_seed(2)
    inp = keras.Input((None, None, 3), name="pixels")
    out = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3)(inp))
    path = _convert(keras.Model(inp, out), tmp_path / "fcn.tflite")
    r = b.bench_model(path, FAST)
    assert r.status == "error" and r.usage_error and "has dynamic dimensions" in r.error and "--shape" in r.error
    input_name = r.error.split("'")[1]
    r = b.bench_model(path, b.BenchSettings(warmup=1, runs=3, shapes=((input_name, (1, 20, 24, 3)),)))
    assert r.status == "ok", r.error
    assert r.inputs[0]["shape"] == [1, 20, 24, 3] and r.inputs[0]["name"] == input_name

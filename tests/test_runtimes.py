import numpy as np
import pytest

from mobiledeploy import runtimes
from mobiledeploy.errors import RuntimeFailure, UsageError


@pytest.mark.parametrize("fixture", ["tiny_tflite", "tiny_onnx"])
def test_float_runtimes_match_keras(request, fixture, tiny_keras, tiny_calib):
    path = request.getfixturevalue(fixture)
    sess = runtimes.open_session(path, threads=1)
    y = runtimes.predict(sess, tiny_calib[:4])
    ref = tiny_keras.predict(tiny_calib[:4], verbose=0)
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, atol=1e-5)


def test_int8_tflite_dequantizes_close_to_keras(tiny_tflite_int8, tiny_keras, tiny_calib):
    sess = runtimes.open_session(tiny_tflite_int8, threads=1)
    assert sess.inputs[0].dtype == np.int8 and sess.inputs[0].quantized
    y = runtimes.predict(sess, tiny_calib[:8])
    ref = tiny_keras.predict(tiny_calib[:8], verbose=0)
    assert y.dtype == np.float32
    assert np.abs(y - ref).max() < 0.05  # softmax outputs, int8 step 1/256


def test_detect_format_rejects_other_files(tmp_path):
    p = tmp_path / "model.bin"
    p.write_bytes(b"hello world")
    with pytest.raises(UsageError, match="neither a TFLite nor an ONNX"):
        runtimes.detect_format(p)
    with pytest.raises(UsageError, match="not found"):
        runtimes.detect_format(tmp_path / "missing.tflite")


@pytest.mark.parametrize("suffix", [".tflite", ".onnx"])
def test_random_bytes_fail_cleanly(tmp_path, suffix):
    p = tmp_path / f"garbage{suffix}"
    p.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(RuntimeFailure, match="cannot load"):
        runtimes.open_session(p)


def test_precision_and_random_inputs(tiny_tflite, tiny_tflite_int8, tiny_onnx):
    from mobiledeploy.models.inspect import precision

    assert precision(tiny_tflite) == "fp32" and precision(tiny_tflite_int8) == "int8"
    onnx_sess = runtimes.open_session(tiny_onnx)
    assert precision(tiny_onnx) == "fp32"
    a, b = runtimes.random_inputs(onnx_sess, seed=1), runtimes.random_inputs(onnx_sess, seed=1)
    x = a["input"]
    assert x.shape == (1, 32, 32, 3) and x.dtype == np.float32 and -1 <= x.min() < x.max() <= 1
    np.testing.assert_array_equal(x, b["input"])  # seeded: the same data every time


def test_unknown_shape_name_is_a_usage_error(tiny_tflite):
    with pytest.raises(UsageError, match="has no input named 'nope'"):
        runtimes.open_session(tiny_tflite, shapes={"nope": (1, 32, 32, 3)})

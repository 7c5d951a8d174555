"""Shared fixtures: tiny real models built in the test session (nothing downloaded).

The converters are called directly here (not through ``mobiledeploy export``) so that
tests of bench/eval/estimate do not depend on the exporter they may be testing against.
"""

from __future__ import annotations

import contextlib
import io
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@contextlib.contextmanager
def quiet():
    """Silence the converters' prints to stdout/stderr."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def errors(stderr: str) -> list[str]:
    """stderr without the progress lines piped runs print ("bench PATH ...", "eval PATH ...")."""
    return [ln for ln in stderr.strip().splitlines() if not ln.startswith(("bench ", "eval ", "per-layer "))]


def one_line_error(result, code: int, *needles: str) -> None:
    """The command failed with ``code`` and one last ``error:`` line naming every needle, no traceback."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ")
    for n in needles:
        assert n in last, (n, last)


@pytest.fixture(scope="session")
def tiny_keras():
    """MobileNet V1, alpha 0.25, 32x32x3, 10 classes, fixed seed."""
    import keras

    keras.utils.set_random_seed(0)
    return keras.applications.MobileNet(input_shape=(32, 32, 3), alpha=0.25, weights=None, classes=10)


@pytest.fixture(scope="session")
def tiny_keras_file(tiny_keras, tmp_path_factory):
    """``tiny_keras`` saved as a .keras file (a loaded model: export treats it as trained)."""
    path = tmp_path_factory.mktemp("src") / "tiny_random.keras"
    tiny_keras.save(str(path))
    return path


@pytest.fixture(scope="session")
def tiny_calib():
    rng = np.random.default_rng(0)
    return rng.uniform(-1, 1, size=(16, 32, 32, 3)).astype(np.float32)


@pytest.fixture(scope="session")
def tiny_tflite(tiny_keras, tmp_path_factory):
    import tensorflow as tf

    path = tmp_path_factory.mktemp("tiny") / "tiny_fp32.tflite"
    with quiet():
        path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(tiny_keras).convert())
    return path


@pytest.fixture(scope="session")
def tiny_tflite_int8(tiny_keras, tiny_calib, tmp_path_factory):
    import tensorflow as tf

    path = tmp_path_factory.mktemp("tiny") / "tiny_int8.tflite"
    conv = tf.lite.TFLiteConverter.from_keras_model(tiny_keras)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([x[None]] for x in tiny_calib)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8  # int8 I/O: exercises quantize/dequantize of tensors
    conv.inference_output_type = tf.int8
    with quiet():
        path.write_bytes(conv.convert())
    return path


@pytest.fixture(scope="session")
def tiny_onnx(tiny_keras, tmp_path_factory):
    import tensorflow as tf
    import tf2onnx

    path = tmp_path_factory.mktemp("tiny") / "tiny_fp32.onnx"
    spec = (tf.TensorSpec((None, 32, 32, 3), tf.float32, name="input"),)
    with quiet():
        tf2onnx.convert.from_keras(tiny_keras, input_signature=spec, opset=17, output_path=str(path))
    return path

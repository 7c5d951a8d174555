"""`export --weights imagenet` (Keras' cache) and `--weights PATH`: names, bad files, manifest."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from mobiledeploy.cli import cli
from mobiledeploy.errors import UsageError
from mobiledeploy.models.weights import keras_file_name, parse_keras_name, resolve_weights
from tests.conftest import one_line_error


def _run(*args, env=None):
    return CliRunner(env=env).invoke(cli, ["export", *map(str, args)])




@pytest.mark.parametrize("arch, alpha, res, name", [
    ("mobilenet_v1", 1.0, 224, "mobilenet_1_0_224_tf.h5"),
    ("mobilenet_v1", 0.25, 128, "mobilenet_2_5_128_tf.h5"),
    ("mobilenet_v1", 0.75, 160, "mobilenet_7_5_160_tf.h5"),
    ("mobilenet_v2", 1.0, 224, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5"),
    ("mobilenet_v2", 0.35, 96, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96.h5"),
    ("mobilenet_v3_small", 1.0, 224, "weights_mobilenet_v3_small_224_1.0_float.h5"),
    ("mobilenet_v3_large", 0.75, 224, "weights_mobilenet_v3_large_224_0.75_float.h5"),
])
def test_keras_file_names_round_trip(arch, alpha, res, name):
    assert keras_file_name(arch, alpha, res)[0] == name
    parsed = parse_keras_name(name)
    assert parsed[:2] == (arch, alpha) and parsed[2] in (res, None)


def test_unpublished_resolution_uses_the_224_file_like_keras():
    name, note = keras_file_name("mobilenet_v1", 0.5, 96)
    assert name == "mobilenet_5_0_224_tf.h5" and "224" in note
    with pytest.raises(UsageError, match="no ImageNet weights for mobilenet_v1 alpha=0.3"):
        keras_file_name("mobilenet_v1", 0.3, 224)


def test_missing_imagenet_weights_is_one_line_before_tensorflow(tmp_path):
    code = ("import sys; from mobiledeploy.errors import UsageError\n"
            "from mobiledeploy.export.pipeline import ExportConfig\n"
            "try:\n    ExportConfig(weights='imagenet', arch='mobilenet_v2', alpha=0.5, resolution=128).check()\n"
            "except UsageError as e:\n    print(e)\n"
            "print('tensorflow' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"KERAS_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)})
    msg, tf_loaded = out.stdout.strip().splitlines()
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_128.h5" in msg
    assert str(tmp_path / "models") in msg and tf_loaded == "False"
    r = _run("--weights", "imagenet", "--out", tmp_path / "o", env={"KERAS_HOME": str(tmp_path)})
    one_line_error(r, 2, "mobilenet_1_0_224_tf.h5", "make assets")
    assert not (tmp_path / "o").exists()


def test_imagenet_needs_1000_classes(tmp_path):
    with pytest.raises(UsageError, match="--classes 10"):
        resolve_weights("imagenet", arch="mobilenet_v1", alpha=1.0, resolution=224, classes=10)


def _legacy_h5(model, path):
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)


@pytest.fixture(scope="module")
def keras_home(tmp_path_factory):
    """A Keras cache holding a (random-weights) mobilenet_2_5_128_tf.h5 in the official layout."""
    import keras

    home = tmp_path_factory.mktemp("keras_home")
    (home / "models").mkdir()
    keras.utils.set_random_seed(1)
    model = keras.applications.MobileNet(input_shape=(128, 128, 3), alpha=0.25, weights=None, classes=1000)
    _legacy_h5(model, home / "models" / "mobilenet_2_5_128_tf.h5")
    return home


def test_cached_imagenet_weights_are_used_and_recorded(keras_home, tmp_path):
    import numpy as np

    from mobiledeploy.models.archs import build_model

    out = tmp_path / "o"
    r = _run("--weights", "imagenet", "--alpha", 0.25, "--res", 128, "--quant", "fp32", "--formats", "tflite",
             "--calib", "random", "--calib-samples", 2, "--validate-samples", 2, "--out", out,
             env={"KERAS_HOME": str(keras_home)})
    assert r.exit_code == 0, r.stderr
    w = json.loads((out / "manifest.json").read_text())["model"]
    import hashlib

    want = hashlib.sha256((keras_home / "models" / "mobilenet_2_5_128_tf.h5").read_bytes()).hexdigest()
    assert w["weights"] == {"name": "mobilenet_2_5_128_tf.h5", "sha256": want, "source": "imagenet",
                            "trained": True} and w["trained"] is True
    # the loaded weights are the file's, not a random init
    import os

    os.environ["KERAS_HOME"] = str(keras_home)
    try:
        a = build_model(alpha=0.25, resolution=128, weights="imagenet", seed=5)
        b = build_model(alpha=0.25, resolution=128, weights="imagenet", seed=6)
    finally:
        del os.environ["KERAS_HOME"]
    assert all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))


def test_weights_for_another_alpha_or_resolution_or_truncated(keras_home, tmp_path):
    f = keras_home / "models" / "mobilenet_2_5_128_tf.h5"
    r = _run("--weights", f, "--alpha", 0.5, "--res", 128, "--out", tmp_path / "o")
    one_line_error(r, 2, "is for mobilenet_v1 alpha=0.25 res=128", "mobilenet_5_0_128_tf.h5")
    r = _run("--weights", f, "--alpha", 0.25, "--res", 160, "--out", tmp_path / "o")
    one_line_error(r, 2, "res=128", "mobilenet_2_5_160_tf.h5")
    cut = tmp_path / "mobilenet_2_5_128_tf.h5"
    cut.write_bytes(f.read_bytes()[:5000])
    r = _run("--weights", cut, "--alpha", 0.25, "--res", 128, "--out", tmp_path / "o")
    one_line_error(r, 2, "not a readable HDF5 file", "truncated")
    assert not (tmp_path / "o").exists()


def test_trained_imagenet_model_never_calibrates_on_digits(keras_home, tmp_path):
    env = {"KERAS_HOME": str(keras_home), "MOBILEDEPLOY_ASSETS": str(tmp_path / "no-assets")}
    r = _run("--weights", "imagenet", "--alpha", 0.25, "--res", 128, "--out", tmp_path / "o", env=env)
    one_line_error(r, 2, "needs real calibration images", "--calib", "make assets")
    assert not (tmp_path / "o").exists()

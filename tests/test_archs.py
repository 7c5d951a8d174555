"""mobiledeploy.models.archs: registry, checked builder, safe loader."""

from __future__ import annotations

import numpy as np
import pytest

from mobiledeploy.models.archs import ARCHS, build_model, check_build_args, describe, load_model
from mobiledeploy.errors import UsageError


@pytest.mark.parametrize("kwargs, match", [
    (dict(alpha=0), r"--alpha.*alpha=0"),
    (dict(alpha=-0.5), r"alpha=-0.5"),
    (dict(resolution=31), r"--res.*resolution=31"),
    (dict(classes=0), r"--classes.*classes=0"),
    (dict(depth_multiplier=0), r"depth_multiplier=0"),
    (dict(arch="mobilenet_v2", depth_multiplier=2), r"mobilenet_v2 has no depth multiplier"),
    (dict(dropout=1.0), r"dropout=1.0"),
    (dict(arch="resnet50"), r"unknown architecture 'resnet50'.*mobilenet_v1"),
    (dict(weights="/nonexistent/w.h5"), r"weights file not found"),
])
def test_bad_build_args_name_the_value(kwargs, match):
    with pytest.raises(UsageError, match=match):
        check_build_args(**kwargs)


def test_registry_rows():
    assert set(ARCHS) == {"mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large"}
    assert ARCHS["mobilenet_v1"].preprocessing == "mobilenet"
    assert ARCHS["mobilenet_v3_small"].preprocessing == "raw"


@pytest.fixture(scope="module")
def v1():
    return build_model(alpha=0.25, resolution=32, classes=10, seed=3)


def test_build_is_deterministic_and_described(v1):
    again = build_model(alpha=0.25, resolution=32, classes=10, seed=3)
    for a, b in zip(v1.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)
    info = describe(v1)
    assert (info.arch, info.alpha, info.resolution, info.classes) == ("mobilenet_v1", 0.25, 32, 10)
    assert info.input_shape == (1, 32, 32, 3)


@pytest.mark.parametrize("arch", ["mobilenet_v2", "mobilenet_v3_small"])
def test_other_archs_build(arch):
    m = build_model(arch, alpha=0.5, resolution=40, classes=7)
    assert tuple(m.input_shape) == (None, 40, 40, 3) and tuple(m.output_shape) == (None, 7)
    assert describe(m).arch == arch


def test_weights_round_trip_and_mismatch(v1, tmp_path):
    w = tmp_path / "w.weights.h5"
    v1.save_weights(str(w))
    same = build_model(alpha=0.25, resolution=32, classes=10, seed=99, weights=w)
    np.testing.assert_array_equal(same.get_weights()[0], v1.get_weights()[0])
    with pytest.raises(UsageError, match=r"does not fit mobilenet_v1 alpha=0.5.*expects shape \(3, 3, 3, 16\)"):
        build_model(alpha=0.5, resolution=32, classes=10, weights=w)
    legacy = tmp_path / "full_model.h5"  # the official mobilenet_*_tf.h5 files are legacy HDF5
    v1.save(str(legacy))
    same = build_model(alpha=0.25, resolution=32, classes=10, seed=99, weights=legacy)
    np.testing.assert_array_equal(same.get_weights()[-1], v1.get_weights()[-1])


def test_load_keras_and_refuse_lambda_without_unsafe(v1, tmp_path):
    import keras

    path = tmp_path / "m.keras"
    v1.save(str(path))
    assert describe(load_model(path)).alpha == 0.25

    inp = keras.Input((32, 32, 3))
    out = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(keras.layers.Lambda(lambda x: x * 2)(inp)))
    lam = tmp_path / "lambda.keras"
    keras.Model(inp, out).save(str(lam))
    with pytest.raises(UsageError, match="--unsafe-load"):
        load_model(lam)
    assert load_model(lam, unsafe=True).output_shape == (None, 2)


def test_load_bad_paths(tmp_path):
    with pytest.raises(UsageError, match="model not found"):
        load_model(tmp_path / "nope.keras")
    with pytest.raises(UsageError, match="not a SavedModel"):
        load_model(tmp_path)
    bad = tmp_path / "corrupt.keras"
    bad.write_bytes(b"not a zip")
    with pytest.raises(UsageError, match="cannot load Keras model"):
        load_model(bad)

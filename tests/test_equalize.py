"""Bias correction and cross-layer equalization (mobiledeploy/equalize.py) on tiny random models."""

from __future__ import annotations

import numpy as np
import pytest

from mobiledeploy.export import equalize as E
from mobiledeploy.errors import UsageError


def _smooth_images(rng, n, res):
    """Low-frequency images in [-1, 1] (real photos have a non-zero local mean; noise does not)."""
    from PIL import Image

    small = rng.uniform(0, 255, (n, 4, 4, 3)).astype(np.uint8)
    big = np.stack([np.asarray(Image.fromarray(s).resize((res, res), Image.BILINEAR)) for s in small])
    return big.astype(np.float32) / 127.5 - 1.0


def _tiny_mobilenet(rng):
    """Keras MobileNet V1 0.25/32 with random weights and batch-norm statistics like a trained net's:
    means large against the standard deviations (the case where weight rounding bias hurts)."""
    import keras

    m = keras.applications.MobileNet(input_shape=(32, 32, 3), alpha=0.25, weights=None, classes=10)
    m = keras.Model(m.inputs, m.get_layer("reshape_2").output)
    for layer in m.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(1.0, 0.5, c), rng.normal(0, 2.0, c),
                               rng.uniform(0.01, 0.2, c)])
    return m


def _weight_quantized(model, *, per_channel=True):
    q = E.clone(model)
    for layer, bn in E.conv_targets(q):
        w = layer.get_weights()
        w[0] = w[0] + E.kernel_delta(layer, bn, per_channel=per_channel, qmax=127)
        layer.set_weights(w)
    return q


def _mse(a, b):
    return float(np.mean((np.asarray(a) - np.asarray(b)) ** 2))


def test_quantize_weights_matches_the_runtimes_grid():
    k = np.array([[0.45, -1.0, 0.25], [2.0, 0.01, -0.3]], np.float32).T  # 2 output channels on the last axis
    q = E.quantize_weights(k, channel_axis=-1, qmax=127)
    step = np.abs(k).max(axis=0) / 127
    np.testing.assert_allclose(q / step, np.round(k / step), atol=1e-4)  # integers on each channel's grid
    assert np.abs(q).max(axis=0) == pytest.approx(np.abs(k).max(axis=0))  # max-abs is kept exactly
    # per-channel quantization is invariant to a per-channel (batch-norm) scale; per-tensor is not
    s = np.array([100.0, 0.01], np.float32)
    np.testing.assert_allclose(E.quantize_weights(k, channel_axis=-1, scale=s), q, rtol=1e-6)
    pt = E.quantize_weights(k, channel_axis=-1, per_channel=False, scale=s)
    assert np.abs(pt[:, 1]).max() < np.abs(k[:, 1]).max() / 2  # the small folded channel is crushed


def test_correct_bias_removes_the_mean_shift_of_int8_weights():
    rng = np.random.default_rng(0)
    model = _tiny_mobilenet(rng)
    before = [w.copy() for w in model.get_weights()]
    calib, held_out = _smooth_images(rng, 24, 32), _smooth_images(rng, 24, 32)
    ref = model.predict(held_out, verbose=0)
    corrected = E.correct_bias(model, calib)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)  # the input model is untouched
    err_plain = _mse(ref, _weight_quantized(model).predict(held_out, verbose=0))
    err_bc = _mse(ref, _weight_quantized(corrected).predict(held_out, verbose=0))
    assert err_bc < 0.5 * err_plain, (err_plain, err_bc)
    # only biases moved: kernels are identical, so the runtime quantizes the same weights
    for a, b in zip(model.layers, corrected.layers):
        if hasattr(a, "kernel"):
            np.testing.assert_array_equal(np.asarray(a.kernel), np.asarray(b.kernel))


def test_correct_bias_refuses_bad_arguments():
    model = _tiny_mobilenet(np.random.default_rng(1))
    with pytest.raises(UsageError, match="weight grid"):
        E.correct_bias(model, np.zeros((2, 32, 32, 3), np.float32), weights="int4")
    with pytest.raises(UsageError, match="batch of model inputs"):
        E.correct_bias(model, np.zeros((32, 32, 3), np.float32))


def _dw_pw_model(rng, activation):
    """input -> [depthwise 3x3 -> BN -> act -> 1x1 conv -> BN -> act] x 2, channel ranges spread 1000x."""
    import keras

    x = inp = keras.Input((16, 16, 8))
    for i in range(2):
        x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"dw{i}")(x)
        x = keras.layers.BatchNormalization(name=f"dw{i}_bn")(x)
        x = keras.layers.ReLU(max_value=6.0 if activation == "relu6" else None, name=f"dw{i}_act")(x)
        x = keras.layers.Conv2D(8, 1, use_bias=False, name=f"pw{i}")(x)
        x = keras.layers.BatchNormalization(name=f"pw{i}_bn")(x)
        x = keras.layers.ReLU(name=f"pw{i}_act")(x)
    m = keras.Model(inp, x)
    for i in range(2):
        k = rng.normal(0, 1, (3, 3, 8, 1)) * np.logspace(-1.5, 1.5, 8)[None, None, :, None]
        m.get_layer(f"dw{i}").set_weights([k])
        m.get_layer(f"pw{i}").set_weights([rng.normal(0, 0.3, (1, 1, 8, 8))])
        for bn in (f"dw{i}_bn", f"pw{i}_bn"):
            m.get_layer(bn).set_weights([rng.uniform(0.5, 1.5, 8), rng.normal(0.2, 0.1, 8), rng.normal(0, 0.1, 8),
                                         rng.uniform(0.5, 2.0, 8)])
    return m


def test_equalize_model_preserves_float_and_helps_per_tensor_int8():
    rng = np.random.default_rng(2)
    model = _dw_pw_model(rng, "relu")
    x = rng.uniform(-1, 1, (8, 16, 16, 8)).astype(np.float32)
    ref = model.predict(x, verbose=0)
    eq = E.equalize_model(model)
    assert len(E._cle_pairs(model)) == 2
    np.testing.assert_allclose(eq.predict(x, verbose=0), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    err = _mse(ref, _weight_quantized(model, per_channel=False).predict(x, verbose=0))
    err_eq = _mse(ref, _weight_quantized(eq, per_channel=False).predict(x, verbose=0))
    assert err_eq < 0.2 * err, (err, err_eq)
    # the depthwise channel ranges (batch-norm folded) are now those of the pointwise inputs
    r1 = np.abs(np.asarray(eq.get_layer("dw0").kernel)[..., 0] * E.bn_scale(eq.get_layer("dw0_bn"))).max((0, 1))
    r2 = np.abs(np.asarray(eq.get_layer("pw0").kernel)).max((0, 1, 3))
    np.testing.assert_allclose(r1, r2, rtol=1e-4)


def test_equalize_model_leaves_relu6_pairs_alone_unless_asked():
    rng = np.random.default_rng(3)
    model = _dw_pw_model(rng, "relu6")
    same = E.equalize_model(model)
    for a, b in zip(model.get_weights(), same.get_weights()):
        np.testing.assert_array_equal(a, b)
    uncapped = E.equalize_model(model, relu6="relu")
    assert uncapped.get_layer("dw0_act").max_value is None and model.get_layer("dw0_act").max_value == 6.0
    with pytest.raises(UsageError, match="relu6"):
        E.equalize_model(model, relu6="clip")


def test_fake_quant_is_the_converters_activation_grid():
    x = np.linspace(-0.3, 6.0, 1001).astype(np.float32)
    q = E._fake_quant(x, float(x.min()), float(x.max()))
    step = (6.0 + 0.3) / 255
    assert np.abs(q - x).max() <= step / 2 + 1e-6
    assert len(np.unique(q)) <= 256
    assert E._fake_quant(np.zeros(3, np.float32), -0.3, 6.0).tolist() == [0.0, 0.0, 0.0]  # zero is exact

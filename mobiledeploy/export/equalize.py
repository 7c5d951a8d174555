"""Data-free and data-light fixes applied to a float Keras model before int8 conversion.

Both return a new model with the same layers (the input is left untouched); docs/export.md
says why MobileNet V1 needs bias correction and what each fix does to it.

- ``correct_bias(model, calib)``: empirical bias correction (Nagel et al., 2019, sec. 4.2).
  Weight rounding shifts each convolution's output mean by ``E[conv(x, W_q - W)]``; the
  shift is measured on the calibration samples and removed from the layer's bias (through
  the following batch-norm's moving mean when there is one). ``W_q`` is computed the way
  TFLite and ONNX Runtime quantize weights: symmetric, max-abs, per output channel (or per
  tensor) of the batch-norm-folded kernel.
- ``equalize_model(model)``: cross-layer equalization (sec. 4.1) of depthwise ->
  batch-norm -> ReLU -> 1x1 conv chains: channel i of the depthwise (through its
  batch-norm's gamma and beta) is scaled by 1/s_i and input channel i of the 1x1 kernel by
  s_i, ``s_i = sqrt(r1_i / r2_i)``. ReLU is positively homogeneous, so the float function
  is unchanged; ReLU6 is not: ``relu6="skip"`` (default) leaves such chains alone,
  ``relu6="relu"`` drops the cap first, as the paper does for MobileNet V2.
TensorFlow/Keras are imported inside the functions only.
"""

from __future__ import annotations

import numpy as np

from mobiledeploy.errors import UsageError
from mobiledeploy.quiet import import_keras

WEIGHT_QMAX = {"int8": 127, "int8_reduce_range": 64}  # TFLite / ORT symmetric int8; ORT reduce_range


def quantize_weights(kernel: np.ndarray, *, channel_axis: int, per_channel: bool = True, qmax: int = 127,
                     scale: np.ndarray | None = None) -> np.ndarray:
    """Symmetric max-abs fake quantization of ``kernel * scale`` (``scale``: the folded
    batch-norm scale along ``channel_axis``), per output channel or per tensor, returned
    in the unscaled domain."""
    k = kernel.astype(np.float64)
    shape = [1] * k.ndim
    if scale is not None:
        shape[channel_axis] = -1
        s = scale.astype(np.float64).reshape(shape)
        s = np.where(s == 0, 1.0, s)
    else:
        s = 1.0
    kf = k * s
    if not per_channel:
        mx = np.abs(kf).max()
    else:
        red = tuple(i for i in range(k.ndim) if i != channel_axis % k.ndim)
        mx = np.abs(kf).max(axis=red, keepdims=True)
    step = np.where(mx > 0, mx / qmax, 1.0)
    return (np.clip(np.round(kf / step), -qmax, qmax) * step / s).astype(kernel.dtype)


def consumers(model, layer) -> list:
    """The layers of ``model`` that take ``layer``'s output as an input."""
    out = layer.output
    return [lyr for lyr in model.layers if lyr is not layer and any(t is out for t in _inputs(lyr))]


def _inputs(layer) -> list:
    try:
        x = layer.input
    except (AttributeError, ValueError):
        return []
    return list(x) if isinstance(x, (list, tuple)) else [x]


def conv_targets(model):
    """(conv layer, following BatchNormalization or None) for every Conv2D/DepthwiseConv2D/Dense
    whose bias can absorb a correction (its own bias, or the only consumer being a batch-norm)."""
    keras = import_keras()

    targets = []
    for layer in model.layers:
        if not isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)):
            continue
        cons = consumers(model, layer)
        bn = cons[0] if len(cons) == 1 and isinstance(cons[0], keras.layers.BatchNormalization) else None
        if bn is not None or layer.use_bias:
            targets.append((layer, bn))
    return targets


def _channel_axis(layer) -> int:
    keras = import_keras()

    return 2 if isinstance(layer, keras.layers.DepthwiseConv2D) else -1


def bn_scale(bn) -> np.ndarray:
    w = {v.path.split("/")[-1]: np.asarray(v) for v in bn.weights}
    gamma = w.get("gamma", np.ones_like(w["moving_variance"]))
    return gamma / np.sqrt(w["moving_variance"] + bn.epsilon)


def kernel_delta(layer, bn, *, per_channel: bool, qmax: int) -> np.ndarray:
    k = np.asarray(layer.kernel)
    scale = bn_scale(bn) if bn is not None else None
    axis = _channel_axis(layer)
    if scale is not None and axis == 2 and k.shape[3] != 1:  # depth multiplier > 1: channels are C*M
        scale = scale.reshape(k.shape[2], k.shape[3])
        kq = quantize_weights(k.reshape(*k.shape[:2], -1), channel_axis=2, per_channel=per_channel, qmax=qmax,
                              scale=scale.reshape(-1)).reshape(k.shape)
        return kq - k
    return quantize_weights(k, channel_axis=axis, per_channel=per_channel, qmax=qmax, scale=scale) - k


def _apply(layer, kernel, x):
    """The layer's linear part (no bias, no activation) with ``kernel`` on input ``x``."""
    keras = import_keras()

    if isinstance(layer, keras.layers.Dense):
        return keras.ops.matmul(x, kernel)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return keras.ops.depthwise_conv(x, kernel, strides=layer.strides, padding=layer.padding,
                                        dilation_rate=layer.dilation_rate)
    return keras.ops.conv(x, kernel, strides=layer.strides, padding=layer.padding, dilation_rate=layer.dilation_rate)


def clone(model):
    """A copy of a functional Keras model with its own weights."""
    keras = import_keras()

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def correct_bias(model, calib: np.ndarray, *, per_channel: bool = True, weights: str = "int8",
                 activations: bool = False, batch: int = 8, skip: tuple[str, ...] = ()):
    """Empirical bias correction of every conv/dense layer for int8 weights (see module doc).

    ``calib`` are preprocessed input samples (the export's calibration set); ``weights``
    names the weight grid (``int8``: [-127, 127], TFLite and ONNX Runtime S8S8;
    ``int8_reduce_range``: ONNX Runtime U8S8 with reduce_range). With ``activations``, the
    mean error of rounding each layer's input to 8 bits (per tensor, min/max over
    ``calib``, as the converters calibrate) is corrected too (one more pass). Layers named in
    ``skip`` (kept in float by the converter) are not corrected. Returns a new model (the
    model itself when no layer can be corrected).
    """
    keras = import_keras()

    if weights not in WEIGHT_QMAX:
        raise UsageError(f"unknown weight grid {weights!r}; choose from {', '.join(WEIGHT_QMAX)}")
    calib = np.asarray(calib, np.float32)
    if calib.ndim != len(model.inputs[0].shape) or len(calib) < 1:
        raise UsageError(f"bias correction needs a batch of model inputs, got shape {calib.shape}")
    if not any(layer.name not in skip for layer, _ in conv_targets(model)):
        return model  # nothing to correct (e.g. a SavedModel wrapped in a TFSMLayer, which cannot be cloned)
    out = clone(model)
    targets = [(layer, bn) for layer, bn in conv_targets(out) if layer.name not in skip]
    deltas = [kernel_delta(layer, bn, per_channel=per_channel, qmax=WEIGHT_QMAX[weights]) for layer, bn in targets]
    probe = keras.Model(out.inputs, [layer.input for layer, _ in targets])

    def inputs():
        for i in range(0, len(calib), batch):
            xs = probe([calib[i:i + batch]], training=False)
            yield [keras.ops.convert_to_numpy(x) for x in (xs if isinstance(xs, (list, tuple)) else [xs])]

    ranges = None
    if activations:
        lo, hi = [np.inf] * len(targets), [-np.inf] * len(targets)
        for xs in inputs():
            lo = [min(a, float(x.min())) for a, x in zip(lo, xs)]
            hi = [max(a, float(x.max())) for a, x in zip(hi, xs)]
        ranges = list(zip(lo, hi))
    sums = [0.0] * len(targets)
    for xs in inputs():
        for j, ((layer, _), d, x) in enumerate(zip(targets, deltas, xs)):
            y = keras.ops.convert_to_numpy(_apply(layer, d, x)).astype(np.float64)
            if ranges is not None:
                kq = np.asarray(layer.kernel) + d
                y = y + keras.ops.convert_to_numpy(_apply(layer, kq, _fake_quant(x, *ranges[j]) - x))
            sums[j] = sums[j] + y.reshape(-1, y.shape[-1]).sum(axis=0)
    per_sample = _positions(out, targets, calib[:1])
    for (layer, bn), total, positions in zip(targets, sums, per_sample):
        shift = total / (len(calib) * positions)  # E[conv(x, Wq - W)] per output channel
        if bn is not None:
            names = [v.path.split("/")[-1] for v in bn.weights]
            w = bn.get_weights()
            k = names.index("moving_mean")
            w[k] = (w[k] + shift).astype(w[k].dtype)  # (z + shift - (mean + shift)) * s: shift removed
            bn.set_weights(w)
        else:
            w = layer.get_weights()
            w[1] = (w[1] - shift).astype(w[1].dtype)
            layer.set_weights(w)
    return out


def _fake_quant(x: np.ndarray, lo: float, hi: float, levels: int = 256) -> np.ndarray:
    """Asymmetric 8-bit rounding of ``x`` on the grid of [min(lo, 0), max(hi, 0)], zero exact."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo <= 0:
        return x
    scale = (hi - lo) / (levels - 1)
    zero = np.round(-lo / scale)
    return ((np.clip(np.round(x / scale) + zero, 0, levels - 1) - zero) * scale).astype(x.dtype)


def _positions(model, targets, x1) -> list[int]:
    """Output positions per sample (H*W, or 1 for a dense layer) of each target layer."""
    keras = import_keras()

    outs = keras.Model(model.inputs, [layer.output for layer, _ in targets])([x1], training=False)
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    return [int(np.prod(o.shape[1:-1])) if len(o.shape) > 2 else 1 for o in outs]


def _single_consumer(model, layer, kind):
    cons = consumers(model, layer)
    return cons[0] if len(cons) == 1 and isinstance(cons[0], kind) else None


def _cle_pairs(model):
    """(depthwise, its batch-norm, activation layer, pointwise conv) chains of a functional model."""
    keras = import_keras()

    pairs = []
    for dw in model.layers:
        if not isinstance(dw, keras.layers.DepthwiseConv2D) or dw.use_bias or dw.kernel.shape[3] != 1:
            continue
        bn = _single_consumer(model, dw, keras.layers.BatchNormalization)
        act = bn and _single_consumer(model, bn, (keras.layers.ReLU, keras.layers.Activation))
        pw = act and _single_consumer(model, act, keras.layers.Conv2D)
        if pw is None or not (bn.scale and bn.center) or tuple(pw.kernel_size) != (1, 1) or not relu_like(act):
            continue
        pairs.append((dw, bn, act, pw))
    return pairs


def relu_like(act) -> bool:
    """'relu' for a ReLU (no cap, no slope, threshold 0), 'relu6' for a ReLU capped at 6, else ''."""
    keras = import_keras()

    if isinstance(act, keras.layers.ReLU):
        if float(act.negative_slope) != 0.0 or float(act.threshold) != 0.0:
            return ""
        cap = act.max_value
        return "relu" if cap is None else ("relu6" if float(cap) == 6.0 else "")
    name = getattr(act.activation, "__name__", "")
    return name if name in ("relu", "relu6") else ""


def cle_chains(model, *, relu6: str = "skip") -> list:
    """The (depthwise, batch-norm, activation, 1x1 conv) chains ``equalize_model`` scales with this ``relu6``."""
    return [p for p in _cle_pairs(model) if relu_like(p[2]) == "relu" or relu6 == "relu"]


def equalize_model(model, *, relu6: str = "skip", min_scale: float = 1e-2, max_scale: float = 1e2):
    """Cross-layer equalization of depthwise -> (batch-norm, ReLU) -> 1x1 conv pairs (see module doc).

    ``relu6``: what to do with a pair whose activation is ReLU6 -- ``"skip"`` it (the float
    function is unchanged), or replace the ReLU6 by ``"relu"`` and equalize (changes the
    float function where pre-activations exceed 6). Scales are clipped to
    ``[min_scale, max_scale]``; channels with an all-zero side keep scale 1. Returns a new
    model whose layers keep their names; ``model`` is untouched.
    """
    keras = import_keras()

    if relu6 not in ("skip", "relu"):
        raise UsageError(f"relu6 must be 'skip' or 'relu', got {relu6!r}")
    pairs = cle_chains(model, relu6=relu6)
    uncap = {act.name for _, _, act, _ in pairs if relu_like(act) == "relu6"}

    def clone_layer(layer):
        if layer.name in uncap:
            return keras.layers.ReLU(name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    out = keras.models.clone_model(model, clone_function=clone_layer)
    out.set_weights(model.get_weights())
    for dw, bn, _, pw in pairs:
        dw, bn, pw = out.get_layer(dw.name), out.get_layer(bn.name), out.get_layer(pw.name)
        r1 = np.abs(np.asarray(dw.kernel)[:, :, :, 0] * bn_scale(bn)).max(axis=(0, 1))
        k2 = np.asarray(pw.kernel)
        r2 = np.abs(k2).max(axis=(0, 1, 3))
        with np.errstate(divide="ignore", invalid="ignore"):
            s = np.sqrt(r1 / r2)
        s = np.where(np.isfinite(s) & (s > 0), np.clip(s, min_scale, max_scale), 1.0)
        names = [v.path.split("/")[-1] for v in bn.weights]
        w = bn.get_weights()
        for key in ("gamma", "beta"):
            w[names.index(key)] = (w[names.index(key)] / s).astype(np.float32)
        bn.set_weights(w)
        wp = pw.get_weights()
        wp[0] = (k2 * s[None, None, :, None]).astype(np.float32)
        pw.set_weights(wp)
    return out

"""Learned weight rounding (AdaRound) with bias correction along the quantized path, for full int8.

``adaround(model, calib)`` returns a copy of a Keras model whose convolution and dense kernels
already sit on the int8 grid the converters rebuild (symmetric, max-abs per output channel of
the batch-norm-folded kernel, ``[-127, 127]``, or ``[-64, 64]`` for ONNX Runtime's
``reduce_range``): TFLite and ONNX Runtime then quantize them back to exactly these integers.

Layer by layer, in model order (Nagel et al., 2020, "Up or Down? Adaptive Rounding for
Post-Training Quantization"): each weight is rounded up or down, not to nearest, so that the
layer's output on the calibration samples stays closest to float. The target is the float
model's layer output; the prediction is the layer's output on its input *as the int8 model
sees it* -- earlier layers already rounded, and ReLU6 outputs rounded to the 8-bit grid the
converters give them (``[0, 6]`` in 255 steps) -- so each layer also absorbs the error
arriving from upstream ("asymmetric reconstruction"). The reconstruction loss is quadratic in
the weights, so it is written with the Gram matrices of the layer's inputs (accumulated once
per layer), and the soft rounding variables are optimised with Adam, the rounding regulariser
annealed from beta 20 to 2 after a 20 % warm-up, as in the paper. A layer keeps
round-to-nearest when the learned rounding does not lower its loss. The elements that set a
channel's max-abs keep their value, so the scale the converters compute is unchanged.

Then, per output channel, the mean of what remains (``E[x_q W_q] - E[x W]`` on the
calibration samples) is removed from the layer's bias, through the batch-norm's moving mean
when there is one: bias correction (Nagel et al., 2019) measured along the quantized path,
so that it also takes out the mean shift of the activation rounding upstream.

TensorFlow/Keras are imported inside the functions only.
"""

from __future__ import annotations

import numpy as np

from mobiledeploy.errors import UsageError
from mobiledeploy.export import equalize as E
from mobiledeploy.quiet import import_keras, import_tensorflow

ZETA, GAMMA = 1.1, -0.1  # the rectified sigmoid's stretch (Louizos et al., 2018; AdaRound's choice)
RELU6_LEVELS = 255


def adaround(model, calib: np.ndarray, *, weights: str = "int8", iterations: int = 300, samples: int = 48,
             bias_correction: bool = True, skip: tuple[str, ...] = (), batch: int = 8, log=None):
    """A copy of ``model`` with learned int8 rounding (see module doc); ``iterations=0``: round to
    nearest (only the quantized-path bias correction). Per-channel weights only. ``samples``
    calibration samples (evenly spread over ``calib``) are used; layers in ``skip`` (kept in
    float) and layers of other kinds (grouped convolutions, depth multiplier > 1) are left to
    the converters' round-to-nearest. Returns the model itself when no layer qualifies."""
    keras = import_keras()

    if weights not in E.WEIGHT_QMAX:
        raise UsageError(f"unknown weight grid {weights!r}; choose from {', '.join(E.WEIGHT_QMAX)}")
    qmax = E.WEIGHT_QMAX[weights]
    calib = np.asarray(calib, np.float32)
    if len(calib) > samples:
        calib = calib[np.linspace(0, len(calib) - 1, samples).round().astype(int)]
    targets = [(lyr, bn) for lyr, bn in E.conv_targets(model) if lyr.name not in skip and _supported(lyr)]
    if not targets:
        return model
    q = _path_model(model)
    for layer, bn in targets:
        layer, bn = q.get_layer(layer.name), (q.get_layer(bn.name) if bn is not None else None)
        depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
        w, scale = _folded(layer, bn)
        stats = _input_stats(model.get_layer(layer.name).input, layer.input, model, q, layer, calib, batch)
        wq = _round(w, stats, qmax, iterations, depthwise)
        kernel = (wq / scale[None, :]).reshape(np.asarray(layer.kernel).shape).astype(np.float32)
        lw = layer.get_weights()
        lw[0] = kernel
        layer.set_weights(lw)
        if bias_correction:
            mf, mq = stats["mean_f"], stats["mean_q"]
            shift = ((mq * wq).sum(0) - (mf * w).sum(0) if depthwise else mq @ wq - mf @ w) / scale
            _shift_bias(layer, bn, shift)
        if log:
            log(layer.name)
    out = E.clone(model)
    out.set_weights(q.get_weights())
    return out


def _supported(layer) -> bool:
    keras = import_keras()

    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return layer.kernel.shape[3] == 1
    if isinstance(layer, keras.layers.Conv2D):
        return getattr(layer, "groups", 1) == 1 and type(layer) is keras.layers.Conv2D
    return isinstance(layer, keras.layers.Dense)


def _path_model(model):
    """A copy of ``model`` whose ReLU6 outputs are rounded to the converters' 8-bit grid."""
    keras = import_keras()

    class RoundedReLU6(keras.layers.Layer):
        def call(self, x):
            step = 6.0 / RELU6_LEVELS
            return keras.ops.round(keras.ops.clip(x, 0.0, 6.0) / step) * step

    def clone_layer(layer):
        if isinstance(layer, keras.layers.ReLU) and E.relu_like(layer) == "relu6":
            return RoundedReLU6(name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    q = keras.models.clone_model(model, clone_function=clone_layer)
    q.set_weights(model.get_weights())
    return q


def _folded(layer, bn) -> tuple[np.ndarray, np.ndarray]:
    """The batch-norm-folded kernel as (K, C) -- (taps, channels) for a depthwise layer -- and the scale."""
    keras = import_keras()

    k = np.asarray(layer.kernel).astype(np.float64)
    channels = k.shape[2] if isinstance(layer, keras.layers.DepthwiseConv2D) else k.shape[-1]
    scale = E.bn_scale(bn).astype(np.float64) if bn is not None else np.ones(channels)
    w = k[..., 0].reshape(-1, channels) if isinstance(layer, keras.layers.DepthwiseConv2D) else k.reshape(-1, channels)
    return w * scale[None, :], scale


def _rows(layer, x) -> np.ndarray:
    """The layer's input as rows the kernel multiplies: (P, K), or (P, taps, C) for a depthwise layer."""
    keras = import_keras()
    tf = import_tensorflow()

    if isinstance(layer, keras.layers.Dense):
        return np.asarray(x).reshape(-1, x.shape[-1])
    kh, kw = layer.kernel_size
    if (kh, kw) == (1, 1) and tuple(layer.strides) == (1, 1):
        return np.asarray(x).reshape(-1, x.shape[-1])
    sh, sw = layer.strides
    dh, dw = layer.dilation_rate
    p = tf.image.extract_patches(x, [1, kh, kw, 1], [1, sh, sw, 1], [1, dh, dw, 1], layer.padding.upper()).numpy()
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return p.reshape(-1, kh * kw, x.shape[-1])
    return p.reshape(-1, kh * kw * x.shape[-1])


def _input_stats(float_input, path_input, model, q, layer, calib, batch) -> dict:
    """Gram matrices G = Xq^T Xq, C = Xf^T Xq (per channel for depthwise) and the input means, over calib."""
    keras = import_keras()

    pf, pq = keras.Model(model.inputs, float_input), keras.Model(q.inputs, path_input)
    depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
    acc: dict = {}
    n = 0
    for i in range(0, len(calib), batch):
        xf = _rows(layer, pf([calib[i:i + batch]], training=False)).astype(np.float64)
        xq = _rows(layer, pq([calib[i:i + batch]], training=False)).astype(np.float64)
        if depthwise:
            gram, cross = np.einsum("pkc,plc->ckl", xq, xq), np.einsum("pkc,plc->ckl", xf, xq)
        else:
            gram, cross = xq.T @ xq, xf.T @ xq
        parts = {"G": gram, "C": cross, "mean_f": xf.sum(0), "mean_q": xq.sum(0)}
        for k, v in parts.items():
            acc[k] = acc.get(k, 0) + v
        n += len(xf)
    return {k: v / n for k, v in acc.items()}


def _round(w: np.ndarray, stats: dict, qmax: int, iterations: int, depthwise: bool, *, lam: float = 0.01,
           lr: float = 1e-2) -> np.ndarray:
    """``w`` (K, C) rounded on its per-channel max-abs grid, up or down to minimise the layer's loss."""
    s = np.abs(w).max(0, keepdims=True) / qmax
    s = np.where(s > 0, s, 1.0)
    ws = w / s
    low = np.floor(ws)
    fixed = np.abs(ws) >= qmax - 1e-4  # the max-abs elements: their value sets the converters' scale
    G, C = stats["G"].astype(np.float32), stats["C"].astype(np.float32)
    w32 = w.astype(np.float32)
    target = np.einsum("ckl,kc->lc", C, w32) if depthwise else C.T @ w32  # constant part of the gradient

    def quant(h):
        return np.where(fixed, np.round(ws), np.clip(low + h, -qmax, qmax)) * s

    def loss_grad(wq):  # sum_c wq_c^T G_c wq_c - 2 w_c^T C_c wq_c (+ a constant)
        gw = np.einsum("ckl,lc->kc", G, wq.astype(np.float32)) if depthwise else G @ wq.astype(np.float32)
        return float(np.sum(wq * gw) - 2 * np.sum(wq * target)), 2 * (gw - target)

    nearest = quant((ws - low >= 0.5).astype(np.float64))
    if iterations <= 0:
        return nearest
    frac = np.clip(ws - low, 1e-3, 1 - 1e-3)
    p = np.clip((frac - GAMMA) / (ZETA - GAMMA), 1e-4, 1 - 1e-4)
    v = np.log(p / (1 - p))  # h(v) = frac at the start
    m1, m2 = np.zeros_like(v), np.zeros_like(v)
    warm = int(0.2 * iterations)
    for t in range(iterations):
        sig = 1 / (1 + np.exp(-v))
        stretched = sig * (ZETA - GAMMA) + GAMMA
        h = np.clip(stretched, 0, 1)
        _, g = loss_grad(quant(h))
        dh = g * s
        if t >= warm:  # rounding regulariser sum(1 - |2h - 1|^beta), beta 20 -> 2
            beta = 20 + (2 - 20) * (t - warm) / max(1, iterations - warm)
            a = np.abs(2 * h - 1)
            dh = dh - lam * beta * np.power(a, beta - 1) * np.sign(2 * h - 1) * 2
        gv = dh * (ZETA - GAMMA) * sig * (1 - sig) * ((stretched > 0) & (stretched < 1) & ~fixed)
        m1 = 0.9 * m1 + 0.1 * gv
        m2 = 0.999 * m2 + 0.001 * gv * gv
        v = v - lr * (m1 / (1 - 0.9 ** (t + 1))) / (np.sqrt(m2 / (1 - 0.999 ** (t + 1))) + 1e-8)
    learned = quant((v >= 0).astype(np.float64))
    return learned if loss_grad(learned)[0] <= loss_grad(nearest)[0] else nearest


def _shift_bias(layer, bn, shift: np.ndarray) -> None:
    if bn is not None:
        names = [v.path.split("/")[-1] for v in bn.weights]
        w = bn.get_weights()
        k = names.index("moving_mean")
        w[k] = (w[k] + shift).astype(w[k].dtype)
        bn.set_weights(w)
    else:
        w = layer.get_weights()
        w[1] = (w[1] - shift).astype(w[1].dtype)
        layer.set_weights(w)

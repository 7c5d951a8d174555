"""TF-slim MobileNet V1 frozen graph -> Keras ``keras.applications.MobileNet`` weights, exactly.

A TF-slim MobileNet V1 frozen graph keeps every batch-norm as separate constants
(``gamma``, ``beta``, ``moving_mean``, ``moving_variance`` and the epsilon as ``add/y``),
so the conversion copies numbers; nothing is re-folded. Name map (i = 1..13):

=====================================================  ==========================
TF-slim (``MobilenetV1/...``)                           Keras layer
=====================================================  ==========================
``Conv2d_0/weights``, ``Conv2d_0/BatchNorm/*``          ``conv1``, ``conv1_bn``
``Conv2d_i_depthwise/depthwise_weights``, ``BatchNorm``  ``conv_dw_i``, ``conv_dw_i_bn``
``Conv2d_i_pointwise/weights``, ``BatchNorm``            ``conv_pw_i``, ``conv_pw_i_bn``
``Logits/Conv2d_1c_1x1/{weights,biases}`` minus class 0  ``conv_preds`` (1x1 conv)
=====================================================  ==========================

TF-slim pads stride-2 convolutions ``SAME`` (for an even input: 0 before, 1 after),
which is what Keras' ``ZeroPadding2D(((0, 1), (0, 1)))`` + ``valid`` does. A slim epsilon
that differs from Keras' is absorbed into the moving variance (exact as long as the
result stays >= 0). TensorFlow is imported inside the functions only.
"""

from __future__ import annotations

import numpy as np

from mobiledeploy.quiet import import_keras, import_tensorflow

PREFIX = "MobilenetV1/"
LOGITS = "MobilenetV1/Predictions/Reshape:0"
INPUT = "input:0"
BLOCKS = 13


class ConversionMismatch(RuntimeError):
    """The graph is not a TF-slim MobileNet V1 the converter understands."""


def graph_constants(graph_def) -> dict[str, np.ndarray]:
    """Every ``Const`` node of a GraphDef as a numpy array, by node name."""
    tf = import_tensorflow()

    return {n.name: tf.make_ndarray(n.attr["value"].tensor) for n in graph_def.node if n.op == "Const"}


def _bn(consts: dict, scope: str, keras_eps: float) -> list[np.ndarray]:
    """[gamma, beta, moving_mean, moving_variance] for Keras, epsilon difference absorbed."""
    base = PREFIX + scope + "/BatchNorm/"
    try:
        gamma, beta = consts[base + "gamma"], consts[base + "beta"]
        mean, var = consts[base + "moving_mean"], consts[base + "moving_variance"]
    except KeyError as e:
        raise ConversionMismatch(f"no batch-norm constant {e.args[0]!r} in the graph") from None
    eps_name = f"{PREFIX}{PREFIX}{scope}/BatchNorm/batchnorm/add/y"
    eps = float(consts[eps_name]) if eps_name in consts else keras_eps
    var = var.astype(np.float64) + (eps - keras_eps)
    if (var < 0).any():
        raise ConversionMismatch(f"{scope}: slim epsilon {eps} < Keras epsilon {keras_eps} and a variance "
                                 "is too small to absorb the difference")
    return [gamma, beta, mean, var.astype(np.float32)]


def _const(consts: dict, name: str) -> np.ndarray:
    try:
        return consts[PREFIX + name]
    except KeyError:
        raise ConversionMismatch(f"no constant {PREFIX + name!r} in the graph") from None


def keras_weights(consts: dict[str, np.ndarray], *, keras_eps: float = 1e-3,
                  drop_background: bool = True) -> dict[str, list[np.ndarray]]:
    """Keras layer name -> its weights list, from a slim graph's constants."""
    out = {"conv1": [_const(consts, "Conv2d_0/weights")], "conv1_bn": _bn(consts, "Conv2d_0", keras_eps)}
    for i in range(1, BLOCKS + 1):
        out[f"conv_dw_{i}"] = [_const(consts, f"Conv2d_{i}_depthwise/depthwise_weights")]
        out[f"conv_dw_{i}_bn"] = _bn(consts, f"Conv2d_{i}_depthwise", keras_eps)
        out[f"conv_pw_{i}"] = [_const(consts, f"Conv2d_{i}_pointwise/weights")]
        out[f"conv_pw_{i}_bn"] = _bn(consts, f"Conv2d_{i}_pointwise", keras_eps)
    w, b = _const(consts, "Logits/Conv2d_1c_1x1/weights"), _const(consts, "Logits/Conv2d_1c_1x1/biases")
    if drop_background:
        w, b = w[..., 1:], b[1:]
    out["conv_preds"] = [w, b]
    return out


def describe_slim(consts: dict[str, np.ndarray]) -> dict:
    """alpha (width multiplier) and class count implied by the weight shapes."""
    first = _const(consts, "Conv2d_0/weights")
    logits = _const(consts, "Logits/Conv2d_1c_1x1/biases")
    return {"alpha": float(first.shape[-1]) / 32.0, "classes_with_background": int(logits.shape[0])}


def build_keras(consts: dict[str, np.ndarray], *, resolution: int = 224, include_top: bool = True):
    """A ``keras.applications.MobileNet`` holding the slim weights (1000-class head, background dropped)."""
    keras = import_keras()

    info = describe_slim(consts)
    classes = info["classes_with_background"] - 1
    model = keras.applications.MobileNet(input_shape=(resolution, resolution, 3), alpha=info["alpha"],
                                         weights=None, include_top=include_top, classes=classes)
    eps = {layer.name: layer.epsilon for layer in model.layers if hasattr(layer, "epsilon")}
    keras_eps = set(eps.values())
    if len(keras_eps) != 1:
        raise ConversionMismatch(f"Keras MobileNet batch-norms use several epsilons: {sorted(keras_eps)}")
    weights = keras_weights(consts, keras_eps=keras_eps.pop())
    have = {layer.name for layer in model.layers if layer.weights}
    if not include_top:
        weights.pop("conv_preds")
    if set(weights) != have:
        raise ConversionMismatch(f"layer sets differ: only in slim {sorted(set(weights) - have)}, "
                                 f"only in Keras {sorted(have - set(weights))}")
    for name, arrays in weights.items():
        layer = model.get_layer(name)
        want = [tuple(v.shape) for v in layer.weights]
        got = [tuple(a.shape) for a in arrays]
        if want != got:
            raise ConversionMismatch(f"{name}: Keras expects {want}, the graph has {got}")
        layer.set_weights(arrays)
    return model


def logits_model(model):
    """The Keras MobileNet without its final softmax (output: the ``reshape_2`` logits)."""
    keras = import_keras()

    return keras.Model(model.inputs, model.get_layer("reshape_2").output, name=model.name + "_logits")


def frozen_logits(graph_def, x: np.ndarray, *, drop_background: bool = True) -> np.ndarray:
    """Run the frozen graph with TensorFlow on preprocessed NHWC ``x`` (one sample at a time)."""
    tf = import_tensorflow()

    def imported():
        tf.compat.v1.import_graph_def(graph_def, name="")

    fn = tf.compat.v1.wrap_function(imported, [])
    run = fn.prune(fn.graph.get_tensor_by_name(INPUT), fn.graph.get_tensor_by_name(LOGITS))
    out = np.concatenate([run(tf.constant(x[i:i + 1], tf.float32)).numpy().reshape(1, -1)
                          for i in range(len(x))])
    return out[:, 1:] if drop_background else out


def compare(reference: np.ndarray, converted: np.ndarray) -> dict:
    """max |diff| relative to the reference's max |value|, and top-1 agreement."""
    diff = float(np.max(np.abs(reference - converted)))
    scale = float(np.max(np.abs(reference)))
    return {"max_abs_diff": diff, "max_abs_logit": scale, "relative": diff / scale if scale else diff,
            "top1_agree": float(np.mean(reference.argmax(1) == converted.argmax(1)))}


def save_legacy_h5(model, path) -> None:
    """Write the weights in the legacy HDF5 layout of Keras' application files (``*_tf.h5``)."""
    import h5py

    import_keras()
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(str(path), "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)

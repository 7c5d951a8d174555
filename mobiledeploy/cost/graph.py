"""Per-layer graph parsing: a Keras model, a ``.tflite`` or an ``.onnx`` file -> layers.

Each format is read into the same small intermediate form (``cost.ir.Node``); one shared
pass (``cost.ir.fuse_and_measure``) then fuses what the mobile runtimes fuse and turns
nodes into ``LayerStats``. Counting follows the MobileNet paper (docs/estimate.md): MACs
of the weighted layers only; parameters as deployed, BatchNorm folded into the bias, so
Keras, TFLite and ONNX files of one model agree; a fused activation belongs to its layer.

Only ``keras_nodes`` touches Keras, and only on a model object it is given: this module
never imports TensorFlow. TFLite files are read with the LiteRT interpreter's op and
tensor details, ONNX files (``cost.graph_onnx``) with ``onnx`` and its shape inference.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from mobiledeploy.cost.ir import (  # noqa: F401 - OP_CLASSES, LayerStats, UnknownOpWarning re-exported
    OP_CLASSES, LayerStats, Node, UnknownOpWarning, element_count, fuse_and_measure)
from mobiledeploy.errors import UsageError, one_line
from mobiledeploy.models import inspect


# ---------------------------------------------------------------- Keras

_KERAS_KINDS = {
    "Conv2D": "conv", "DepthwiseConv2D": "depthwise", "Dense": "dense",
    "BatchNormalization": "bn", "ReLU": "act",
    "GlobalAveragePooling2D": "pool", "AveragePooling2D": "pool", "MaxPooling2D": "pool",
    "GlobalMaxPooling2D": "pool",
    "Add": "elementwise", "Multiply": "elementwise", "Subtract": "elementwise",
    "Rescaling": "elementwise", "Normalization": "elementwise", "Softmax": "elementwise",
    "Activation": "elementwise", "LeakyReLU": "elementwise", "PReLU": "elementwise",
    "ZeroPadding2D": "reshape", "Reshape": "reshape", "Flatten": "reshape",
    "Concatenate": "reshape", "Permute": "reshape", "Cropping2D": "reshape",
    "InputLayer": "noop", "Dropout": "noop", "SpatialDropout2D": "noop", "GaussianNoise": "noop",
    "ActivityRegularization": "noop",
}
_FUSABLE_ACTIVATIONS = ("relu", "relu6")


def _keras_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and type(layer).__name__ in ("Functional", "Sequential", "Model"):
            yield from _keras_layers(layer)
        else:
            yield layer


def _keras_tensor_id(t):
    return id(t)


def keras_nodes(model) -> list[Node]:
    """The Keras model's layers as nodes (functional models; nested models flattened)."""
    nodes = []
    for layer in _keras_layers(model):
        t = type(layer).__name__
        kind = _KERAS_KINDS.get(t, "other")
        if t == "Activation":
            act = getattr(getattr(layer, "activation", None), "__name__", "")
            kind = "act" if act in _FUSABLE_ACTIVATIONS else ("noop" if act == "linear" else "elementwise")
        if t == "ReLU" and (getattr(layer, "negative_slope", 0) or getattr(layer, "threshold", 0)):
            kind = "elementwise"
        ins = getattr(layer, "input", None)
        ins = ins if isinstance(ins, (list, tuple)) else ([ins] if ins is not None else [])
        out = layer.output
        n = Node(name=layer.name, type=t, kind=kind,
                 inputs=[_keras_tensor_id(x) for x in ins if x is not None and t != "InputLayer"],
                 in_shapes=[tuple(x.shape) for x in ins if x is not None and t != "InputLayer"],
                 output=_keras_tensor_id(out), out_shape=tuple(out.shape))
        if t == "InputLayer":
            n.inputs, n.in_shapes = [], []
        weights = [tuple(w.shape) for w in layer.weights]
        if kind in ("conv", "depthwise"):
            k = tuple(int(v) for v in layer.kernel_size)
            n.kernel = k
            n.weights = weights
            kshape = tuple(layer.kernel.shape)
            if kind == "conv":
                n.macs_per_out = element_count(k) * int(kshape[2])  # kernel (kh, kw, cin/groups, cout): grouped too
                n.channels = int(kshape[3])
            else:
                n.macs_per_out = element_count(k)
                n.channels = int(n.out_shape[-1])
            if kind == "conv" and getattr(layer, "activation", None) is not None:
                if getattr(layer.activation, "__name__", "linear") not in ("linear",) + _FUSABLE_ACTIVATIONS:
                    warnings.warn(f"layer {layer.name} has a built-in {layer.activation.__name__} "
                                  f"activation; counted as fused", UnknownOpWarning, stacklevel=2)
        elif kind == "dense":
            n.weights = weights
            n.macs_per_out = int(layer.kernel.shape[0])
            n.channels = int(layer.kernel.shape[1])
        elif kind == "bn":
            n.channels = int(n.out_shape[-1])
        elif kind == "other":
            n.weights = weights
        nodes.append(n)
    return nodes


def keras_layers(model) -> list[LayerStats]:
    return fuse_and_measure(keras_nodes(model), channels_last=True)


# ---------------------------------------------------------------- TFLite (LiteRT, no TensorFlow)

_TFLITE_KINDS = {
    "CONV_2D": "conv", "DEPTHWISE_CONV_2D": "depthwise", "FULLY_CONNECTED": "dense",
    "MEAN": "pool", "AVERAGE_POOL_2D": "pool", "MAX_POOL_2D": "pool", "SUM": "pool",
    "REDUCE_MAX": "pool",
    "RELU": "act", "RELU6": "act",
    "ADD": "elementwise", "MUL": "elementwise", "SUB": "elementwise", "DIV": "elementwise",
    "HARD_SWISH": "elementwise", "LOGISTIC": "elementwise", "TANH": "elementwise",
    "SOFTMAX": "elementwise", "QUANTIZE": "elementwise", "DEQUANTIZE": "elementwise",
    "LEAKY_RELU": "elementwise", "PRELU": "elementwise", "RELU_N1_TO_1": "elementwise",
    "PAD": "reshape", "PADV2": "reshape", "RESHAPE": "reshape", "SQUEEZE": "reshape",
    "TRANSPOSE": "reshape", "CONCATENATION": "reshape", "STRIDED_SLICE": "reshape",
    "EXPAND_DIMS": "reshape", "SLICE": "reshape", "SHAPE": "reshape", "PACK": "reshape",
    "GATHER": "reshape", "CAST": "reshape", "SPLIT": "reshape", "UNPACK": "reshape",
}


def tflite_nodes(path: str | Path, shapes: dict | None = None) -> list[Node]:
    """The nodes of a TFLite file, its dynamic inputs fixed by ``shapes`` (see ``inspect.concrete_shapes``)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    fixed = inspect.concrete_shapes(inspect.inputs(path), shapes, path)  # checks the file first
    try:
        it = Interpreter(model_path=str(path),
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        resized = False
        for d in it.get_input_details():
            want = fixed.get(d["name"])
            if want is not None and tuple(int(v) for v in d["shape"]) != tuple(want):
                it.resize_tensor_input(d["index"], list(want), strict=False)
                resized = True
        if resized:
            it.allocate_tensors()
        tensors = {d["index"]: d for d in it.get_tensor_details()}
        ops = it._get_ops_details()
        inputs = {d["index"] for d in it.get_input_details()}
    except (ValueError, RuntimeError) as e:  # UnicodeDecodeError too: names in a damaged file
        raise UsageError(f"cannot read TFLite model {str(path)!r}: {one_line(e, 200)}") from None
    try:
        return _tflite_nodes(ops, tensors, inputs)
    except _Malformed as e:
        raise UsageError(f"cannot read TFLite model {str(path)!r}: {e}") from None
    except (IndexError, KeyError, TypeError, ValueError, OverflowError) as e:
        raise UsageError(f"cannot read TFLite model {str(path)!r}: malformed operator or tensor: "
                         f"{one_line(e, 160)}") from None


class _Malformed(ValueError):
    """An operator whose tensors do not have the rank its op needs (a damaged file)."""


# (least rank, layout) of the weight of the weighted ops, for the dims read from it
_WEIGHT_RANK = {"conv": (4, "(cout, kh, kw, cin)"), "depthwise": (4, "(1, kh, kw, cout)"), "dense": (2, "(out, in)")}


def _tflite_nodes(ops: list, tensors: dict, inputs: set) -> list[Node]:
    produced = {o for op in ops for o in op["outputs"]}

    def is_const(i):
        return i >= 0 and i not in produced and i not in inputs

    # DEQUANTIZE of a constant (fp16 / int8 weights) is weight decoding done at load time.
    const_dq = {op["outputs"][0]: op["inputs"][0] for op in ops
                if op["op_name"] == "DEQUANTIZE" and len(op["inputs"]) and len(op["outputs"])
                and is_const(op["inputs"][0])}

    def shape(i):
        return tuple(int(s) for s in tensors[i]["shape"])

    nodes = []
    for op in ops:
        t = op["op_name"]
        if t == "DEQUANTIZE" and len(op["outputs"]) and op["outputs"][0] in const_dq:
            continue
        kind = _TFLITE_KINDS.get(t, "other")
        ins = [i for i in op["inputs"] if i >= 0]
        act = [i for i in ins if not is_const(i) and i not in const_dq]
        wts = [const_dq.get(i, i) for i in ins if is_const(i) or i in const_dq]
        out = op["outputs"][0] if len(op["outputs"]) else None
        n = Node(name=tensors[out]["name"] if out is not None else f"{t}_{op['index']}", type=t, kind=kind,
                 inputs=act, in_shapes=[shape(i) for i in act], output=out,
                 out_shape=shape(out) if out is not None else ())
        if kind in ("conv", "depthwise", "dense") and len(ins) >= 2:
            w = shape(const_dq.get(ins[1], ins[1]))
            rank, layout = _WEIGHT_RANK[kind]
            if len(w) < rank or any(d < 0 for d in w):
                raise _Malformed(f"operator {op['index']} ({t}) has a weight of shape {w}; a {t} weight "
                                 f"is {layout}")
            n.weights = [shape(i) for i in wts]
            if kind == "conv":  # (cout, kh, kw, cin/groups)
                n.kernel, n.macs_per_out, n.channels = (w[1], w[2]), w[1] * w[2] * w[3], w[0]
            elif kind == "depthwise":  # (1, kh, kw, cout)
                n.kernel, n.macs_per_out, n.channels = (w[1], w[2]), w[1] * w[2], w[3]
            else:  # (out, in)
                n.macs_per_out, n.channels = w[-1], w[0]
        nodes.append(n)
    return nodes


def tflite_layers(path: str | Path, shapes: dict | None = None) -> list[LayerStats]:
    return fuse_and_measure(tflite_nodes(path, shapes), channels_last=True)

"""Per-layer graph parsing: a Keras model, a ``.tflite`` or an ``.onnx`` file -> layers.

Each format is read into the same small intermediate form (``_Node``: op type, kind,
activation input/output shapes, weight shapes, MACs per output element); one shared
pass then fuses what the mobile runtimes fuse and turns nodes into ``LayerStats``.

Counting convention (the MobileNet paper's, Tables 6 and 7):

- MACs are the multiply-accumulates of the weighted layers only: standard, depthwise
  and pointwise convolutions and the fully connected classifier (in Keras MobileNet
  V1 a 1x1 convolution over a 1x1 map). BatchNorm, activations, padding, pooling,
  bias adds and the softmax count 0 MACs (they are still listed, with their bytes).
- Parameters are the deployed weights: convolution/dense kernels plus one bias per
  output channel, where a following BatchNorm is folded into that bias (as every
  converter does). So Keras, TFLite and ONNX files of one model give the same total;
  Keras's own ``count_params()`` is larger by BatchNorm's mean/variance/scale.
- Fused activations (ReLU/ReLU6 right after a conv/dense, BatchNorm after a conv)
  belong to that layer, as LiteRT fuses them; they are not separate layers.

Only ``keras_nodes`` touches Keras, and only on a model object it is given: this module
never imports TensorFlow. TFLite files are read with the LiteRT interpreter's op and
tensor details, ONNX files with ``onnx`` and ``onnx.shape_inference``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mobiledeploy.errors import UsageError

# The op classes of the cost model (mobiledeploy.cost.estimate) and of `info`.
OP_CLASSES = ("conv1x1", "convkxk", "depthwise", "fc", "pool", "elementwise", "reshape", "other")


class UnknownOpWarning(UserWarning):
    """An op the parser cannot classify: counted in class ``other``, never dropped."""


@dataclass(frozen=True)
class LayerStats:
    """One layer as a mobile runtime executes it (fused activations included)."""

    name: str
    type: str  # the op/layer type in the source format (Conv2D, CONV_2D, Conv, ...)
    op_class: str  # one of OP_CLASSES
    output_shape: tuple[int, ...]
    params: int
    macs: int
    in_elems: int = 0  # activation elements read
    weight_elems: int = 0  # parameter elements read
    out_elems: int = 0  # activation elements written
    kernel: tuple[int, ...] = ()
    fused: tuple[str, ...] = ()  # names of the ops folded into this layer

    def bytes_moved(self, act_bytes: int = 4, weight_bytes: int = 4) -> int:
        return (self.in_elems + self.out_elems) * act_bytes + self.weight_elems * weight_bytes

    def to_json(self) -> dict:
        d = asdict(self)
        d["output_shape"] = list(self.output_shape)
        d["kernel"] = list(self.kernel)
        d["fused"] = list(self.fused)
        return d


# ---------------------------------------------------------------- intermediate form

# kinds: conv, depthwise, dense, pool, elementwise, act (fusable activation), bn,
# bias / scale (a per-channel constant add / multiply, folded into the conv before it),
# reshape, noop (identity at inference), other (unknown).
_WEIGHTED = ("conv", "depthwise", "dense")


@dataclass
class _Node:
    name: str
    type: str
    kind: str
    inputs: list = field(default_factory=list)  # activation tensor ids
    in_shapes: list = field(default_factory=list)
    output: object = None  # tensor id
    out_shape: tuple = ()
    weights: list = field(default_factory=list)  # shapes of constant parameters
    macs_per_out: int = 0  # MACs per output element (weighted kinds)
    kernel: tuple = ()
    channels: int = 0  # output channels (for a folded BatchNorm bias)


def _prod(shape) -> int:
    return int(math.prod(int(d) for d in shape)) if len(shape) else 1


def _shape(shape) -> tuple[int, ...]:
    """Concrete shape: unknown/dynamic dims (batch) become 1."""
    out = []
    for d in shape:
        try:
            v = int(d)
        except (TypeError, ValueError):
            v = 1
        out.append(v if v > 0 else 1)
    return tuple(out)


def _spatial_is_one(shape: tuple, *, channels_last: bool) -> bool:
    if len(shape) != 4:
        return True
    hw = shape[1:3] if channels_last else shape[2:4]
    return _prod(hw) == 1


def _fuse_and_measure(nodes: list[_Node], *, channels_last: bool) -> list[LayerStats]:
    """Fold BN / bias adds / ReLU into the weighted op before them; build LayerStats."""
    producer: dict = {}
    consumers: dict = {}
    for n in nodes:
        for t in n.inputs:
            consumers[t] = consumers.get(t, 0) + 1
    merged: list[tuple[_Node, list[str]]] = []  # node, names of the ops fused into it
    for n in nodes:
        if n.kind == "noop":
            if n.inputs and n.output is not None:
                producer[n.output] = producer.get(n.inputs[0])
            continue
        host = producer.get(n.inputs[0]) if len(n.inputs) == 1 else None
        if (host is not None and n.kind in ("act", "bn", "bias", "scale")
                and merged[host][0].kind in _WEIGHTED and consumers.get(n.inputs[0], 0) == 1):
            merged[host][1].append(n.name)
            producer[n.output] = host
            continue
        merged.append((n, []))
        producer[n.output] = len(merged) - 1

    layers = []
    for n, fused in merged:
        out_shape = _shape(n.out_shape)
        out_elems = _prod(out_shape)
        in_elems = sum(_prod(_shape(s)) for s in n.in_shapes)
        w_elems = sum(_prod(w) for w in n.weights)
        if n.kind in _WEIGHTED:  # kernel + one bias per output channel, stored or not
            params = (_prod(n.weights[0]) if n.weights else 0) + n.channels
            macs, w_elems = out_elems * n.macs_per_out, params
        elif n.kind == "bn":  # a BatchNorm on its own: a per-channel scale and shift
            params, macs = 2 * (n.channels or out_shape[-1]), 0
        else:  # constants of elementwise ops (an Add's operand, a Reshape's shape) are not weights
            params, macs = (w_elems if n.kind == "other" else 0), 0
        cls = _op_class(n, out_shape, channels_last=channels_last)
        layers.append(LayerStats(
            name=n.name, type=n.type, op_class=cls, output_shape=out_shape, params=int(params),
            macs=int(macs), in_elems=int(in_elems), weight_elems=int(w_elems),
            out_elems=int(out_elems), kernel=tuple(int(k) for k in n.kernel), fused=tuple(fused)))
    return layers


def _op_class(n: _Node, out_shape: tuple, *, channels_last: bool) -> str:
    if n.kind == "conv":
        if _prod(n.kernel or (1, 1)) > 1:
            return "convkxk"
        return "fc" if _spatial_is_one(out_shape, channels_last=channels_last) else "conv1x1"
    cls = _KIND_CLASS.get(n.kind)
    if cls is None:
        warnings.warn(f"op {n.type!r} ({n.name}) is not classified; counted in class 'other'",
                      UnknownOpWarning, stacklevel=4)
        return "other"
    return cls


_KIND_CLASS = {"depthwise": "depthwise", "dense": "fc", "pool": "pool", "elementwise": "elementwise",
               "act": "elementwise", "bn": "elementwise", "bias": "elementwise", "scale": "elementwise",
               "reshape": "reshape"}


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


def keras_nodes(model) -> list[_Node]:
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
        n = _Node(name=layer.name, type=t, kind=kind,
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
                groups = int(getattr(layer, "groups", 1) or 1)
                n.macs_per_out = _prod(k) * int(kshape[2])  # kernel (kh, kw, cin/groups, cout)
                n.channels = int(kshape[3])
            else:
                n.macs_per_out = _prod(k)
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
    return _fuse_and_measure(keras_nodes(model), channels_last=True)


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


def tflite_nodes(path: str | Path, shapes: dict | None = None) -> list[_Node]:
    """The nodes of a TFLite file, its dynamic inputs fixed by ``shapes`` (see ``inspect.concrete_shapes``)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from mobiledeploy.models import inspect

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
        raise UsageError(f"cannot read TFLite model {str(path)!r}: {' '.join(str(e).split())[:200]}") from None
    produced = {o for op in ops for o in op["outputs"]}

    def is_const(i):
        return i >= 0 and i not in produced and i not in inputs

    # DEQUANTIZE of a constant (fp16 / int8 weights) is weight decoding done at load time.
    const_dq = {op["outputs"][0]: op["inputs"][0] for op in ops
                if op["op_name"] == "DEQUANTIZE" and is_const(op["inputs"][0])}

    def shape(i):
        return tuple(int(s) for s in tensors[i]["shape"])

    nodes = []
    for op in ops:
        t = op["op_name"]
        if t == "DEQUANTIZE" and op["outputs"][0] in const_dq:
            continue
        kind = _TFLITE_KINDS.get(t, "other")
        ins = [i for i in op["inputs"] if i >= 0]
        act = [i for i in ins if not is_const(i) and i not in const_dq]
        wts = [const_dq.get(i, i) for i in ins if is_const(i) or i in const_dq]
        out = op["outputs"][0] if len(op["outputs"]) else None
        n = _Node(name=tensors[out]["name"] if out is not None else f"{t}_{op['index']}", type=t, kind=kind,
                  inputs=act, in_shapes=[shape(i) for i in act], output=out,
                  out_shape=shape(out) if out is not None else ())
        if kind in ("conv", "depthwise", "dense") and len(ins) >= 2:
            w = shape(const_dq.get(ins[1], ins[1]))
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
    return _fuse_and_measure(tflite_nodes(path, shapes), channels_last=True)


def onnx_model_layers(path: str | Path, shapes: dict | None = None):
    """(layers, input shape) of an ONNX file (see mobiledeploy.cost.graph_onnx)."""
    from mobiledeploy.cost import graph_onnx

    nodes, in_shape = graph_onnx.onnx_nodes(path, shapes)
    return _fuse_and_measure(nodes, channels_last=False), in_shape

"""ONNX files -> the layer IR of ``mobiledeploy.cost.ir`` (``onnx`` + shape inference, no TensorFlow).

Handles float graphs (tf2onnx output: NHWC input, Transpose, Conv, Clip, Mul, ...),
QDQ-quantized graphs (DequantizeLinear on initializers = int8 weights; Q/DQ pairs on
activations are folded into the ops around them, as ONNX Runtime fuses them) and
QOperator graphs (QLinearConv, QLinearMul, QLinearGlobalAveragePool, ...).
"""

from __future__ import annotations

import math
from pathlib import Path

from mobiledeploy.cost.ir import LayerStats, Node, fuse_and_measure
from mobiledeploy.errors import UsageError, one_line
from mobiledeploy.models import inspect

_KINDS = {
    "Conv": "conv", "QLinearConv": "conv", "ConvInteger": "conv",
    "Gemm": "dense", "MatMul": "dense", "QLinearMatMul": "dense", "MatMulInteger": "dense",
    "GlobalAveragePool": "pool", "AveragePool": "pool", "MaxPool": "pool", "GlobalMaxPool": "pool",
    "ReduceMean": "pool", "QLinearGlobalAveragePool": "pool", "QLinearAveragePool": "pool",
    "Relu": "act", "Clip": "act", "BatchNormalization": "bn",
    "Add": "elementwise", "Mul": "elementwise", "Sub": "elementwise", "Div": "elementwise",
    "QLinearAdd": "elementwise", "QLinearMul": "elementwise",
    "HardSwish": "elementwise", "HardSigmoid": "elementwise", "Sigmoid": "elementwise",
    "QLinearSigmoid": "elementwise", "Softmax": "elementwise", "QLinearSoftmax": "elementwise",
    "Tanh": "elementwise", "LeakyRelu": "elementwise", "PRelu": "elementwise",
    "Transpose": "reshape", "Reshape": "reshape", "Pad": "reshape", "Squeeze": "reshape",
    "Unsqueeze": "reshape", "Flatten": "reshape", "Concat": "reshape", "Slice": "reshape",
    "Identity": "noop", "Dropout": "noop", "QuantizeLinear": "noop", "DequantizeLinear": "noop",
    "Cast": "noop",
}
# Constant (non-activation) inputs that are parameters, by op: index of weight, bias.
_WEIGHT_INPUTS = {"Conv": (1, 2), "ConvInteger": (1,), "QLinearConv": (3, 8), "Gemm": (1, 2),
                  "MatMul": (1,), "MatMulInteger": (1,), "QLinearMatMul": (3,)}
# Which inputs carry activations (the rest are scales/zero points/constants).
_ACT_INPUTS = {"QLinearConv": (0,), "QLinearMatMul": (0, 3), "QLinearAdd": (0, 3), "QLinearMul": (0, 3),
               "QLinearGlobalAveragePool": (0,), "QLinearAveragePool": (0,), "QLinearSigmoid": (0,),
               "QLinearSoftmax": (0,), "QuantizeLinear": (0,), "DequantizeLinear": (0,),
               "Reshape": (0,), "Pad": (0,), "Clip": (0,), "Squeeze": (0,), "Unsqueeze": (0,),
               "Slice": (0,), "ReduceMean": (0,)}


def _dims(vi) -> tuple | None:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else 1 for d in t.shape.dim)


def onnx_nodes(path: str | Path, shapes: dict | None = None) -> tuple[list[Node], tuple[int, ...]]:
    """The nodes of an ONNX file, its dynamic inputs fixed by ``shapes`` (see ``inspect.concrete_shapes``)."""
    import onnx
    from onnx import shape_inference

    fixed = inspect.concrete_shapes(inspect.inputs(path), shapes, path)  # checks the file first
    try:
        model = onnx.load(str(path))
    except Exception as e:
        raise UsageError(f"cannot read ONNX model {str(path)!r}: {one_line(e, 200)}") from None
    g = model.graph
    from onnx import numpy_helper

    inits = {t.name: _weight_dims(t, path) for t in g.initializer}
    values = {t.name: v for t in g.initializer if (v := _small_ints(t, numpy_helper)) is not None}  # shapes, pads
    for t in g.node:  # Constant nodes are initializers too
        if t.op_type == "Constant" and t.output:
            for a in t.attribute:
                if a.name == "value":
                    inits[t.output[0]] = _weight_dims(a.t, path, f"Constant {t.name or t.output[0]!r}")
                    v = _small_ints(a.t, numpy_helper)
                    if v is not None:
                        values[t.output[0]] = v
    graph_inputs = [i for i in g.input if i.name not in inits]
    for i in graph_inputs:  # concrete shapes (--shape, or a dynamic batch of 1) so shapes propagate
        for d, v in zip(i.type.tensor_type.shape.dim, fixed.get(i.name, ())):
            d.dim_value = int(v)
    try:
        inferred = shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:
        inferred = model
    shapes: dict[str, tuple] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        s = _dims(vi)
        if s is not None:
            shapes[vi.name] = s
    # DequantizeLinear of an initializer: an int8 weight decoded at load time.
    const_dq = {n.output[0]: n.input[0] for n in g.node
                if n.op_type == "DequantizeLinear" and n.input and n.output and n.input[0] in inits}
    for out, src in const_dq.items():
        inits[out] = inits[src]

    nodes: list[Node] = []
    for idx, n in enumerate(g.node):
        try:
            node = _node(n, idx, inits, values, shapes, const_dq, onnx)
        except MalformedModel as e:
            raise UsageError(f"cannot read ONNX model {str(path)!r}: node {n.name or idx!r} ({n.op_type}) "
                             f"{e}") from None
        except (IndexError, KeyError, TypeError, ValueError, OverflowError, ZeroDivisionError) as e:
            raise UsageError(f"cannot read ONNX model {str(path)!r}: node {n.name or idx!r} ({n.op_type}) is "
                             f"malformed: {one_line(e, 160)}") from None
        if node is not None:
            nodes.append(node)
    in_shape = shapes.get(graph_inputs[0].name, ()) if graph_inputs else ()
    return nodes, tuple(int(d) for d in in_shape)


class MalformedModel(ValueError):
    """A node whose weights do not have the rank or sizes its op needs (a damaged file)."""


# Rank a weight needs for the dims read from it: conv (cout, cin/groups, k...), Gemm/MatMul.
_MIN_RANK = {"conv": 3, "dense": 1}


def _weight_dims(t, path, what: str | None = None) -> tuple[int, ...]:
    dims = tuple(int(d) for d in t.dims)
    if any(d < 0 for d in dims):
        raise UsageError(f"cannot read ONNX model {str(path)!r}: {what or f'initializer {t.name!r}'} has a "
                         f"negative dimension {dims}")
    return dims


def _small_ints(t, numpy_helper) -> list | None:
    """The values of a small int64 constant (a shape, pads), or None; a damaged one is None too."""
    import onnx

    if t.data_type != onnx.TensorProto.INT64 or math.prod(t.dims) > 16:
        return None
    try:
        return numpy_helper.to_array(t).tolist()
    except Exception:  # data that does not fit its dims: unknown, as if not given
        return None


def _node(n, idx: int, inits: dict, values: dict, shapes: dict, const_dq: dict, onnx) -> Node | None:
    """One ONNX node as a ``Node`` (None: folded away). Raises on a node that does not fit its op."""
    t = n.op_type
    if t == "Constant" or (t == "DequantizeLinear" and n.output and n.output[0] in const_dq):
        return None

    def is_const(name: str) -> bool:
        return name in inits

    kind = _KINDS.get(t, "other")
    act_idx = _ACT_INPUTS.get(t)
    ins = [x for k, x in enumerate(n.input) if x and (act_idx is None or k in act_idx)]
    act = [x for x in ins if not is_const(x)]
    consts = [x for x in ins if is_const(x)]
    out = n.output[0] if n.output else None
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
    if out is not None and out not in shapes:
        try:
            shapes[out] = _fallback_shape(t, [shapes.get(x) for x in n.input], attrs, inits, values, n)
        except (IndexError, KeyError, TypeError, ValueError, ZeroDivisionError):
            shapes[out] = ()  # attributes or inputs that do not fit the op: shape unknown
    node = Node(name=n.name or f"{t}_{idx}", type=t, kind=kind, inputs=act,
                in_shapes=[shapes.get(x, ()) for x in act], output=out, out_shape=shapes.get(out, ()))
    if kind in ("conv", "dense"):
        widx = _WEIGHT_INPUTS.get(t, (1,))
        names = [n.input[k] for k in widx if k < len(n.input) and n.input[k] and is_const(n.input[k])]
        node.weights = [inits[x] for x in names]
        if names:
            w = inits[names[0]]
            need = 2 if t == "Gemm" else _MIN_RANK[kind]
            if len(w) < need:
                raise MalformedModel(f"has a weight of shape {w}: a {t} weight has at least {need} dimensions")
            if kind == "conv":  # (cout, cin/groups, kh, kw)
                group = int(attrs.get("group", 1))
                node.kernel = tuple(int(k) for k in w[2:])
                node.macs_per_out = int(math.prod(w[1:]))
                node.channels = int(w[0])
                if group > 1 and group == w[0] and w[1] == 1:
                    node.kind = "depthwise"
            elif t == "Gemm" and attrs.get("transB", 0):  # (out, in)
                node.macs_per_out, node.channels = int(w[1]), int(w[0])
            else:  # (in, out)
                node.macs_per_out, node.channels = int(w[0]), int(w[-1])
        act = act[:1]
        node.inputs, node.in_shapes = act, [shapes.get(x, ()) for x in act]
    elif t in ("Mul", "Div", "Add", "Sub", "QLinearMul", "QLinearAdd") and len(act) == 1 and consts:
        # a per-channel constant after a conv (tf2onnx's folded BatchNorm scale/shift)
        node.kind = "scale" if "Mul" in t or t == "Div" else "bias"
        node.weights = [inits[x] for x in consts]
        node.channels = int(math.prod(inits[consts[0]])) if inits[consts[0]] else 1
        if node.channels <= 1:
            node.kind = "elementwise"
    elif t == "BatchNormalization":
        node.channels = int(math.prod(inits.get(n.input[1], (1,)) if len(n.input) > 1 else (1,)))
    return node


def _fallback_shape(op: str, in_shapes: list, attrs: dict, inits: dict, values: dict, n) -> tuple:
    """Output shapes where shape inference stopped (after com.microsoft QLinear* ops)."""
    x = in_shapes[0] if in_shapes else None
    if x is None:
        return ()
    if op == "Pad" and len(n.input) > 1 and isinstance(values.get(n.input[1]), list):
        pads = values[n.input[1]]
        if len(pads) == 2 * len(x):
            return tuple(d + pads[i] + pads[i + len(x)] for i, d in enumerate(x))
    if op == "Reshape" and len(n.input) > 1 and isinstance(values.get(n.input[1]), list):
        want = [x[i] if v == 0 else v for i, v in enumerate(values[n.input[1]])]
        if want.count(-1) == 1:
            known = math.prod(v for v in want if v != -1) or 1
            want[want.index(-1)] = math.prod(x) // known
        return tuple(want)
    if op == "Transpose":
        perm = attrs.get("perm", list(reversed(range(len(x)))))
        return tuple(x[p] for p in perm)
    if op in ("QLinearConv", "ConvInteger"):
        w = inits.get(n.input[3] if op == "QLinearConv" else n.input[1])
        if not w or len(x) != 4:
            return ()
        k = w[2:]
        strides = attrs.get("strides", [1, 1])
        dil = attrs.get("dilations", [1, 1])
        pads = attrs.get("pads", [0, 0, 0, 0])
        auto = attrs.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        hw = []
        for i in range(2):
            if auto in ("SAME_UPPER", "SAME_LOWER"):
                hw.append(-(-x[2 + i] // strides[i]))
            else:
                eff = dil[i] * (k[i] - 1) + 1
                hw.append((x[2 + i] + pads[i] + pads[i + 2] - eff) // strides[i] + 1)
        return (x[0], w[0], *hw)
    if op == "QLinearGlobalAveragePool":
        return (x[0], x[1], 1, 1) if not attrs.get("channels_last", 0) else (x[0], 1, 1, x[3])
    return tuple(x)


def onnx_layers(path: str | Path, shapes: dict | None = None) -> tuple[list[LayerStats], tuple[int, ...]]:
    """(layers, input shape) of an ONNX file (``shapes``: concrete dims for dynamic inputs)."""
    nodes, in_shape = onnx_nodes(path, shapes)
    return fuse_and_measure(nodes, channels_last=False), in_shape

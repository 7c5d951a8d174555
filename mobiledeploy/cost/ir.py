"""The one layer IR of the cost package: nodes read from any format, fused into ``LayerStats``.

Each reader (``cost.graph`` for Keras and TFLite, ``cost.graph_onnx`` for ONNX) turns a
model into ``Node``s (op type, kind, activation input/output shapes, weight shapes, MACs
per output element); ``fuse_and_measure`` then fuses what the mobile runtimes fuse and
measures each layer. The counting convention is described in ``cost.graph``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field

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
class Node:
    """One operator as a reader sees it (before fusion): the form every format is read into."""

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


def element_count(shape) -> int:
    """Number of elements of a tensor of ``shape`` (1 for a scalar)."""
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
    return element_count(hw) == 1


def fuse_and_measure(nodes: list[Node], *, channels_last: bool) -> list[LayerStats]:
    """Fold BN / bias adds / ReLU into the weighted op before them; build LayerStats."""
    producer: dict = {}
    consumers: dict = {}
    for n in nodes:
        for t in n.inputs:
            consumers[t] = consumers.get(t, 0) + 1
    merged: list[tuple[Node, list[str]]] = []  # node, names of the ops fused into it
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
        out_elems = element_count(out_shape)
        in_elems = sum(element_count(_shape(s)) for s in n.in_shapes)
        w_elems = sum(element_count(w) for w in n.weights)
        if n.kind in _WEIGHTED:  # kernel + one bias per output channel, stored or not
            params = (element_count(n.weights[0]) if n.weights else 0) + n.channels
            macs, w_elems = out_elems * n.macs_per_out, params
        elif n.kind == "bn":  # a BatchNorm on its own: a per-channel scale and shift
            params, macs = 2 * (n.channels or (out_shape[-1] if out_shape else 0)), 0
        else:  # constants of elementwise ops (an Add's operand, a Reshape's shape) are not weights
            params, macs = (w_elems if n.kind == "other" else 0), 0
        cls = _op_class(n, out_shape, channels_last=channels_last)
        layers.append(LayerStats(
            name=n.name, type=n.type, op_class=cls, output_shape=out_shape, params=int(params),
            macs=int(macs), in_elems=int(in_elems), weight_elems=int(w_elems),
            out_elems=int(out_elems), kernel=tuple(int(k) for k in n.kernel), fused=tuple(fused)))
    return layers


def _op_class(n: Node, out_shape: tuple, *, channels_last: bool) -> str:
    if n.kind == "conv":
        if element_count(n.kernel or (1, 1)) > 1:
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

"""The built-in architectures' layers without TensorFlow (``info --arch``, ``estimate --arch``).

``arch_nodes`` lays out the nodes ``cost.graph.keras_nodes`` reads from the model
``models.archs.build_model`` builds (``keras.applications`` MobileNet V1, V2, V3 Small
and V3 Large, Keras 3): the same layers in the same order, with the same names, types,
shapes, weight shapes and tensor wiring, computed from the constructors' arithmetic
instead of building the model. ``fuse_and_measure`` then turns them into the same
``LayerStats`` as the Keras path. Layers without an explicit name get Keras'
auto-names as a fresh process gives them (``re_lu``, ``re_lu_1``, ...).

The equality with the Keras-built model is checked by ``tests/test_arch_layers.py``
field by field over a grid of configs; a change in ``keras.applications`` shows there.
"""

from __future__ import annotations

import math

from mobiledeploy.cost.ir import LayerStats, Node, fuse_and_measure
from mobiledeploy.errors import UsageError, one_line
from mobiledeploy.models.archs import check_build_args

__all__ = ["arch_nodes", "arch_layers", "COVERED"]


class _Graph:
    """A channels-last graph under construction: tensors are ints, shapes ``(None, h, w, c)``."""

    def __init__(self, resolution: int):
        self.nodes: list[Node] = []
        self.shapes: dict[int, tuple] = {}
        self.uids: dict[str, int] = {}
        self.next_id = 0
        self.input = self._node("InputLayer", "noop", self._auto("input_layer"), [],
                                (None, resolution, resolution, 3))

    def _auto(self, prefix: str) -> str:
        """Keras' name for an unnamed layer: ``prefix``, then ``prefix_1``, ``prefix_2``, ..."""
        n = self.uids.get(prefix, 0)
        self.uids[prefix] = n + 1
        return prefix if n == 0 else f"{prefix}_{n}"

    def _tensor(self, shape: tuple) -> int:
        t = self.next_id
        self.next_id += 1
        self.shapes[t] = shape
        return t

    def _node(self, type_: str, kind: str, name: str, inputs: list[int], out_shape: tuple, **kw) -> int:
        out = self._tensor(out_shape)
        self.nodes.append(Node(name=name, type=type_, kind=kind, inputs=list(inputs),
                               in_shapes=[self.shapes[i] for i in inputs], output=out,
                               out_shape=out_shape, **kw))
        return out

    def op(self, x: int) -> int:
        """A backend op on a tensor (``x + 3.0``, ``x * (1 / 6)``): not a layer, no node."""
        return self._tensor(self.shapes[x])

    # ---- layers (the arithmetic of keras.layers for channels_last inputs)

    def conv(self, x: int, filters: int, kernel: int, name: str, *, strides: int = 1, padding: str = "same",
             use_bias: bool = False) -> int:
        _, h, w, cin = self.shapes[x]
        if filters < 1:
            raise ValueError(f"layer {name!r} would have {filters} filters")
        oh, ow = _out_size(h, kernel, strides, padding), _out_size(w, kernel, strides, padding)
        weights = [(kernel, kernel, cin, filters)] + ([(filters,)] if use_bias else [])
        return self._node("Conv2D", "conv", name, [x], (None, oh, ow, filters), weights=weights,
                          kernel=(kernel, kernel), macs_per_out=kernel * kernel * cin, channels=filters)

    def depthwise(self, x: int, kernel: int, name: str, *, strides: int = 1, padding: str = "same",
                  depth_multiplier: int = 1) -> int:
        _, h, w, cin = self.shapes[x]
        oh, ow = _out_size(h, kernel, strides, padding), _out_size(w, kernel, strides, padding)
        cout = cin * depth_multiplier
        return self._node("DepthwiseConv2D", "depthwise", name, [x], (None, oh, ow, cout),
                          weights=[(kernel, kernel, cin, depth_multiplier)], kernel=(kernel, kernel),
                          macs_per_out=kernel * kernel, channels=cout)

    def dense(self, x: int, units: int, name: str) -> int:
        cin = self.shapes[x][-1]
        return self._node("Dense", "dense", name, [x], (None, units), weights=[(cin, units), (units,)],
                          macs_per_out=cin, channels=units)

    def bn(self, x: int, name: str) -> int:
        s = self.shapes[x]
        return self._node("BatchNormalization", "bn", name, [x], s, channels=s[-1])

    def relu(self, x: int, name: str | None = None) -> int:
        return self._node("ReLU", "act", name or self._auto("re_lu"), [x], self.shapes[x])

    def activation(self, x: int, fn: str, name: str | None = None) -> int:
        kind = "act" if fn in ("relu", "relu6") else ("noop" if fn == "linear" else "elementwise")
        return self._node("Activation", kind, name or self._auto("activation"), [x], self.shapes[x])

    def elementwise(self, type_: str, xs: list[int], name: str) -> int:
        return self._node(type_, "elementwise", name, xs, self.shapes[xs[0]])

    def rescaling(self, x: int) -> int:
        return self._node("Rescaling", "elementwise", self._auto("rescaling"), [x], self.shapes[x])

    def pad(self, x: int, pads: tuple, name: str) -> int:
        (t, b), (left, r) = pads
        n, h, w, c = self.shapes[x]
        return self._node("ZeroPadding2D", "reshape", name, [x], (n, h + t + b, w + left + r, c))

    def gap(self, x: int, *, keepdims: bool, name: str | None = None) -> int:
        c = self.shapes[x][-1]
        return self._node("GlobalAveragePooling2D", "pool", name or self._auto("global_average_pooling2d"), [x],
                          (None, 1, 1, c) if keepdims else (None, c))

    def dropout(self, x: int, name: str | None = None) -> int:
        return self._node("Dropout", "noop", name or self._auto("dropout"), [x], self.shapes[x])

    def flatten(self, x: int, type_: str = "Flatten", name: str | None = None) -> int:
        s = self.shapes[x]
        return self._node(type_, "reshape", name or self._auto("flatten"), [x], (None, math.prod(s[1:])))


def _out_size(n: int, k: int, s: int, padding: str) -> int:
    return -(-n // s) if padding == "same" else (n - k) // s + 1


def _correct_pad(size: int, k: int) -> tuple:
    """``keras.applications.imagenet_utils.correct_pad`` for a square map."""
    adjust, correct = 1 - size % 2, k // 2
    return ((correct - adjust, correct), (correct - adjust, correct))


def _make_divisible(v: float, divisor: int = 8) -> int:
    """``_make_divisible`` (V2) / ``_depth`` (V3): nearest multiple of 8, at least 8, not 10 % below."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


# ---------------------------------------------------------------- MobileNet V1


def _v1(g: _Graph, alpha: float, classes: int, depth_multiplier: int, dropout: float) -> None:
    x = g.conv(g.input, int(32 * alpha), 3, "conv1", strides=2)
    x = g.relu(g.bn(x, "conv1_bn"), "conv1_relu")
    blocks = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1),
              (512, 1), (512, 1), (1024, 2), (1024, 1))
    for i, (filters, stride) in enumerate(blocks, start=1):
        if stride != 1:
            x = g.pad(x, ((0, 1), (0, 1)), f"conv_pad_{i}")
        x = g.depthwise(x, 3, f"conv_dw_{i}", strides=stride, padding="same" if stride == 1 else "valid",
                        depth_multiplier=depth_multiplier)
        x = g.relu(g.bn(x, f"conv_dw_{i}_bn"), f"conv_dw_{i}_relu")
        x = g.conv(x, int(filters * alpha), 1, f"conv_pw_{i}")
        x = g.relu(g.bn(x, f"conv_pw_{i}_bn"), f"conv_pw_{i}_relu")
    x = g.dropout(g.gap(x, keepdims=True), "dropout")
    x = g.conv(x, classes, 1, "conv_preds", use_bias=True)
    x = g.flatten(x, "Reshape", "reshape_2")
    g.activation(x, "softmax", "predictions")


# ---------------------------------------------------------------- MobileNet V2


def _v2(g: _Graph, alpha: float, classes: int, depth_multiplier: int, dropout: float) -> None:
    x = g.conv(g.input, _make_divisible(32 * alpha), 3, "Conv1", strides=2)
    x = g.relu(g.bn(x, "bn_Conv1"), "Conv1_relu")
    blocks = ((16, 1, 1), (24, 2, 6), (24, 1, 6), (32, 2, 6), (32, 1, 6), (32, 1, 6), (64, 2, 6), (64, 1, 6),
              (64, 1, 6), (64, 1, 6), (96, 1, 6), (96, 1, 6), (96, 1, 6), (160, 2, 6), (160, 1, 6),
              (160, 1, 6), (320, 1, 6))
    for block_id, (filters, stride, expansion) in enumerate(blocks):
        inputs, in_ch = x, g.shapes[x][-1]
        out_ch = _make_divisible(int(filters * alpha))
        prefix = f"block_{block_id}_" if block_id else "expanded_conv_"
        if block_id:
            x = g.conv(x, expansion * in_ch, 1, f"{prefix}expand")
            x = g.relu(g.bn(x, f"{prefix}expand_BN"), f"{prefix}expand_relu")
        if stride == 2:
            x = g.pad(x, _correct_pad(g.shapes[x][1], 3), f"{prefix}pad")
        x = g.depthwise(x, 3, f"{prefix}depthwise", strides=stride, padding="same" if stride == 1 else "valid")
        x = g.relu(g.bn(x, f"{prefix}depthwise_BN"), f"{prefix}depthwise_relu")
        x = g.bn(g.conv(x, out_ch, 1, f"{prefix}project"), f"{prefix}project_BN")
        if in_ch == out_ch and stride == 1:
            x = g.elementwise("Add", [inputs, x], f"{prefix}add")
    x = g.conv(x, _make_divisible(1280 * alpha) if alpha > 1.0 else 1280, 1, "Conv_1")
    x = g.relu(g.bn(x, "Conv_1_bn"), "out_relu")
    g.dense(g.gap(x, keepdims=False), classes, "predictions")


# ---------------------------------------------------------------- MobileNet V3 Small / Large

# (expansion, filters, kernel (None: the model's 5), stride, squeeze-excite, activation (None: hard swish))
_V3_SMALL = ((1, 16, 3, 2, True, "relu"), (72 / 16, 24, 3, 2, False, "relu"), (88 / 24, 24, 3, 1, False, "relu"),
             (4, 40, None, 2, True, None), (6, 40, None, 1, True, None), (6, 40, None, 1, True, None),
             (3, 48, None, 1, True, None), (3, 48, None, 1, True, None), (6, 96, None, 2, True, None),
             (6, 96, None, 1, True, None), (6, 96, None, 1, True, None))
_V3_LARGE = ((1, 16, 3, 1, False, "relu"), (4, 24, 3, 2, False, "relu"), (3, 24, 3, 1, False, "relu"),
             (3, 40, None, 2, True, "relu"), (3, 40, None, 1, True, "relu"), (3, 40, None, 1, True, "relu"),
             (6, 80, 3, 2, False, None), (2.5, 80, 3, 1, False, None), (2.3, 80, 3, 1, False, None),
             (2.3, 80, 3, 1, False, None), (6, 112, 3, 1, True, None), (6, 112, 3, 1, True, None),
             (6, 160, None, 2, True, None), (6, 160, None, 1, True, None), (6, 160, None, 1, True, None))


def _v3_act(g: _Graph, x: int, act: str | None) -> int:
    return g.relu(x) if act == "relu" else g.activation(x, "hard_swish")


def _v3(blocks, last_point_ch: int):
    def build(g: _Graph, alpha: float, classes: int, depth_multiplier: int, dropout: float) -> None:
        x = g.rescaling(g.input)
        x = _v3_act(g, g.bn(g.conv(x, 16, 3, "conv", strides=2), "conv_bn"), None)
        for block_id, (expansion, filters, kernel, stride, se, act) in enumerate(blocks):
            kernel, filters = kernel or 5, _make_divisible(filters * alpha)
            shortcut, in_ch = x, g.shapes[x][-1]
            prefix = f"expanded_conv_{block_id}_" if block_id else "expanded_conv_"
            if block_id:
                x = g.bn(g.conv(x, _make_divisible(in_ch * expansion), 1, f"{prefix}expand"), f"{prefix}expand_bn")
                x = _v3_act(g, x, act)
            if stride == 2:
                x = g.pad(x, _correct_pad(g.shapes[x][1], kernel), f"{prefix}depthwise_pad")
            x = g.depthwise(x, kernel, f"{prefix}depthwise", strides=stride,
                            padding="same" if stride == 1 else "valid")
            x = _v3_act(g, g.bn(x, f"{prefix}depthwise_bn"), act)
            if se:
                x = _se_block(g, x, _make_divisible(in_ch * expansion), prefix)
            x = g.bn(g.conv(x, filters, 1, f"{prefix}project"), f"{prefix}project_bn")
            if stride == 1 and in_ch == filters:
                x = g.elementwise("Add", [shortcut, x], f"{prefix}add")
        x = g.conv(x, _make_divisible(g.shapes[x][-1] * 6), 1, "conv_1")
        x = _v3_act(g, g.bn(x, "conv_1_bn"), None)
        x = g.gap(x, keepdims=True)
        last = _make_divisible(last_point_ch * alpha) if alpha > 1.0 else last_point_ch
        x = _v3_act(g, g.conv(x, last, 1, "conv_2", use_bias=True), None)
        if dropout > 0:
            x = g.dropout(x)
        x = g.flatten(g.conv(x, classes, 1, "logits", use_bias=True))
        g.activation(x, "softmax", "predictions")
    return build


def _se_block(g: _Graph, inputs: int, filters: int, prefix: str) -> int:
    x = g.gap(inputs, keepdims=True, name=f"{prefix}squeeze_excite_avg_pool")
    x = g.conv(x, _make_divisible(filters * 0.25), 1, f"{prefix}squeeze_excite_conv", use_bias=True)
    x = g.relu(x, f"{prefix}squeeze_excite_relu")
    x = g.conv(x, filters, 1, f"{prefix}squeeze_excite_conv_1", use_bias=True)
    x = g.op(g.relu(g.op(x)))  # hard sigmoid: ReLU(6)(x + 3) * (1 / 6)
    return g.elementwise("Multiply", [inputs, x], f"{prefix}squeeze_excite_mul")


_BUILDERS = {"mobilenet_v1": _v1, "mobilenet_v2": _v2,
             "mobilenet_v3_small": _v3(_V3_SMALL, 1024), "mobilenet_v3_large": _v3(_V3_LARGE, 1280)}
#: the architectures laid out here (the others need Keras)
COVERED = tuple(_BUILDERS)


def arch_nodes(arch: str, *, alpha: float = 1.0, resolution: int = 224, classes: int = 1000,
               depth_multiplier: int = 1, dropout: float = 1e-3) -> list[Node]:
    """The nodes ``keras_nodes`` reads from ``build_model(arch, ...)``, without building it.
    Arguments are checked by ``models.archs.check_build_args`` first, as ``build_model`` does."""
    a = check_build_args(arch, alpha=alpha, resolution=resolution, classes=classes,
                         depth_multiplier=depth_multiplier, dropout=dropout)
    g = _Graph(int(resolution))
    try:
        _BUILDERS[a.name](g, float(alpha), int(classes), int(depth_multiplier), float(dropout))
    except ValueError as e:  # as build_model words Keras' refusal
        raise UsageError(f"keras cannot build {a.name} with alpha={alpha}, resolution={resolution}: "
                         f"{one_line(e, None)}") from None
    return g.nodes


def arch_layers(arch: str, **kw) -> list[LayerStats]:
    """``LayerStats`` of a built-in architecture, equal to ``keras_layers(build_model(arch, ...))``."""
    return fuse_and_measure(arch_nodes(arch, **kw), channels_last=True)

"""Layers kept in float inside a full-int8 artifact ("selective quantization").

``--float-layers`` names Keras layers (convolutions or dense layers); each is kept in float
with what the converters fuse into it (the batch-norm and activation layers that follow it
alone). The converters are told by node name: TFLite through ``mlir_quantize(...,
denylisted_nodes=...)`` on the calibrated model, ONNX Runtime through
``quantize_static(..., nodes_to_exclude=...)``. Both name a node after the TensorFlow ops
it came from (``model/conv_dw_1_1/depthwise``; TFLite joins fused names with ``;``), so a
node belongs to a layer when one of its ``/``-separated segments is the layer's name,
optionally with Keras' ``_<n>`` suffix. tf2onnx gives plain convolutions generic names
(``Conv__650``): in ONNX a convolution also belongs to the layer whose batch-norm or
activation node consumes its output.

``auto`` (the default) keeps the stem (the first three convolution layers) in float for
trained weights and nothing for random init (docs/export.md says why). TensorFlow/Keras
are imported inside the functions only.
"""

from __future__ import annotations

import re

from mobiledeploy.errors import UsageError
from mobiledeploy.export.equalize import consumers
from mobiledeploy.quiet import import_keras

STEM_LAYERS = 3
FUSED = ("BatchNormalization", "ReLU", "Activation")  # not padding: TFLite fuses it into the *next* conv


def parse_spec(text: str | None) -> tuple[str, ...] | None:
    """``--float-layers``: None for ``auto``, () for ``none``, else the comma-separated names."""
    if text is None or text.strip().lower() == "auto":
        return None
    if text.strip().lower() == "none":
        return ()
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise UsageError("--float-layers needs 'auto', 'none' or a comma list of Keras layer names")
    return names


def weighted_layers(model) -> list:
    keras = import_keras()

    return [lyr for lyr in model.layers
            if isinstance(lyr, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense))]


def stem(model, n: int = STEM_LAYERS) -> tuple[str, ...]:
    """The first ``n`` convolution/dense layers of the model, in order."""
    return tuple(lyr.name for lyr in weighted_layers(model)[:n])


def resolve(model, names: tuple[str, ...]) -> tuple[str, ...]:
    """Check ``names`` against the model's convolution/dense layers; UsageError names the unknown ones."""
    known = [lyr.name for lyr in weighted_layers(model)]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"--float-layers: no convolution or dense layer named {', '.join(map(repr, unknown))} "
                         f"in the model (its first ones: {', '.join(known[:6])})")
    return tuple(n for n in known if n in names)  # model order, no duplicates


def with_fused(model, names: tuple[str, ...]) -> tuple[str, ...]:
    """``names`` plus the batch-norm/activation layers the converters fuse into each; with the classifier
    (the last convolution/dense layer), its tail as well (``classifier_tail``)."""
    out = []
    for name in names:
        layer = model.get_layer(name)
        out.append(name)
        while True:
            cons = consumers(model, layer)
            if len(cons) != 1 or type(cons[0]).__name__ not in FUSED:
                break
            layer = cons[0]
            out.append(layer.name)
    if keeps_output(model, names):
        out += [n for n in classifier_tail(model) if n not in out]
    return tuple(out)


def keeps_output(model, names: tuple[str, ...]) -> bool:
    """Whether ``names`` keeps the model's output in float: the classifier is among them (its tail with it).
    TFLite names the output operator after the graph's output tensor (``Identity``), not after its layer, so
    the TFLite exporter denylists that tensor's producer by the output's name."""
    weighted = weighted_layers(model)
    return bool(weighted) and weighted[-1].name in names and classifier_tail(model) is not None


def classifier_tail(model) -> tuple[str, ...] | None:
    """The layers from the classifier's output (the last convolution/dense layer) to the model's output
    (reshape, flatten, softmax...), so that a float classifier's logits stay float up to the output: otherwise
    the converters quantize them before the softmax, and classes less than one step apart tie or swap. None
    when they do not form a single chain to the model's only output."""
    weighted = weighted_layers(model)
    if not weighted or len(model.outputs) != 1:
        return None
    out, layer = [], weighted[-1]
    while layer.output is not model.outputs[0]:
        cons = consumers(model, layer)
        if len(cons) != 1:
            return None
        layer = cons[0]
        out.append(layer.name)
    return tuple(out)


def matching_nodes(node_names, layers: tuple[str, ...]) -> list[str]:
    """The converter node names that belong to one of ``layers`` (see the module doc)."""
    pats = [re.compile(re.escape(name) + r"(_\d+)?") for name in layers]
    return [n for n in node_names
            if any(p.fullmatch(seg) for part in n.split(";") for seg in part.split("/") for p in pats)]

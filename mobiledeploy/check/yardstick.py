"""The yardstick: a small fixed ONNX model that measures how fast *this* machine is.

``max_latency_ms`` budgets are written on one machine and checked on others (a laptop,
a faster or slower CI runner). ``mobiledeploy check`` measures this yardstick in the same
run, interleaved with the artifact, and scales the budget by how much faster or slower
the yardstick runs here than on the machine the budget was written on::

    limit_here = max_latency_ms * yardstick_here_ms / yardstick_reference_ms

The model is generated with ``onnx.helper`` (no TensorFlow, nothing downloaded), from a
fixed seed, so it is byte-for-byte the same everywhere: a MobileNet-like stack of a
3x3 convolution and depthwise-separable blocks at 32x32, on ONNX Runtime. Its
``YARDSTICK_VERSION`` goes into every report; changing the graph means bumping it and
re-measuring the reference figures.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from mobiledeploy import io

YARDSTICK_VERSION = 1
_BLOCKS = ((32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1))  # (cin, cout, stride)
_RES = 64


def yardstick_bytes() -> bytes:
    """The serialized yardstick model (deterministic)."""
    return conv_net_bytes(resolution=_RES, blocks=_BLOCKS, seed=20261123)


def conv_net_bytes(*, resolution: int, blocks: tuple[tuple[int, int, int], ...] = _BLOCKS, seed: int = 0) -> bytes:
    """A MobileNet-like ONNX graph (NCHW float input ``input`` 1x3xRxR): a stride-2 3x3
    convolution, then depthwise-separable ``blocks`` of (cin, cout, stride), ReLU6,
    global average pooling. Also used by tests and benchmarks as a TF-free model."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def weight(name, shape):
        fan_in = int(np.prod(shape[1:]))
        inits.append(numpy_helper.from_array(
            (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32), name))
        return name

    def conv(x, name, cin, cout, k, stride, group=1):
        w = weight(f"{name}_w", (cout, cin // group, k, k))
        b = f"{name}_b"
        inits.append(numpy_helper.from_array(np.zeros(cout, np.float32), b))
        pad = k // 2
        nodes.append(helper.make_node("Conv", [x, w, b], [f"{name}_c"], strides=[stride, stride],
                                      pads=[pad, pad, pad, pad], group=group))
        nodes.append(helper.make_node("Clip", [f"{name}_c", "zero", "six"], [f"{name}_r"]))
        return f"{name}_r"

    inits += [numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
              numpy_helper.from_array(np.array(6.0, np.float32), "six")]
    x = conv("input", "stem", 3, 32, 3, 2)
    for i, (cin, cout, stride) in enumerate(blocks):
        x = conv(x, f"dw{i}", cin, cin, 3, stride, group=cin)
        x = conv(x, f"pw{i}", cin, cout, 1, 1)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"]))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["output"]))
    graph = helper.make_graph(
        nodes, "mobiledeploy_yardstick",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, resolution, resolution])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, blocks[-1][1]])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="mobiledeploy-yardstick")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def write_yardstick(directory: str | os.PathLike | None = None) -> Path:
    """Write the yardstick to ``directory`` (default: a fresh temporary directory)."""
    d = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="mobiledeploy-yardstick-"))
    return io.write_bytes(d / f"yardstick_v{YARDSTICK_VERSION}.onnx", yardstick_bytes())

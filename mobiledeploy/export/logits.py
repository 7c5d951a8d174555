"""Pre-softmax logits of a Keras model and of the artifacts exported from it.

A classifier's softmax hides most of what went wrong before it: on a randomly
initialised MobileNet every input gives (almost) the same probabilities, and an int8
softmax output rounds them all to zero. Validation therefore compares logits, the
softmax's input, whenever the model ends in a softmax:

- Keras: a twin model that shares the source's layers and stops before the softmax
  (a final ``Dense(activation="softmax")`` is re-applied with a linear activation and
  the same weights).
- TFLite and ONNX: a copy of the shipped file in which the softmax's input tensor is
  also a graph output (nothing else changes: same operators, weights and quantization
  parameters), run with the same runtime. Quantized logits are dequantized with their
  tensor's scale and zero point.

A model without exactly one softmax (a logits model, a wrapped SavedModel) is compared
on its outputs instead. TensorFlow is never imported here.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np

from mobiledeploy import runtimes
from mobiledeploy.quiet import import_keras
from mobiledeploy.runtimes import detect_format

OUTPUTS, LOGITS = "outputs", "logits"


def keras_logits_model(model):
    """A Keras model giving ``model``'s pre-softmax tensor, or None when it does not end in a softmax."""
    keras = import_keras()

    layers = getattr(model, "layers", None)
    if not layers:
        return None
    last = layers[-1]
    try:
        pre = last.input
    except (AttributeError, ValueError):  # not a functional layer with one inbound node
        return None
    if isinstance(last, keras.layers.Softmax) or (
            isinstance(last, keras.layers.Activation) and _is_softmax(last.activation)):
        return keras.Model(model.inputs, pre, name=f"{model.name}_logits")
    if isinstance(last, keras.layers.Dense) and _is_softmax(last.activation):
        cfg = dict(last.get_config(), activation="linear", name=f"{last.name}_logits")
        linear = keras.layers.Dense.from_config(cfg)
        out = linear(pre)
        linear.set_weights(last.get_weights())
        return keras.Model(model.inputs, out, name=f"{model.name}_logits")
    return None


def keras_outputs(model, x: np.ndarray, *, batch: int = 8) -> np.ndarray:
    """The Keras model's float outputs on ``x`` (eager, inference mode, no tracing)."""
    with warnings.catch_warnings():  # Keras 3 warns when a single-input model is called with a bare tensor
        warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match")
        parts = [np.asarray(model(x[i:i + batch], training=False), np.float32) for i in range(0, len(x), batch)]
    return np.concatenate(parts) if parts else np.zeros((0,), np.float32)


def _is_softmax(fn) -> bool:
    return fn is not None and getattr(fn, "__name__", "") == "softmax"


# ------------------------------------------------------------------ artifacts


def tap_tflite(data: bytes) -> bytes | None:
    """``data`` with the input of its only SOFTMAX op added as a second output (None: no single softmax)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    graph = model.subgraphs[0]
    found = [op for op in graph.operators if codes[op.opcodeIndex] == schema.BuiltinOperator.SOFTMAX]
    if len(found) != 1:
        return None
    graph.outputs = [int(i) for i in graph.outputs] + [int(found[0].inputs[0])]
    for buf in model.buffers or ():  # data stored after the flatbuffer (ai-edge-quantizer writes it so): inline it
        if (buf.offset or 0) > 1 and buf.size:
            buf.data, buf.offset, buf.size = np.frombuffer(data, np.uint8, buf.size, buf.offset), 0, 0
    builder = flatbuffers.Builder(len(data) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def tap_onnx(data: bytes) -> bytes | None:
    """``data`` with the input of its only Softmax node added as a second graph output."""
    import onnx

    model = onnx.load_from_string(data)
    found = [n for n in model.graph.node if n.op_type == "Softmax"]
    if len(found) != 1:
        return None
    name = found[0].input[0]
    inferred = onnx.shape_inference.infer_shapes(model)
    infos = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    info = infos.get(name) or onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
    model.graph.output.append(info)
    return model.SerializeToString()


TAPS = {"tflite": tap_tflite, "onnx": tap_onnx}  # by file format: what the runtime row of the artifact runs


def artifact_logits(path: Path, fmt: str, x: np.ndarray) -> np.ndarray | None:
    """Float logits of the artifact at ``path`` on ``x``, or None when it has no single softmax."""
    tapped = TAPS[detect_format(path)](Path(path).read_bytes())  # the file's format, whatever the export format's name
    if tapped is None:
        return None
    with tempfile.TemporaryDirectory(dir=Path(path).parent) as tmp:
        copy = Path(tmp) / Path(path).name
        copy.write_bytes(tapped)
        sess = runtimes.open_session(copy)
        out = runtimes.predict(sess, x, output=len(sess.outputs) - 1)
    return out.reshape(out.shape[0], -1).astype(np.float32)

"""The ``serving_default`` SignatureDef of exported TFLite files, and its check.

The converter is fed a frozen GraphDef (``export.formats.tflite``), an entry point that
writes no SignatureDef; LiteRT's signature runners, Android's ``runSignature`` and tools
such as ai-edge-quantizer look a model up by its signature. ``add_signature`` writes one
into the converted flatbuffer: key ``serving_default``, input ``input`` and output
``output`` (the names the ONNX files use too), each mapped to the graph's only input and
output tensor. Nothing else in the file changes: same operators, tensors, weights and
quantization parameters, weight buffers aligned to 16 bytes as the converter aligns them.

``check_signature`` runs the file through its signature runner and requires the same
outputs as the plain interpreter on the validation inputs. TensorFlow is never imported.
"""

from __future__ import annotations

from pathlib import Path

import flatbuffers
import numpy as np

from mobiledeploy.errors import ConversionError, ValidationError, one_line
from mobiledeploy.export.formats._graph import INPUT_NAME, OUTPUT_NAME
from mobiledeploy.runtimes import TensorSpec, dequantize_output, quantize_input

SIGNATURE_KEY = "serving_default"
BUFFER_ALIGNMENT = 16  # what the TFLite converter aligns constant buffers to


def add_signature(data: bytes) -> bytes:
    """``data`` (a TFLite flatbuffer with one subgraph, one input, one output) with a
    ``serving_default`` SignatureDef naming them ``input`` and ``output``."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    graph = model.subgraphs[0] if model.subgraphs else None
    if graph is None or len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise ConversionError("TFLite: the converted graph does not have one input and one output; "
                              "cannot write its serving_default signature")
    if any(b.offset > 1 for b in model.buffers or ()):  # weights stored after the flatbuffer (over 2 GB)
        raise ConversionError("TFLite: the converted model keeps its weights outside the flatbuffer; "
                              "cannot write its serving_default signature")

    def tensor_map(name: str, index: int):
        t = schema.TensorMapT()
        t.name, t.tensorIndex = name, int(index)
        return t

    sig = schema.SignatureDefT()
    sig.signatureKey, sig.subgraphIndex = SIGNATURE_KEY, 0
    sig.inputs = [tensor_map(INPUT_NAME, graph.inputs[0])]
    sig.outputs = [tensor_map(OUTPUT_NAME, graph.outputs[0])]
    model.signatureDefs = [sig]
    return aligned_bytes(model, len(data))


def aligned_bytes(model, size: int) -> bytes:
    """The TFLite flatbuffer of ``model`` (a ``schema_py_generated.ModelT`` read from ``size`` bytes), weight
    buffers aligned as the converter aligns them."""
    builder = _AlignedBuilder(size + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


class _AlignedBuilder(flatbuffers.Builder):
    """A flatbuffer builder that aligns byte vectors (the weight buffers) to 16 bytes, as
    the converter does; the generated ``Pack`` code would align them to 1."""

    _bytes = False

    def CreateNumpyVector(self, x):  # noqa: N802 - flatbuffers' name
        self._bytes = x.dtype.itemsize == 1
        try:
            return super().CreateNumpyVector(x)
        finally:
            self._bytes = False

    def StartVector(self, elemSize, numElems, alignment):  # noqa: N802,N803 - flatbuffers' names
        return super().StartVector(elemSize, numElems, max(alignment, BUFFER_ALIGNMENT) if self._bytes
                                   else alignment)


def check_signature(path: Path, x: np.ndarray, expected: np.ndarray) -> dict:
    """Run ``path``'s ``serving_default`` signature on every sample of ``x`` (float, quantized
    to the input's type where it is integer) and require ``expected``, the plain interpreter's
    dequantized output on the same samples, exactly. Returns the manifest's record."""
    from ai_edge_litert.interpreter import Interpreter

    name = Path(path).name
    try:
        it = Interpreter(model_path=str(path))
        signatures = it.get_signature_list()
        runner = it.get_signature_runner(SIGNATURE_KEY)
    except (ValueError, RuntimeError) as e:
        raise ValidationError(f"{name}: no usable {SIGNATURE_KEY} signature ({one_line(e, 160)})") from None
    want = {"inputs": [INPUT_NAME], "outputs": [OUTPUT_NAME]}
    got = {k: list(signatures.get(SIGNATURE_KEY, {}).get(k, [])) for k in want}
    if got != want:
        raise ValidationError(f"{name}: signature {SIGNATURE_KEY} has inputs {got['inputs']} and outputs "
                              f"{got['outputs']}, expected {want['inputs']} and {want['outputs']}")
    in_spec, out_spec = _spec(runner.get_input_details()[INPUT_NAME]), _spec(runner.get_output_details()[OUTPUT_NAME])
    outs = []
    try:
        for i in range(x.shape[0]):
            raw = runner(**{INPUT_NAME: quantize_input(x[i:i + 1], in_spec)})[OUTPUT_NAME]
            outs.append(dequantize_output(raw, out_spec))
    except (ValueError, RuntimeError) as e:
        raise ValidationError(f"{name}: the {SIGNATURE_KEY} signature runner fails ({one_line(e, 160)})") from None
    got_out = np.concatenate(outs) if outs else np.zeros_like(expected)
    if got_out.shape != expected.shape or not np.array_equal(got_out, expected):
        raise ValidationError(f"{name}: the {SIGNATURE_KEY} signature runner's output differs from the "
                              "interpreter's on the same inputs")
    return {"key": SIGNATURE_KEY, "inputs": {INPUT_NAME: _describe(in_spec)},
            "outputs": {OUTPUT_NAME: _describe(out_spec)},
            "checked": f"signature runner output equals the interpreter's on {x.shape[0]} samples"}


def _spec(d: dict):
    scale, zero_point = d.get("quantization", (0.0, 0))
    return TensorSpec(d["name"], tuple(int(s) for s in d["shape"]), np.dtype(d["dtype"]), float(scale),
                      int(zero_point))


def _describe(spec) -> dict:
    return {"dtype": np.dtype(spec.dtype).name, "shape": [int(s) for s in spec.shape]}

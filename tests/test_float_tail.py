"""The classifier kept in float keeps its tail float up to the model's output, in both int8 formats.

With only the classifier's own operators kept out of quantization, the converters quantized its
output before the softmax (TFLite QUANTIZE -> RESHAPE -> SOFTMAX, ONNX QuantizeLinear/DequantizeLinear
before Softmax), so logits less than one step apart tied or swapped even with every layer in float.
A float set without the classifier (the default recipe here) is converted exactly as before.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from mobiledeploy.export import float_layers as fl
from mobiledeploy.export.pipeline import ExportConfig, export_model

QUANTIZING = ("QUANTIZE", "DEQUANTIZE")


def _export(path, out, float_layers):
    res = export_model(ExportConfig(model_path=str(path), formats=("tflite", "onnx"), precisions=("int8",),
                                    float_layers=float_layers, calib="random", calib_samples=16, validate_samples=4,
                                    out=str(out)))
    return {a.format: (res.out_dir / a.file, a.validation) for a in res.artifacts}


def _tflite_tail(path):
    """(op name, output dtypes) of every operator from the classifier's convolution to the graph's output."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    ops = it._get_ops_details()  # noqa: SLF001 - the interpreter's own op list
    names = {d["index"]: d["name"] for d in it.get_tensor_details()}
    dtypes = {d["index"]: d["dtype"] for d in it.get_tensor_details()}
    start = next(i for i, o in enumerate(ops)
                 if o["op_name"] == "CONV_2D" and fl.matching_nodes([names[o["outputs"][0]]], ("conv_preds",)))
    reach, tail = set(ops[start]["outputs"]), [ops[start]]
    for o in ops[start + 1:]:  # execution order: everything downstream of the classifier
        if reach & set(o["inputs"]):
            reach |= set(o["outputs"])
            tail.append(o)
    assert {d["index"] for d in it.get_output_details()} <= reach  # the walk reached the output
    return [(o["op_name"], [np.dtype(dtypes[t]).name for t in o["outputs"]]) for o in tail]


def _onnx_tail(path):
    """Op types from the output back to the last Conv/Gemm (the classifier), and whether its weight is float."""
    import onnx

    g = onnx.load(str(path)).graph
    producer = {o: n for n in g.node for o in n.output}
    init = {t.name for t in g.initializer}
    ops, node = [], producer[g.output[0].name]
    while node.op_type not in ("Conv", "Gemm", "MatMul"):
        ops.append(node.op_type)
        node = producer[node.input[0]]
    w = producer.get(node.input[1])
    return ops[::-1], node.input[1] in init and w is None


@pytest.fixture(scope="module")
def classifier_float(tiny_keras_file, tmp_path_factory):
    return _export(tiny_keras_file, tmp_path_factory.mktemp("tail") / "out", ("conv_dw_13", "conv_pw_13", "conv_preds"))


def test_classifier_in_float_keeps_the_logits_float_up_to_the_output(classifier_float):
    tail = _tflite_tail(classifier_float["tflite"][0])
    assert [op for op, _ in tail][0] == "CONV_2D" and "SOFTMAX" in [op for op, _ in tail]
    assert not [op for op, _ in tail if op in QUANTIZING], tail
    assert all(d == ["float32"] for _, d in tail), tail  # no int8 tensor between the classifier and the output

    ops, float_weight = _onnx_tail(classifier_float["onnx"][0])
    assert "Softmax" in ops and not {"QuantizeLinear", "DequantizeLinear"} & set(ops), ops
    assert float_weight  # the classifier itself: float initializer, no DequantizeLinear

    for fmt, (_, v) in classifier_float.items():  # both validated like any int8 artifact
        assert v.samples == 4 and v.status == "reported" and 0.0 <= v.top1_agreement <= 1.0, (fmt, v)


def test_without_the_classifier_the_artifacts_are_unchanged(tiny_keras_file, tmp_path, monkeypatch):
    """The default recipe of a loaded model (stem in float): converted exactly as when no tail is ever added."""
    from mobiledeploy.export.formats import onnx as onnx_fmt

    # ONNX: tf2onnx's graph of the same model is not the same from one conversion to the next (node names, and
    # sometimes a static or a dynamic reshape), so two whole exports cannot be compared; what the tail could
    # change is the set of nodes kept out of quantization, compared on the same graph with and without it
    seen, real = [], onnx_fmt._float_nodes  # noqa: SLF001

    def both(model, graph, recipe):
        with monkeypatch.context() as m:
            m.setattr(fl, "classifier_tail", lambda model: None)
            without = real(model, graph, recipe)
        seen.append((real(model, graph, recipe), without))
        return seen[-1][0]

    monkeypatch.setattr(onnx_fmt, "_float_nodes", both)
    now = _export(tiny_keras_file, tmp_path / "now", None)
    assert len(seen) == 1 and seen[0][0] and seen[0][0] == seen[0][1], seen
    monkeypatch.setattr(fl, "classifier_tail", lambda model: None)  # no tail: the conversion before it existed
    before = _export(tiny_keras_file, tmp_path / "before", None)

    def digest(p):
        return hashlib.sha256(p.read_bytes()).hexdigest()

    assert digest(now["tflite"][0]) == digest(before["tflite"][0])
    tail = _tflite_tail(now["tflite"][0])
    assert ("SOFTMAX", ["int8"]) in tail  # the classifier is int8 here, and so is its softmax, as before
    assert "QuantizeLinear" in _onnx_tail(now["onnx"][0])[0]

"""Every exported TFLite file carries a ``serving_default`` signature (input ``input``,
output ``output``) whose runner gives what the plain interpreter gives, for every
precision: fp32, fp16, dynamic, int8 (plain and with layers kept in float), float and
int8 input/output. Tiny random MobileNets; nothing here depends on the CPU's kernels."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mobiledeploy import runtimes
from mobiledeploy.errors import ValidationError
from mobiledeploy.export.pipeline import ExportConfig, export_model

WANT = {"serving_default": {"inputs": ["input"], "outputs": ["output"]}}


@pytest.fixture(scope="module")
def exports(tiny_keras_file, tmp_path_factory):
    """(a) every precision, int8 fully quantized with int8 input/output; (b) int8 with conv1 kept in float
    (the selective-quantization path), float input/output."""
    common = dict(model_path=str(tiny_keras_file), formats=("tflite",), calib="random", calib_samples=16,
                  validate_samples=4)
    a = export_model(ExportConfig(precisions=("fp32", "fp16", "dynamic", "int8"), int8_io=True, float_layers=(),
                                  out=str(tmp_path_factory.mktemp("all")), **common))
    b = export_model(ExportConfig(precisions=("int8",), float_layers=("conv1",),
                                  out=str(tmp_path_factory.mktemp("selective")), **common))
    return a, b


def _run_both(path, x):
    """The file's outputs on ``x`` through the plain interpreter and through its signature runner."""
    from ai_edge_litert.interpreter import Interpreter

    sess = runtimes.open_session(path)
    plain = [runtimes.run(sess, {sess.inputs[0].name: runtimes.quantize_input(x[i:i + 1], sess.inputs[0])})[0]
             for i in range(len(x))]
    runner = Interpreter(model_path=str(path)).get_signature_runner("serving_default")
    signed = [runner(input=runtimes.quantize_input(x[i:i + 1], sess.inputs[0]))["output"] for i in range(len(x))]
    return np.concatenate(plain), np.concatenate(signed), sess


def test_every_precision_has_the_signature_and_its_runner_matches_the_interpreter(exports):
    from ai_edge_litert.interpreter import Interpreter

    a, b = exports
    arts = [(r, art) for r in (a, b) for art in r.artifacts]
    assert sorted(f"{art.precision}{'' if r is a else '-selective'}" for r, art in arts) == \
        ["dynamic", "fp16", "fp32", "int8", "int8-selective"]
    x = np.random.default_rng(7).uniform(-1, 1, (3, 32, 32, 3)).astype(np.float32)  # not the validation inputs
    for r, art in arts:
        path = r.out_dir / art.file
        assert Interpreter(model_path=str(path)).get_signature_list() == WANT, art.file
        plain, signed, sess = _run_both(path, x)
        assert plain.dtype == signed.dtype and np.array_equal(plain, signed), art.file
        int8_io = r is a and art.precision == "int8"
        assert np.dtype(sess.inputs[0].dtype).name == ("int8" if int8_io else "float32")
        # recorded in the manifest: key, names, dtypes and shapes, and that it was checked
        entry = next(e for e in json.loads(r.manifest_path.read_text())["artifacts"] if e["file"] == art.file)
        sig = entry["validation"]["signature"]
        assert sig["key"] == "serving_default" and "4 samples" in sig["checked"]
        assert sig["inputs"] == {"input": {"dtype": "int8" if int8_io else "float32", "shape": [1, 32, 32, 3]}}
        assert list(sig["outputs"]) == ["output"] and sig["outputs"]["output"]["shape"] == [1, 10]


def test_selective_int8_keeps_float_layers_with_the_signature(exports):
    """The signature is added after selective quantization: conv1's weights are still float."""
    from ai_edge_litert.interpreter import Interpreter

    _, b = exports
    (art,) = b.artifacts
    details = Interpreter(model_path=str(b.out_dir / art.file)).get_tensor_details()
    assert any(d["dtype"] == np.float32 and len(d["shape"]) == 4 and "conv1" in d["name"] for d in details)


def test_the_signature_changes_nothing_else(tiny_keras, tmp_path):
    """Same operators, tensors and weights as the converter wrote, outputs bit-identical; weight buffers
    16-byte aligned in the file."""
    from ai_edge_litert import schema_py_generated as schema

    from mobiledeploy.export.formats.tflite import converter_for
    from mobiledeploy.export.recipes import QuantRecipe
    from mobiledeploy.export.signature import add_signature
    from mobiledeploy.quiet import quiet_converter

    with quiet_converter():
        raw = converter_for(tiny_keras, "dynamic", QuantRecipe()).convert()
    signed = add_signature(raw)
    m0, m1 = (schema.ModelT.InitFromPackedBuf(bytearray(d), 0) for d in (raw, signed))
    assert not m0.signatureDefs and len(m1.signatureDefs) == 1
    assert [t.name for t in m0.subgraphs[0].tensors] == [t.name for t in m1.subgraphs[0].tensors]
    assert [op.opcodeIndex for op in m0.subgraphs[0].operators] == [op.opcodeIndex for op in m1.subgraphs[0].operators]
    assert all(np.array_equal(np.asarray(p.data if p.data is not None else []), np.asarray(q.data if q.data is not None
                                                                                           else []))
               for p, q in zip(m0.buffers, m1.buffers, strict=True))
    root, base = schema.Model.GetRootAs(signed, 0), np.frombuffer(signed, np.uint8).ctypes.data
    offsets = [root.Buffers(i).DataAsNumpy().ctypes.data - base for i in range(root.BuffersLength())
               if root.Buffers(i).DataLength()]
    assert offsets and all(o % 16 == 0 for o in offsets)
    (tmp_path / "raw.tflite").write_bytes(raw)
    (tmp_path / "signed.tflite").write_bytes(signed)
    x = np.random.default_rng(3).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    outs = [runtimes.predict(runtimes.open_session(tmp_path / n), x) for n in ("raw.tflite", "signed.tflite")]
    assert np.array_equal(*outs)


def test_a_file_without_the_signature_fails_validation(tiny_keras, tmp_path):
    from mobiledeploy.export.formats.tflite import converter_for
    from mobiledeploy.export.pipeline import keras_reference
    from mobiledeploy.export.recipes import QuantRecipe
    from mobiledeploy.export.validate import validate_artifact
    from mobiledeploy.quiet import quiet_converter

    path = tmp_path / "unsigned_fp32.tflite"
    with quiet_converter():
        path.write_bytes(converter_for(tiny_keras, "fp32", QuantRecipe()).convert())
    x = np.random.default_rng(5).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    with pytest.raises(ValidationError, match="unsigned_fp32.tflite: no usable serving_default signature"):
        validate_artifact(path, fmt="tflite", precision="fp32", x=x, reference=keras_reference(tiny_keras, x))

"""Validation that means something: logits, a random init whose outputs depend on the input,
tolerances scaled to the logits' range, and artifacts that fail when they are wrong.

Every assertion allows exact equality (some CPUs run the float graphs bit-identically to
Keras) and none requires it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from mobiledeploy import runtimes
from mobiledeploy.errors import ToleranceError
from mobiledeploy.export.logits import artifact_logits, keras_logits_model
from mobiledeploy.export.pipeline import ExportConfig, export_model, keras_outputs, keras_reference
from mobiledeploy.export.validate import FP16_FACTOR, judge, tolerance, validate_artifact


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def varied():
    """A random-init MobileNet V1 with seeded batch norm (what `export` builds without weights)."""
    from mobiledeploy.models.archs import build_model

    return build_model(alpha=0.25, resolution=32, classes=10, seed=1, vary_batch_norm=True)


@pytest.fixture(scope="module")
def inputs():
    from mobiledeploy.data.datasets import load_dataset

    return load_dataset("digits", resolution=32, split="test", limit=16, seed=5).x


@pytest.fixture(scope="module")
def small_export(varied, tmp_path_factory):
    """fp32 and fp16, TFLite and ONNX, of the varied tiny model."""
    src = tmp_path_factory.mktemp("src") / "varied.keras"
    varied.save(str(src))
    out = tmp_path_factory.mktemp("export")
    res = export_model(ExportConfig(model_path=str(src), formats=("tflite", "onnx"), precisions=("fp32", "fp16"),
                                    calib="random", calib_samples=4, validate_samples=16, out=str(out)))
    return res, out


# ------------------------------------------------------------------ random init


def test_seeded_batch_norm_makes_outputs_depend_on_the_input(varied, inputs):
    from mobiledeploy.models.archs import build_model

    plain = build_model(alpha=0.25, resolution=32, classes=10, seed=1)
    again = build_model(alpha=0.25, resolution=32, classes=10, seed=1, vary_batch_norm=True)
    for a, b in zip(varied.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)  # seeded: the same model every time
    z = keras_outputs(keras_logits_model(varied), inputs)
    assert z.std(axis=0).mean() > 1e-3 * np.abs(z).max()  # logits move with the input
    assert len(np.unique(z.argmax(axis=1))) > 1  # and so does the predicted class
    gammas = [w for layer in varied.layers if type(layer).__name__ == "BatchNormalization"
              for w in [layer.gamma.numpy()]]
    assert all(g.std() > 0 for g in gammas)
    plain_gammas = [layer.gamma.numpy() for layer in plain.layers if type(layer).__name__ == "BatchNormalization"]
    assert all(np.all(g == 1.0) for g in plain_gammas)  # not applied unless asked for


def test_logits_twin_matches_the_softmax_of_the_model(varied, inputs):
    """V1 ends in Activation(softmax), V2 in Dense(activation=softmax): both have a logits twin."""
    from mobiledeploy.models.archs import build_model

    v2 = build_model("mobilenet_v2", alpha=0.35, resolution=32, classes=7, seed=0, vary_batch_norm=True)
    for m in (varied, v2):
        ref = keras_reference(m, inputs)
        assert ref.compared == "logits" and ref.logits.shape == ref.outputs.shape
        np.testing.assert_allclose(_softmax(ref.logits.astype(np.float64)), ref.outputs, atol=1e-5)


# ------------------------------------------------------------------ exported artifacts on logits


def test_float_exports_pass_on_logits_and_tapped_logits_are_the_artifacts(small_export, varied, inputs):
    res, out = small_export
    assert res.reference["compared"] == "logits" and res.reference["distinct_top1"] > 1
    assert res.reference["std_across_inputs"] > 0
    assert {(a.format, a.precision) for a in res.artifacts} == {(f, p) for f in ("tflite", "onnx")
                                                               for p in ("fp32", "fp16")}
    z = keras_outputs(keras_logits_model(varied), inputs)
    for a in res.artifacts:
        v = a.validation
        assert v.compared == "logits" and v.status == "pass" and v.max_abs_diff <= v.tolerance
        got = artifact_logits(out / a.file, a.format, inputs)  # independently, other inputs
        tol = tolerance(a.precision, z, 1e-4, 1e-4)
        assert got.shape == z.shape and float(np.abs(got - z).max()) <= tol
        # the tapped tensor is what feeds the shipped output (an fp16 softmax rounds to 11 bits)
        probs = runtimes.predict(runtimes.open_session(out / a.file), inputs)
        np.testing.assert_allclose(_softmax(got.astype(np.float64)), probs,
                                   atol=1e-5 if a.precision == "fp32" else 2e-3)


def test_onnx_fp16_has_half_weights_and_float_io(small_export):
    import onnx

    res, out = small_export
    (a,) = [a for a in res.artifacts if a.format == "onnx" and a.precision == "fp16"]
    (fp32,) = [a for a in res.artifacts if a.format == "onnx" and a.precision == "fp32"]
    sess = runtimes.open_session(out / a.file)
    assert sess.inputs[0].dtype == np.float32 and sess.outputs[0].dtype == np.float32
    g = onnx.load(str(out / a.file)).graph
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in g.initializer)
    assert a.size_bytes < 0.7 * fp32.size_bytes
    assert a.validation.tolerance == pytest.approx(
        FP16_FACTOR * (1e-4 + 1e-4 * res.reference["max_abs"]), rel=1e-6)


# ------------------------------------------------------------------ a wrong artifact fails


def _scale_onnx_weight(src, dst, op_type: str, factor: float, last: bool = False) -> None:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    inits = {t.name: t for t in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.op_type == op_type and n.input[1] in inits]
    t = inits[nodes[-1 if last else 0].input[1]]
    w = numpy_helper.to_array(t)
    t.CopyFrom(numpy_helper.from_array((w * factor).astype(w.dtype), t.name))
    onnx.save(model, str(dst))


def _scale_tflite_first_conv(src, dst, factor: float) -> None:
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(src.read_bytes()), 0)
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    g = model.subgraphs[0]
    conv = next(op for op in g.operators if codes[op.opcodeIndex] == schema.BuiltinOperator.CONV_2D)
    buf = model.buffers[g.tensors[conv.inputs[1]].buffer]
    w = np.frombuffer(bytes(bytearray(buf.data)), np.float32) * np.float32(factor)
    buf.data = np.frombuffer(w.astype(np.float32).tobytes(), np.uint8)
    b = flatbuffers.Builder(0)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    dst.write_bytes(bytes(b.Output()))


def test_perturbed_artifacts_fail_validation(small_export, inputs, varied, tmp_path):
    """2 % on the first convolution of fp32, x2 on the classifier of fp16: all must fail."""
    res, out = small_export
    ref = keras_reference(varied, inputs)
    cases = [("tflite", "fp32", lambda s, d: _scale_tflite_first_conv(s, d, 1.02)),
             ("onnx", "fp32", lambda s, d: _scale_onnx_weight(s, d, "Conv", 1.02)),
             ("onnx", "fp16", lambda s, d: _scale_onnx_weight(s, d, "Conv", 2.0, last=True))]
    for fmt, precision, perturb in cases:
        (a,) = [a for a in res.artifacts if a.format == fmt and a.precision == precision]
        ok = validate_artifact(out / a.file, fmt=fmt, precision=precision, x=inputs, reference=ref)
        assert ok.status == "pass"
        bad = tmp_path / f"bad_{a.file}"
        perturb(out / a.file, bad)
        with pytest.raises(ToleranceError, match=rf"{bad.name} logits differ .*for {precision}"):
            validate_artifact(bad, fmt=fmt, precision=precision, x=inputs, reference=ref)
        kept = validate_artifact(bad, fmt=fmt, precision=precision, x=inputs, reference=ref, strict=False)
        assert kept.status == "fail" and kept.max_abs_diff > kept.tolerance


def test_demo_export_validates_varying_logits(tmp_path):
    """`make demo`'s model (random init, 0.25/128), fp32 + int8 TFLite: validation sees signal."""
    res = export_model(ExportConfig(alpha=0.25, resolution=128, formats=("tflite",), calib_samples=32,
                                    validate_samples=32, out=str(tmp_path)),
                       warn=lambda m: None)
    ref = res.reference
    assert ref["compared"] == "logits" and ref["std_across_inputs"] > 0 and ref["distinct_top1"] > 1
    assert not any("barely change" in w for w in res.warnings)
    assert res.model["init"]["batch_norm"] and res.model["init"]["seed"] == 0
    fp32, int8 = res.artifacts
    assert fp32.validation.compared == "logits" and fp32.validation.status == "pass"
    v = int8.validation
    assert v.compared == "logits" and v.status == "reported"
    assert v.max_abs_diff > 0 and v.sqnr_db > 0  # quantized, yet carrying the signal (not all zeros)


# ------------------------------------------------------------------ the rule itself


def test_tolerance_scales_with_the_reference_range_and_allows_exact_equality():
    ref = np.array([[3.0, -12.0, 1.0], [0.5, 2.0, -1.0]], np.float32)
    assert tolerance("fp32", ref, 1e-4, 1e-4) == pytest.approx(1e-4 + 12 * 1e-4)
    assert tolerance("fp16", ref, 1e-4, 1e-4) == pytest.approx(FP16_FACTOR * (1e-4 + 12 * 1e-4))
    assert tolerance("fp16", 10 * ref, 1e-4, 1e-4) > 9 * tolerance("fp16", ref, 0.0, 1e-4)
    assert tolerance("int8", ref, 1e-4, 1e-4) is None
    exact = judge("m", precision="fp32", reference=ref, out=ref.copy(), strict=True, runtime="litert", inputs="")
    assert exact.status == "pass" and exact.max_abs_diff == 0.0 and exact.sqnr_db == math.inf
    from mobiledeploy import io

    assert '"sqnr_db": "inf"' in io.dumps(exact.to_json())  # JSON's one encoding of infinity

"""export_model on tiny MobileNets: every format x precision, validated for real.

Quality checks use the project's reference model (``models/mobilenet_v1_0.25_32_digits.keras``:
MobileNet V1 alpha 0.25, 32x32, 10 classes, trained on digits), so that agreement and SQNR
have a trained model behind them (random-init validation is covered in test_validation.py).
Failure and atomicity tests use the random tiny model from conftest.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from mobiledeploy import runtimes
from mobiledeploy.errors import ConversionError, DataError, ToleranceError, UsageError
from mobiledeploy.export.pipeline import MANIFEST, STAGING_PREFIX, ExportConfig, export_model, keras_outputs, sha256_file
from mobiledeploy.metrics import max_abs_diff, sqnr_db, top1_agreement

STEM = "mobilenet_v1_0.25_32"
REFERENCE = Path(__file__).resolve().parent.parent / "models" / "mobilenet_v1_0.25_32_digits.keras"


@pytest.fixture(scope="module")
def model_file():
    if not REFERENCE.exists():
        pytest.skip(f"reference model {REFERENCE.name} not in models/ yet")
    return REFERENCE


@pytest.fixture(scope="module")
def tiny_file(tiny_keras, tmp_path_factory):
    path = tmp_path_factory.mktemp("src") / "tiny_random.keras"
    tiny_keras.save(str(path))
    return path


@pytest.fixture(scope="module")
def exported(model_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    cfg = ExportConfig(model_path=str(model_file), formats=("tflite", "onnx", "keras"),
                       precisions=("fp32", "fp16", "dynamic", "int8"), int8_io=True,
                       calib="digits", calib_samples=64, validate_samples=32, out=str(out))
    warnings = []
    steps = []

    def progress(p):
        if p.kind == "start":
            steps.append(p.message)

    result = export_model(cfg, progress=progress, warn=warnings.append)
    return result, out, warnings, steps


@pytest.fixture(scope="module")
def check_data():
    """Fresh digits (not the validation subset) to check the artifacts independently."""
    from mobiledeploy.data.datasets import load_dataset

    return load_dataset("digits", resolution=32, split="test", limit=48, seed=7).x


@pytest.fixture(scope="module")
def keras_ref(model_file, check_data):
    from mobiledeploy.models.archs import load_model

    return keras_outputs(load_model(model_file), check_data)


@pytest.fixture(scope="module")
def keras_logits(model_file, check_data):
    from mobiledeploy.export.logits import keras_logits_model
    from mobiledeploy.models.archs import load_model

    return keras_outputs(keras_logits_model(load_model(model_file)), check_data)


def _artifact(result, fmt, precision):
    (a,) = [a for a in result.artifacts if a.format == fmt and a.precision == precision]
    return a


def test_files_and_manifest(exported):
    result, out, warnings, steps = exported
    names = sorted(p.name for p in out.iterdir())
    expected = sorted([f"{STEM}_{p}.tflite" for p in ("fp32", "fp16", "dynamic", "int8")]
                      + [f"{STEM}_{p}.onnx" for p in ("fp32", "fp16", "dynamic", "int8")]
                      + [f"{STEM}_fp32.keras", MANIFEST])
    assert names == expected  # no staging directory, no intermediate file left behind
    manifest = json.loads((out / MANIFEST).read_text())
    from mobiledeploy import io

    assert {k: v for k, v in manifest.items() if k not in io.STAMP_KEYS} == json.loads(io.dumps(result.to_json()))
    assert manifest["mobiledeploy_version"] and manifest["created"] and manifest["machine"]["cores"] >= 1
    assert manifest["schema_version"] == 1
    m = manifest["model"]
    assert (m["arch"], m["alpha"], m["resolution"], m["classes"]) == ("mobilenet_v1", 0.25, 32, 10)
    assert m["input_shape"] == [1, 32, 32, 3] and m["preprocessing"] == "mobilenet"
    assert m["params"] == 212906 and m["macs"] > 0
    assert manifest["calibration"]["source"] == "digits" and manifest["calibration"]["samples"] == 64
    assert manifest["skipped"] == [] and not any("skipped" in w for w in warnings)
    assert manifest["reference"]["compared"] == "logits" and manifest["reference"]["distinct_top1"] > 1
    assert "init" not in m  # loaded, not built: no random init to record
    for key in ("tensorflow", "onnxruntime", "tf2onnx", "ai-edge-litert", "keras"):
        assert key in manifest["versions"]
    for a in manifest["artifacts"]:
        path = out / a["file"]
        assert a["size_bytes"] == path.stat().st_size and a["sha256"] == sha256_file(path)
    assert "tflite int8" in steps and "onnx int8" in steps


def test_onnx_quant_types_recorded(exported):
    q = exported[0].to_json()["quantization"]["onnx"]
    assert q["types"] in ("s8s8", "u8s8") and q["format"] == "QDQ" and q["per_channel"] is True
    assert q["reduce_range"] == (q["types"] == "u8s8") and q["reason"]


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_fp32_matches_keras(exported, keras_ref, check_data, fmt):
    result, out, *_ = exported
    a = _artifact(result, fmt, "fp32")
    v = a.validation
    assert v.compared == "logits" and v.status == "pass" and v.max_abs_diff <= v.tolerance
    # independently, on other inputs than the exporter validated on (the softmax outputs)
    got = runtimes.predict(runtimes.open_session(out / a.file), check_data)
    assert got.shape == keras_ref.shape
    assert max_abs_diff(keras_ref, got) <= 1e-4


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_fp16_within_its_rule(exported, keras_logits, check_data, fmt):
    from mobiledeploy.export.logits import artifact_logits
    from mobiledeploy.export.validate import tolerance

    result, out, *_ = exported
    a = _artifact(result, fmt, "fp16")
    scale = result.reference["max_abs"]
    assert a.validation.tolerance == pytest.approx(tolerance("fp16", np.float32([scale]), 1e-4, 1e-4))
    assert a.validation.status == "pass" and a.validation.compared == "logits"
    got = artifact_logits(out / a.file, fmt, check_data)  # independently, on other inputs
    assert max_abs_diff(keras_logits, got) <= tolerance("fp16", keras_logits, 1e-4, 1e-4)
    assert top1_agreement(keras_logits, got) >= 0.95
    fp32 = _artifact(result, fmt, "fp32")
    assert a.size_bytes < 0.7 * fp32.size_bytes  # half-precision weights


@pytest.mark.parametrize("fmt, precision", [("tflite", "int8"), ("onnx", "int8"),
                                            ("tflite", "dynamic"), ("onnx", "dynamic")])
def test_quantized_agree_with_keras(exported, keras_ref, check_data, fmt, precision):
    result, out, *_ = exported
    a = _artifact(result, fmt, precision)
    v = a.validation
    assert v.status == "reported" and v.tolerance is None
    assert v.top1_agreement >= 0.9 and 25.0 < v.sqnr_db < math.inf
    got = runtimes.predict(runtimes.open_session(out / a.file), check_data)
    assert top1_agreement(keras_ref, got) >= 0.9
    assert sqnr_db(keras_ref, got) > 25.0
    assert max_abs_diff(keras_ref, got) > 0  # really quantized, not a float copy
    assert a.size_bytes < 0.5 * _artifact(result, fmt, "fp32").size_bytes


def test_int8_io_dtypes(exported):
    result, out, *_ = exported
    sess = runtimes.open_session(out / _artifact(result, "tflite", "int8").file)
    assert sess.inputs[0].dtype == np.int8 and sess.outputs[0].dtype == np.int8
    assert sess.inputs[0].quantized
    onnx = runtimes.open_session(out / _artifact(result, "onnx", "int8").file)
    assert onnx.inputs[0].dtype == np.float32  # QDQ keeps float I/O
    assert _artifact(result, "tflite", "int8").validation.input_dtype == "int8"


def test_keras_source_round_trips(exported):
    a = _artifact(exported[0], "keras", "fp32")
    assert a.validation.status == "pass" and a.validation.max_abs_diff == 0.0


# ------------------------------------------------------------------ failures leave --out as it was


def _snapshot(d: Path) -> dict:
    return {p.name: p.read_bytes() for p in d.iterdir()}


@pytest.fixture
def out_with_old_file(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    return out


def test_converter_failure_leaves_out_untouched(tiny_file, out_with_old_file, monkeypatch):
    import mobiledeploy.export.formats.onnx as conv_onnx

    def boom(*a, **k):
        raise ConversionError("ONNX conversion (tf2onnx) failed: simulated")

    monkeypatch.setattr(conv_onnx, "convert", boom)
    before = _snapshot(out_with_old_file)
    cfg = ExportConfig(model_path=str(tiny_file), precisions=("fp32",), calib_samples=8, validate_samples=4,
                       out=str(out_with_old_file))
    with pytest.raises(ConversionError, match="simulated"):
        export_model(cfg)
    assert _snapshot(out_with_old_file) == before


def test_ctrl_c_during_validation_leaves_out_untouched(tiny_file, out_with_old_file, monkeypatch):
    import mobiledeploy.export.pipeline as ex

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(ex, "validate_artifact", interrupted)
    before = _snapshot(out_with_old_file)
    cfg = ExportConfig(model_path=str(tiny_file), formats=("tflite",), precisions=("fp32",), calib_samples=8,
                       validate_samples=4, out=str(out_with_old_file))
    with pytest.raises(KeyboardInterrupt):
        export_model(cfg)
    assert _snapshot(out_with_old_file) == before
    assert not any(p.name.startswith(STAGING_PREFIX) for p in out_with_old_file.iterdir())


def test_tolerance_strict_fails_and_no_strict_keeps(model_file, out_with_old_file, tmp_path):
    before = _snapshot(out_with_old_file)
    cfg = ExportConfig(model_path=str(model_file), formats=("tflite",), precisions=("fp16",), atol=0.0,
                       rtol=0.0, calib_samples=8, validate_samples=8, out=str(out_with_old_file))
    with pytest.raises(ToleranceError, match=r"fp16\.tflite logits differ .*tolerance 0 for fp16.*--no-strict"):
        export_model(cfg)
    assert _snapshot(out_with_old_file) == before

    warnings = []
    out2 = tmp_path / "lenient"
    res = export_model(ExportConfig(**{**cfg.__dict__, "strict": False, "out": str(out2)}), warn=warnings.append)
    (a,) = res.artifacts
    assert a.validation.status == "fail" and a.validation.max_abs_diff > 0
    assert any("--no-strict" in w for w in warnings)
    assert (out2 / a.file).exists()


def test_new_out_dir_removed_on_failure(tiny_file, tmp_path, monkeypatch):
    import mobiledeploy.export.formats.tflite as conv_tflite

    monkeypatch.setattr(conv_tflite, "convert", lambda *a, **k: (_ for _ in ()).throw(ConversionError("x")))
    out = tmp_path / "fresh"
    with pytest.raises(ConversionError):
        export_model(ExportConfig(model_path=str(tiny_file), formats=("tflite",), precisions=("fp32",),
                                  calib_samples=4, validate_samples=4, out=str(out)))
    assert not out.exists()


# ------------------------------------------------------------------ calibration sources


def test_calibration_from_folder_counts_skipped(tmp_path):
    from PIL import Image

    from mobiledeploy.export.calibration import load_calibration

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (folder / "broken.jpg").write_bytes(b"not an image")
    cal = load_calibration(str(folder), resolution=32, preprocessing="mobilenet", samples=4, validate=8)
    assert cal.calib.shape == (4, 32, 32, 3) and cal.validation.shape == (8, 32, 32, 3)  # 2 held-out images, cropped
    assert cal.skipped == 1 and cal.calib.min() >= -1 and cal.calib.max() <= 1
    assert any("skipped 1 unreadable" in w for w in cal.warnings)
    small = load_calibration(str(folder), resolution=32, preprocessing="mobilenet", samples=100, validate=8)
    assert small.calib.shape[0] == 100 and small.validation.shape[0] == 8  # augmented up to the counts
    assert small.distinct_images == 5 and "1 held-out images" in small.validation_inputs  # a fifth held out


def test_calibration_random_warns_and_empty_folder_fails(tmp_path):
    from mobiledeploy.export.calibration import load_calibration

    cal = load_calibration("random", resolution=32, preprocessing="mobilenet", samples=5, validate=3)
    assert cal.calib.shape == (5, 32, 32, 3) and "meaningless" in cal.warnings[0]
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "bad.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match="empty.*1 unreadable"):
        load_calibration(str(empty), resolution=32, preprocessing="mobilenet", samples=5, validate=3)


def test_onnx_type_choice():
    from mobiledeploy.export.recipes import choose_onnx_types

    assert choose_onnx_types(machine="x86_64", flags={"avx2"}).name == "u8s8"
    assert choose_onnx_types(machine="x86_64", flags={"avx2"}).reduce_range is True
    assert choose_onnx_types(machine="x86_64", flags={"avx512_vnni"}).name == "s8s8"
    assert choose_onnx_types(machine="aarch64").name == "s8s8"
    assert choose_onnx_types("s8s8", machine="x86_64", flags={"avx512_vnni"}).reason == "set by --onnx-quant-types"
    assert choose_onnx_types("s8s8", machine="aarch64").reason == "set by --onnx-quant-types"
    saturating = choose_onnx_types("s8s8", machine="x86_64", flags=set()).reason  # says what the host understates
    assert saturating.startswith("set by --onnx-quant-types; ") and "--emulate cortex-a76" in saturating
    with pytest.raises(UsageError, match="--onnx-quant-types"):
        choose_onnx_types("u8u8")


def test_saved_model_source(tiny_keras, tmp_path):
    """--model accepts a SavedModel directory; its .keras copy is skipped with a reason."""
    sm = tmp_path / "sm"
    tiny_keras.export(str(sm), format="tf_saved_model", verbose=False)
    res = export_model(ExportConfig(model_path=str(sm), formats=("tflite", "keras"), precisions=("fp32", "int8"),
                                    calib_samples=4, validate_samples=4, out=str(tmp_path / "o")))
    a, q = res.artifacts
    assert a.file == "sm_32_fp32.tflite" and a.validation.status == "pass"
    assert q.file == "sm_32_int8.tflite" and q.validation.status == "reported"  # int8 of an opaque model works
    assert res.skipped[0]["format"] == "keras" and "SavedModel" in res.skipped[0]["reason"]
    assert res.quantization["bias_correction"]["enabled"] is False  # no Keras layer to correct: said so
    assert "SavedModel" in res.quantization["bias_correction"]["reason"]


@pytest.mark.slow
@pytest.mark.parametrize("arch, pre", [("mobilenet_v2", "mobilenet"), ("mobilenet_v3_small", "raw"),
                                       ("mobilenet_v3_large", "raw")])
def test_other_archs_export(arch, pre, tmp_path):
    res = export_model(ExportConfig(arch=arch, alpha=0.5, resolution=48, classes=5, calib_samples=16,
                                    validate_samples=8, out=str(tmp_path)))
    assert res.model["preprocessing"] == pre and res.calibration["preprocessing"] == pre
    assert [a.file for a in res.artifacts] == [f"{arch}_0.5_48_{p}.{f}" for f in ("tflite", "onnx")
                                               for p in ("fp32", "int8")]
    assert all(a.validation.status in ("pass", "reported") for a in res.artifacts)


def test_validation_rules_and_fatal_mismatches(tiny_tflite, tiny_keras):
    from mobiledeploy.errors import ValidationError
    from mobiledeploy.export.validate import Reference, judge, validate_artifact

    ref = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]], np.float32)
    off = ref + np.float32(5e-4)
    kw = dict(reference=ref, out=off, atol=1e-4, rtol=1e-4, runtime="litert", inputs="t")
    with pytest.raises(ToleranceError, match=r"tolerance 0.00017 for fp32: 0.0001 \+ 0.0001 x max.*--no-strict"):
        judge("m_fp32.tflite", precision="fp32", strict=True, **kw)
    assert judge("m", precision="fp32", strict=False, **kw).status == "fail"
    assert judge("m", precision="fp16", strict=True, **kw).status == "pass"  # fp16: wider
    q = judge("m", precision="int8", strict=True, **kw)
    assert q.status == "reported" and q.top1_agreement == 1.0 and q.sqnr_db > 0

    x = np.zeros((2, 32, 32, 3), np.float32)
    good = Reference(keras_outputs(tiny_keras, x))
    with pytest.raises(ValidationError, match="dtypes float32/float32, expected int8/int8"):
        validate_artifact(tiny_tflite, fmt="tflite", precision="int8", int8_io=True, x=x, reference=good,
                          atol=1e-4, strict=True)
    with pytest.raises(ValidationError, match="output shape 10 differs from the source model's 5"):
        validate_artifact(tiny_tflite, fmt="tflite", precision="fp32", x=x, reference=Reference(good.outputs[:, :5]),
                          atol=1e-4, strict=True)
    with pytest.raises(ValidationError, match="input shape 32x32x3 differs from the source model's 48x48x3"):
        validate_artifact(tiny_tflite, fmt="tflite", precision="fp32", x=np.zeros((1, 48, 48, 3), np.float32),
                          reference=Reference(good.outputs[:1]), atol=1e-4, strict=True)


def test_digits_calibration_is_the_shared_split():
    """calibration.py preprocesses only the picked digits; they must be data.subset's picks."""
    from mobiledeploy.data import datasets as data
    from mobiledeploy.export.calibration import load_calibration

    cal = load_calibration("digits", resolution=32, preprocessing="mobilenet", samples=50, validate=10, seed=3)
    train = data.subset(data.load_dataset("digits", resolution=32, split="train"), 50, seed=3)
    test = data.subset(data.load_dataset("digits", resolution=32, split="test"), 10, seed=3)
    np.testing.assert_array_equal(cal.calib, train.x)
    np.testing.assert_array_equal(cal.validation, test.x)


def test_int8_weights_are_per_channel(exported):
    import onnx
    from ai_edge_litert.interpreter import Interpreter

    result, out, *_ = exported
    it = Interpreter(model_path=str(out / _artifact(result, "tflite", "int8").file))
    per_channel = [d for d in it.get_tensor_details() if len(d["quantization_parameters"]["scales"]) > 1]
    assert len(per_channel) >= 14  # every conv / depthwise conv kernel of MobileNet V1
    g = onnx.load(str(out / _artifact(result, "onnx", "int8").file)).graph
    inits = {t.name: t for t in g.initializer}
    dq = [n for n in g.node if n.op_type == "DequantizeLinear" and n.input[1] in inits
          and np.prod(inits[n.input[1]].dims) > 1]
    assert len(dq) >= 14


def test_nothing_to_export_is_a_usage_error(tmp_path, monkeypatch):
    from dataclasses import replace

    from mobiledeploy.export.formats import FORMATS

    monkeypatch.setitem(FORMATS, "onnx", replace(FORMATS["onnx"], precisions=("fp32",)))  # a format without fp16
    with pytest.raises(UsageError, match="nothing to export: onnx cannot produce fp16"):
        export_model(ExportConfig(formats=("onnx",), precisions=("fp16",), out=str(tmp_path / "o")))
    assert not (tmp_path / "o").exists()


def test_ctrl_c_is_held_back_during_the_final_renames():
    import os
    import signal

    from mobiledeploy.export.staging import sigint_deferred

    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN in a background job
    done = []
    with pytest.raises(KeyboardInterrupt):
        with sigint_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            done.append("renames finished")  # not interrupted half-way
    assert done == ["renames finished"]
    assert signal.getsignal(signal.SIGINT) is before


def test_per_tensor_recipe_is_converted_recorded_and_read_back(tiny_file, tmp_path):
    """--per-tensor / --onnx-calibration reach both converters and the manifest; --per-layer reads them back."""
    import onnx
    from onnx import numpy_helper

    from mobiledeploy.export.perlayer import tflite_per_channel
    from mobiledeploy.export.recipes import QuantRecipe

    res = export_model(ExportConfig(model_path=str(tiny_file), formats=("tflite", "onnx"), precisions=("int8",),
                                    per_channel=False, onnx_calibration="percentile", calib="random",
                                    calib_samples=16, validate_samples=4, out=str(tmp_path / "pt")))
    q = json.loads(res.manifest_path.read_text())["quantization"]
    assert q["tflite"]["per_channel"] is False and q["onnx"]["per_channel"] is False
    assert q["onnx"]["calibrate_method"] == "percentile"
    recipe = QuantRecipe.from_manifest(q)
    assert (recipe.per_channel, recipe.onnx.calibration) == (False, "percentile")
    paths = {a.format: res.out_dir / a.file for a in res.artifacts}
    assert tflite_per_channel(paths["tflite"]) is False
    g = onnx.load(str(paths["onnx"])).graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    weight_scales = [inits[n.input[1]] for n in g.node if n.op_type == "DequantizeLinear"
                     and n.input[0] in inits and inits[n.input[0]].ndim == 4]
    assert weight_scales and all(s.size == 1 for s in weight_scales)


def _tflite_biases(path) -> list[np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    out = []
    for d in it.get_tensor_details():
        if d["dtype"] == np.int32 and len(d["shape"]) == 1 and d["shape"][0] > 1:
            try:
                out.append(np.array(it.get_tensor(d["index"])))
            except ValueError:  # not a constant
                pass
    return out


def test_bias_correction_is_on_for_loaded_models_recorded_and_reaches_both_converters(tiny_file, tmp_path):
    """A loaded (trained) model gets bias-corrected int8 weights by default; --no-bias-correction turns it off;
    the manifest says which and why; the float artifacts are the original model either way."""
    from mobiledeploy.export.recipes import QuantRecipe

    runs = {}
    for tag, flag in (("default", None), ("off", False)):
        res = export_model(ExportConfig(model_path=str(tiny_file), formats=("tflite", "onnx"),
                                        precisions=("fp32", "int8"), bias_correction=flag, calib="random",
                                        calib_samples=16, validate_samples=4, out=str(tmp_path / tag)))
        runs[tag] = (res, json.loads(res.manifest_path.read_text())["quantization"]["bias_correction"])
    (on, q_on), (off, q_off) = runs["default"], runs["off"]
    assert q_on["enabled"] is True and "default" in q_on["reason"]
    assert q_off["enabled"] is False and "--no-bias-correction" in q_off["reason"]
    assert QuantRecipe.from_manifest({"bias_correction": q_on}).bias_correction is True
    assert QuantRecipe.from_manifest({}).bias_correction is False  # older manifests: off
    sha = {tag: {(a.format, a.precision): a.sha256 for a in r.artifacts} for tag, (r, _) in runs.items()}
    assert sha["default"][("tflite", "fp32")] == sha["off"][("tflite", "fp32")]
    assert sha["default"][("onnx", "int8")] != sha["off"][("onnx", "int8")]
    b_on = _tflite_biases(on.out_dir / next(a.file for a in on.artifacts if a.format == "tflite" and a.precision == "int8"))
    b_off = _tflite_biases(off.out_dir / next(a.file for a in off.artifacts
                                              if a.format == "tflite" and a.precision == "int8"))
    assert len(b_on) == len(b_off) > 0 and any(not np.array_equal(a, b) for a, b in zip(b_on, b_off))


def test_bias_correction_defaults_off_for_random_weights_and_is_computed_once(tiny_keras, tmp_path):
    from mobiledeploy.export.recipes import Calibration, QuantRecipe

    res = export_model(ExportConfig(alpha=0.25, resolution=32, classes=10, formats=("tflite",), precisions=("int8",),
                                    calib="random", calib_samples=8, validate_samples=4, out=str(tmp_path / "r")))
    q = json.loads(res.manifest_path.read_text())["quantization"]["bias_correction"]
    assert q["enabled"] is False and "random" in q["reason"]
    calib = np.random.default_rng(0).uniform(-1, 1, (4, *tiny_keras.input_shape[1:])).astype(np.float32)
    cal = Calibration(calib)
    assert cal.quant_source(tiny_keras, QuantRecipe()) is tiny_keras  # off: the model itself
    recipe = QuantRecipe(bias_correction=True)
    corrected = cal.quant_source(tiny_keras, recipe)
    assert corrected is not tiny_keras and cal.quant_source(tiny_keras, recipe) is corrected  # once per model and grid
    assert cal.quant_source(tiny_keras, recipe, "int8_reduce_range") is not corrected


def test_float_layers_names_and_node_matching(tiny_keras):
    from mobiledeploy.export import float_layers as fl

    assert fl.parse_spec(None) is None and fl.parse_spec("auto") is None and fl.parse_spec("none") == ()
    assert fl.parse_spec("conv1, conv_dw_1") == ("conv1", "conv_dw_1")
    assert fl.stem(tiny_keras) == ("conv1", "conv_dw_1", "conv_pw_1")
    assert fl.resolve(tiny_keras, ("conv_pw_1", "conv1")) == ("conv1", "conv_pw_1")  # model order
    with pytest.raises(UsageError, match="no convolution or dense layer named 'conv_dw_99'"):
        fl.resolve(tiny_keras, ("conv_dw_99",))
    assert fl.with_fused(tiny_keras, ("conv_dw_1",)) == ("conv_dw_1", "conv_dw_1_bn", "conv_dw_1_relu")
    names = ["m_1/conv_dw_1_1/depthwise", "m_1/conv_dw_11_1/depthwise", "m_1/conv_dw_1_bn_1/add;m_1/x/Relu6",
             "m_1/conv_dw_10/depthwise", "conv_dw_1"]
    assert fl.matching_nodes(names, ("conv_dw_1", "conv_dw_1_bn")) == [names[0], names[2], names[4]]


def test_float_layers_stay_float_in_both_int8_artifacts_and_are_recorded(tiny_file, tmp_path):
    """A loaded model keeps its stem in float by default (float weights for those layers in both files);
    --float-layers none quantizes everything; the manifest says which and why."""
    import onnx
    from ai_edge_litert.interpreter import Interpreter

    runs = {}
    for tag, spec in (("auto", None), ("none", ())):
        res = export_model(ExportConfig(model_path=str(tiny_file), formats=("tflite", "onnx"), precisions=("int8",),
                                        float_layers=spec, calib="random", calib_samples=16, validate_samples=4,
                                        out=str(tmp_path / tag)))
        q = json.loads(res.manifest_path.read_text())["quantization"]["float_layers"]
        paths = {a.format: res.out_dir / a.file for a in res.artifacts}
        it = Interpreter(model_path=str(paths["tflite"]))
        float_kernels = [d["name"] for d in it.get_tensor_details()
                         if d["dtype"] == np.float32 and len(d["shape"]) == 4 and "conv" in d["name"]]
        g = onnx.load(str(paths["onnx"])).graph
        quantized_inputs = {n.output[0] for n in g.node if n.op_type == "DequantizeLinear"}
        float_convs = [n.name for n in g.node if n.op_type == "Conv" and n.input[0] not in quantized_inputs]
        runs[tag] = (q, float_kernels, float_convs)
    (q_auto, k_auto, c_auto), (q_none, k_none, c_none) = runs["auto"], runs["none"]
    assert q_auto["layers"] == ["conv1", "conv_dw_1", "conv_pw_1"] and "stem" in q_auto["reason"]
    assert q_none["layers"] == [] and "--float-layers" in q_none["reason"]
    assert k_auto and not k_none  # float conv weights in the TFLite file only when asked
    assert len(c_auto) == 3 and not c_none  # conv1, conv_dw_1, conv_pw_1 (tf2onnx names plain convs Conv__N)
    for layer in ("conv1_1/", "conv_dw_1_1/", "conv_pw_1_1/"):  # weights and outputs of the stem: float
        assert any(layer in n for n in k_auto), (layer, k_auto)
    assert not any("conv_pw_2" in n or "conv_dw_2" in n for n in k_auto)  # the rest stays int8


"""`mobiledeploy eval` and `evaluate()`: real runtimes, known answers, every error path."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import errors

from mobiledeploy.cli import cli
from mobiledeploy.data.datasets import Dataset, load_dataset
from mobiledeploy.errors import UsageError
from mobiledeploy.accuracy.evaluate import evaluate
from mobiledeploy.models.artifacts import resolve_models

RES = 32


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def export_dir(tiny_keras, tiny_tflite, tiny_tflite_int8, tiny_onnx, tmp_path_factory):
    """An export directory as `mobiledeploy export` writes it (manifest + artifacts)."""
    d = tmp_path_factory.mktemp("export")
    tiny_keras.save(d / "tiny_fp32.keras")
    shutil.copy(tiny_tflite, d / "tiny_fp32.tflite")
    shutil.copy(tiny_tflite_int8, d / "tiny_int8.tflite")
    shutil.copy(tiny_onnx, d / "tiny_fp32.onnx")
    arts = [("tiny_fp32.tflite", "tflite", "fp32"), ("tiny_int8.tflite", "tflite", "int8"),
            ("tiny_fp32.onnx", "onnx", "fp32"), ("tiny_fp32.keras", "keras", "fp32")]
    manifest = {"schema_version": 1,
                "model": {"arch": "mobilenet_v1", "alpha": 0.25, "resolution": RES, "classes": 10,
                          "input_shape": [1, RES, RES, 3], "preprocessing": "mobilenet", "source": "build"},
                "artifacts": [{"file": f, "format": fmt, "precision": p} for f, fmt, p in arts],
                "calibration": {"source": "random", "samples": 16, "preprocessing": "mobilenet"}}
    (d / "manifest.json").write_text(json.dumps(manifest))
    return d


@pytest.fixture(scope="module")
def digits_small():
    return load_dataset("digits", resolution=RES, split="test", limit=40)


def test_export_dir_eval_json_has_every_artifact_and_float_reference(export_dir, tmp_path):
    out = tmp_path / "eval.json"
    r = _run("eval", export_dir, "--limit", 40, "--json", out)
    assert r.exit_code == 0, r.output + r.stderr
    doc = json.loads(out.read_text())
    assert doc["schema_version"] == 1 and doc["data"]["samples"] == 40 and doc["data"]["source"] == "digits"
    by_name = {res["model"].rsplit("/", 1)[-1]: res for res in doc["results"]}
    assert list(by_name)[0] == "tiny_fp32.keras"  # the source first; it is the default reference
    assert set(by_name) == {"tiny_fp32.keras", "tiny_fp32.tflite", "tiny_int8.tflite", "tiny_fp32.onnx"}
    for name, res in by_name.items():
        assert res["status"] == "ok" and res["samples"] == 40
        assert 0.0 <= res["top1"] <= res["top5"] <= 1.0
    assert by_name["tiny_fp32.keras"]["agreement"] is None
    fp = by_name["tiny_fp32.tflite"]["agreement"]
    assert fp["reference"].endswith("tiny_fp32.keras")
    # float exports reproduce Keras: full agreement, tiny differences, high SQNR; infinite ("inf" in JSON)
    # where the CPU's kernels make them bit-identical (e.g. AVX-512 VNNI), so float() before comparing
    assert fp["top1_agreement"] == 1.0 and fp["max_abs_diff"] < 1e-4 and float(fp["sqnr_db"]) > 60
    assert by_name["tiny_fp32.onnx"]["agreement"]["top1_agreement"] == 1.0
    q = by_name["tiny_int8.tflite"]["agreement"]
    assert q["max_abs_diff"] > 1e-4 and float(q["sqnr_db"]) < float(fp["sqnr_db"])
    assert "tiny_int8.tflite" in r.output and "top-1" in r.output


def test_accuracy_and_agreement_known_answers(tiny_tflite, tiny_onnx, digits_small):
    """Labels built from the model's own argmax: top-1 must be exactly 1, shifted labels exactly 0."""
    first = evaluate([str(tiny_tflite)], digits_small)
    pred = first.results[0].predictions
    own = Dataset(x=digits_small.x, y=pred, class_names=digits_small.class_names, source="own",
                  preprocessing="mobilenet")
    wrong = Dataset(x=digits_small.x, y=(pred + 1) % 10, class_names=digits_small.class_names, source="wrong",
                    preprocessing="mobilenet")
    assert evaluate([str(tiny_tflite)], own).results[0].top1 == 1.0
    res = evaluate([str(tiny_tflite)], wrong).results[0]
    assert res.top1 == 0.0 and res.top5 is not None and res.top5 >= 0.0
    rep = evaluate([str(tiny_onnx)], own, reference=str(tiny_tflite))
    ref_row, onnx_row = rep.results  # the reference is evaluated too, first
    assert ref_row.model == str(tiny_tflite) and ref_row.agreement is None
    assert onnx_row.agreement.top1_agreement == 1.0 and onnx_row.top1 == 1.0
    # identical model as its own reference: infinite SQNR, zero difference
    same = evaluate([str(tiny_tflite)], own, reference=str(tiny_tflite)).results
    assert len(same) == 1


def test_reference_model_top1_matches_independent_numpy_argmax(reference_int8_tflite, tmp_path):
    """The number eval prints is the number measured: recompute it with LiteRT + numpy only."""
    from ai_edge_litert.interpreter import Interpreter

    ds = load_dataset("digits", resolution=RES, split="test", preprocessing="mobilenet")
    it = Interpreter(model_path=str(reference_int8_tflite))
    it.allocate_tensors()
    inp, outp = it.get_input_details()[0], it.get_output_details()[0]
    scale, zp = inp["quantization"]
    correct = 0
    for x, y in zip(ds.x, ds.y):
        q = np.clip(np.round(x / scale + zp), -128, 127).astype(inp["dtype"]) if scale else x
        it.set_tensor(inp["index"], q[None])
        it.invoke()
        correct += int(np.argmax(it.get_tensor(outp["index"])[0]) == y)
    independent = correct / len(ds)

    out = tmp_path / "e.json"
    r = _run("eval", reference_int8_tflite, "--preprocessing", "mobilenet", "--json", out)
    assert r.exit_code == 0, r.output + r.stderr
    res = json.loads(out.read_text())["results"][0]
    assert res["samples"] == 360
    assert res["top1"] == pytest.approx(independent, abs=1e-12)
    assert f"{100 * independent:.2f}%" in r.output
    # a trained model, not noise, and the int8 quality bar of the recorded numerics
    import tomllib

    num = tomllib.loads(open("models/mobilenet_v1_0.25_32_digits.numerics.toml").read())
    float_top1 = next(r["top1"] for r in num["result"] if r["format"] == "keras")
    assert independent > 0.95 and float_top1 - independent <= num["max_int8_top1_drop"]


@pytest.fixture(scope="module")
def reference_int8_tflite(tmp_path_factory):
    """The committed reference model, int8 TFLite (per-channel, 200 digits train samples)."""
    import tensorflow as tf

    from conftest import quiet
    from mobiledeploy.models.archs import load_model

    model = load_model("models/mobilenet_v1_0.25_32_digits.keras")
    cal = load_dataset("digits", resolution=RES, split="train", limit=200).x
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([x[None]] for x in cal)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    path = tmp_path_factory.mktemp("ref") / "ref_int8.tflite"
    with quiet():
        path.write_bytes(conv.convert())
    return path


# ---------------------------------------------------------------- errors: one line, exit 2 or 1


def _one_line_error(r, code, *needles):
    assert r.exit_code == code, (r.exit_code, r.output, r.stderr)
    lines = errors(r.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.output + r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_labels_missing_is_usage_error(tiny_tflite, tmp_path):
    r = _run("eval", tiny_tflite, "--data", "random", "--preprocessing", "mobilenet")
    _one_line_error(r, 2, "no labels")
    flat = tmp_path / "flat"
    flat.mkdir()
    from PIL import Image

    Image.new("RGB", (8, 8)).save(flat / "a.png")
    _one_line_error(_run("eval", tiny_tflite, "--data", flat, "--preprocessing", "unit"), 2, "no labels")


def test_class_count_mismatch_is_usage_error(tiny_tflite, tmp_path):
    px = np.zeros((4, 8, 8), np.uint8)
    np.savez(tmp_path / "three.npz", x=px, y=np.array([0, 1, 2, 0]), class_names=np.array(["a", "b", "c"]))
    r = _run("eval", tiny_tflite, "--data", tmp_path / "three.npz", "--preprocessing", "mobilenet")
    _one_line_error(r, 2, "10 output classes", "has 3")


def test_limit_larger_than_data_is_usage_error(tiny_tflite):
    r = _run("eval", tiny_tflite, "--limit", 1000, "--preprocessing", "mobilenet")
    _one_line_error(r, 2, "--limit 1000 is larger than the data set (360 samples")


def test_unknown_preprocessing_asks_for_the_flag(tiny_tflite, tiny_onnx):
    _one_line_error(_run("eval", tiny_tflite), 2, "preprocessing unknown", "--preprocessing")
    _one_line_error(_run("eval", tiny_onnx, "--preprocessing", "yolo"), 2, "unknown preprocessing 'yolo'")


def test_missing_model_and_bare_directory_are_usage_errors(tmp_path):
    _one_line_error(_run("eval", tmp_path / "nope.tflite"), 2, "model not found")
    _one_line_error(_run("eval", tmp_path), 2, "no manifest.json")


def test_corrupt_model_file_is_one_line_usage_error(tiny_tflite, tmp_path):
    bad = tmp_path / "bad_fp32.tflite"
    bad.write_bytes(tiny_tflite.read_bytes()[:4096])  # truncated: a TFLite header, no body
    r = _run("eval", tiny_tflite, bad, "--limit", 20, "--preprocessing", "mobilenet")
    _one_line_error(r, 2, "bad_fp32.tflite is not a readable tflite model")


def test_runtime_crash_is_an_error_row_and_exit_1(tiny_tflite, tiny_onnx, tmp_path, monkeypatch):
    """A runtime that dies (SIGSEGV in its child) fails its row; the other models are still evaluated."""
    from mobiledeploy.runtimes.child import FAULT_ENV

    monkeypatch.setenv(FAULT_ENV, f"segfault:{tiny_onnx.name}")
    out = tmp_path / "e.json"
    r = _run("eval", tiny_tflite, tiny_onnx, "--limit", 20, "--preprocessing", "mobilenet", "--json", out)
    _one_line_error(r, 1, "1 of 2 models failed", "crashed with signal SIGSEGV")
    rows = {x["model"]: x for x in json.loads(out.read_text())["results"]}
    assert rows[str(tiny_tflite)]["status"] == "ok" and rows[str(tiny_tflite)]["samples"] == 20
    assert rows[str(tiny_onnx)]["status"] == "error" and "SIGSEGV" in rows[str(tiny_onnx)]["error"]


def test_resolve_models_reads_manifest_entries(export_dir):
    refs = resolve_models([str(export_dir / "tiny_int8.tflite")])
    assert refs[0].precision == "int8" and refs[0].preprocessing == "mobilenet"
    assert refs[0].source.endswith("tiny_fp32.keras")
    with pytest.raises(UsageError):
        resolve_models([str(export_dir / "missing.onnx")])


def test_float_source_is_the_source_model_inside_the_export(export_dir, tmp_path):
    """Without a .keras artifact, per-layer uses the manifest's source_model file inside the
    directory; model.source (where export loaded the model from) is never followed."""
    d = tmp_path / "export"
    shutil.copytree(export_dir, d)
    (d / "tiny_fp32.keras").rename(d / "source.keras")
    m = json.loads((d / "manifest.json").read_text())
    m["artifacts"] = [a for a in m["artifacts"] if a["format"] != "keras"]
    m["model"]["source"] = str(export_dir / "tiny_fp32.keras")
    m["source_model"] = {"file": "source.keras"}
    (d / "manifest.json").write_text(json.dumps(m))
    assert resolve_models([str(d / "tiny_int8.tflite")])[0].source == str(d / "source.keras")
    del m["source_model"]  # an older export: only model.source, outside the directory
    (d / "manifest.json").write_text(json.dumps(m))
    assert resolve_models([str(d / "tiny_int8.tflite")])[0].source is None


def test_eval_on_image_folder_reports_skipped_files(tiny_tflite, tmp_path):
    from PIL import Image

    for k in range(10):
        (tmp_path / "imgs" / f"class_{k}").mkdir(parents=True)
        Image.new("RGB", (40, 30), (25 * k, 0, 255 - 25 * k)).save(tmp_path / "imgs" / f"class_{k}" / "a.png")
    (tmp_path / "imgs" / "class_3" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "e.json"
    r = _run("eval", tiny_tflite, "--data", tmp_path / "imgs", "--preprocessing", "mobilenet", "--json", out)
    assert r.exit_code == 0, r.output + r.stderr
    doc = json.loads(out.read_text())
    assert doc["data"]["samples"] == 10 and doc["data"]["skipped"] == 1 and doc["data"]["classes"] == 10
    assert doc["results"][0]["samples"] == 10
    assert "1 unreadable files skipped" in r.output

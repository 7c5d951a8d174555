"""`mobiledeploy export` through Click: a real run, and every bad input -> one line + exit code."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from mobiledeploy.cli import cli


def _run(*args):
    return CliRunner().invoke(cli, ["export", *map(str, args)])


def _one_line_error(result, code: int, *needles: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    err = result.stderr.strip()
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    last = err.splitlines()[-1]
    assert last.startswith("error: ")
    for n in needles:
        assert n in last, (n, last)


def test_export_run_prints_table_and_writes_manifest(tmp_path):
    out = tmp_path / "build"
    r = _run("--alpha", 0.25, "--res", 32, "--classes", 10, "--calib", "random", "--calib-samples", 8,
             "--validate-samples", 4, "--out", out, "--json", tmp_path / "m.json", "--wide")
    assert r.exit_code == 0, r.stderr
    files = ["mobilenet_v1_0.25_32_fp32.tflite", "mobilenet_v1_0.25_32_int8.tflite",
             "mobilenet_v1_0.25_32_fp32.onnx", "mobilenet_v1_0.25_32_int8.onnx"]
    for f in files:
        assert f in r.stdout and (out / f).is_file()
    assert "ok: logits max|diff|" in r.stdout and "logits: top-1 agree" in r.stdout
    assert "meaningless" in r.stderr  # --calib random is allowed but warned about
    assert "tflite int8" in r.stderr  # progress display on stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert [a["file"] for a in manifest["artifacts"]] == files
    assert manifest["calibration"] == {**manifest["calibration"], "source": "random", "samples": 8}
    assert json.loads((tmp_path / "m.json").read_text()) == manifest
    assert sorted(p.name for p in out.iterdir()) == sorted(files + ["manifest.json", "source.keras"])

    again = _run("--alpha", 0.25, "--res", 32, "--classes", 10, "--calib", "random", "--calib-samples", 8,
                 "--validate-samples", 4, "--formats", "tflite", "--quant", "fp32", "--out", out, "--json", "-")
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout)["artifacts"][0]["file"] == files[0]  # stdout is only the JSON


@pytest.mark.parametrize("args, code, needles", [
    (["--alpha", "0"], 2, ["--alpha", "alpha=0"]),
    (["--alpha", "-1"], 2, ["alpha=-1"]),
    (["--res", "31"], 2, ["--res", "resolution=31"]),
    (["--classes", "0"], 2, ["--classes", "classes=0"]),
    (["--quant", "fp32,int4"], 2, ["--quant", "'int4'"]),
    (["--formats", "tflite,coreml"], 2, ["--formats", "'coreml'"]),
    (["--arch", "resnet50"], 2, ["'resnet50'", "--arch"]),
    (["--model", "/nonexistent/m.keras"], 2, ["model not found", "--model"]),
    (["--weights", "/nonexistent/w.h5"], 2, ["weights file not found", "--weights"]),
    (["--calib", "/nonexistent/imgs"], 2, ["calibration data not found", "--calib"]),
    (["--onnx-quant-types", "u8u8"], 2, ["--onnx-quant-types"]),
    (["--atol", "-1"], 2, ["--atol"]),
    (["--rtol", "nan"], 2, ["--rtol"]),
])
def test_usage_errors(args, code, needles, tmp_path):
    _one_line_error(_run(*args, "--out", tmp_path / "o"), code, *needles)
    assert not (tmp_path / "o").exists()


def test_output_dir_that_cannot_be_written(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _one_line_error(_run("--out", blocker / "sub"), 2, "cannot create output directory", "--out")
    _one_line_error(_run("--out", blocker), 2, "--out")


def test_weights_dir_is_not_a_file(tmp_path):
    _one_line_error(_run("--weights", tmp_path), 2, "not a readable file", "--weights")


@pytest.mark.parametrize("content", [None, b"not an image"])
def test_empty_or_corrupt_calibration_folder(tmp_path, content):
    folder = tmp_path / "calib"
    folder.mkdir()
    if content is not None:
        (folder / "a.png").write_bytes(content)
        (folder / "b.jpg").write_bytes(content)
    r = _run("--alpha", 0.25, "--res", 32, "--calib", folder, "--out", tmp_path / "o")
    _one_line_error(r, 2, "empty", *(["2 unreadable files skipped"] if content else []))
    assert not (tmp_path / "o").exists()


def test_weights_that_do_not_fit(tmp_path, tiny_keras):
    w = tmp_path / "tiny.weights.h5"
    tiny_keras.save_weights(str(w))  # alpha 0.25, 10 classes
    r = _run("--alpha", 0.5, "--res", 32, "--classes", 10, "--weights", w, "--calib", "random", "--out",
             tmp_path / "o")
    _one_line_error(r, 2, "does not fit mobilenet_v1 alpha=0.5", "--weights")


def test_lambda_model_needs_unsafe_load(tmp_path):
    import keras

    inp = keras.Input((32, 32, 3))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inp)
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    path = tmp_path / "lambda.keras"
    keras.Model(inp, out).save(str(path))
    _one_line_error(_run("--model", path, "--out", tmp_path / "o"), 2, "--unsafe-load")
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"PK\x03\x04 truncated")
    _one_line_error(_run("--model", corrupt, "--out", tmp_path / "o"), 2, "cannot load Keras model")


def test_bad_input_never_imports_tensorflow(tmp_path):
    code = ("import sys; from mobiledeploy.cli import cli; "
            "rc = cli.main(['export', '--alpha', '0'], standalone_mode=False); "
            "print(rc, 'tensorflow' in sys.modules, 'keras' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["2", "False", "False"], r.stderr

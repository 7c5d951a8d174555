"""Hostile and odd inputs: files that never end, empty or non-finite data, bad numbers.

Each case is one line on stderr with exit code 2 (usage) and no traceback, quickly.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mobiledeploy.cli import cli
from mobiledeploy.errors import UsageError


def run(*args):
    r = CliRunner().invoke(cli, list(map(str, args)))
    return r.exit_code, r.output


def one_error_line(out: str) -> str:
    lines = [x for x in out.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in out, out
    return lines[0]


# ---------------------------------------------------------------- files that never end


@pytest.fixture
def odd_models(tmp_path):
    os.mkfifo(tmp_path / "m.onnx")
    os.mkfifo(tmp_path / "m.tflite")
    os.mkfifo(tmp_path / "m.keras")
    os.symlink("/dev/zero", tmp_path / "zero.onnx")
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "dir.onnx").mkdir()
    return tmp_path


@pytest.mark.parametrize("name, what", [("m.onnx", "FIFO"), ("m.tflite", "FIFO"), ("m.keras", "FIFO"),
                                        ("zero.onnx", "device"), ("empty.onnx", "empty"),
                                        ("dir.onnx", "directory")])
@pytest.mark.parametrize("command", [["info"], ["estimate", "--target", "pixel4-big"]])
def test_info_and_estimate_refuse_files_that_never_end(odd_models, name, what, command):
    t = time.monotonic()
    code, out = run(*command, odd_models / name)
    assert time.monotonic() - t < 10
    assert code == 2 and what in one_error_line(out)


@pytest.mark.parametrize("name", ["m.onnx", "m.tflite", "zero.onnx"])
def test_bench_on_a_fifo_returns_quickly(odd_models, name):
    t = time.monotonic()
    code, out = run("bench", "--timeout", 5, "--runs", 1, "--warmup", 0, odd_models / name)
    assert time.monotonic() - t < 10
    assert code == 2 and name in one_error_line(out)


# ---------------------------------------------------------------- data sets


@pytest.fixture
def bad_data(tmp_path):
    (tmp_path / "zero.npz").write_bytes(b"")
    np.savez(tmp_path / "noarrays.npz")
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 32, 32, 3), np.uint8), y=np.zeros(0, np.int64))
    np.savez(tmp_path / "nan.npz", x=np.full((4, 32, 32, 3), np.nan, np.float32), y=np.zeros(4, np.int64))
    np.savez(tmp_path / "inf.npz", x=np.full((4, 32, 32, 3), np.inf, np.float32), y=np.zeros(4, np.int64))
    (tmp_path / "notzip.npz").write_bytes(b"PK\x03\x04 not really a zip")
    return tmp_path


BAD_DATA = [("zero.npz", "empty"), ("noarrays.npz", "no array 'x'"), ("empty.npz", "is empty"),
            ("nan.npz", "NaN or infinite"), ("inf.npz", "NaN or infinite"), ("notzip.npz", "cannot read")]


@pytest.mark.parametrize("name, message", BAD_DATA)
def test_the_data_loader_refuses_empty_and_non_finite_data(bad_data, name, message):
    from mobiledeploy.data.datasets import load_dataset

    with pytest.raises(UsageError, match=message):
        load_dataset(bad_data / name, resolution=32)


@pytest.mark.parametrize("name, message", BAD_DATA)
def test_export_calib_bad_data_is_exit_2_not_130(bad_data, tmp_path, name, message):
    code, out = run("export", "--arch", "mobilenet_v1", "--alpha", 0.25, "--res", 32, "--classes", 10,
                    "--calib", bad_data / name, "--out", tmp_path / "out")
    assert code == 2 and message in one_error_line(out)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name, message", BAD_DATA[:4])
def test_train_and_eval_bad_data_is_exit_2(bad_data, tmp_path, tiny_tflite, name, message):
    code, out = run("train", "--data", bad_data / name, "--res", 32, "--alpha", 0.25, "--epochs", 1,
                    "--out", tmp_path / "t.keras")
    assert code == 2 and message in one_error_line(out)
    code, out = run("eval", tiny_tflite, "--data", bad_data / name, "--preprocessing", "mobilenet")
    assert code == 2 and message in one_error_line(out)


# ---------------------------------------------------------------- dynamic dimensions, empty models


def _onnx(path, nodes, inputs, inits=()):
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT,
                                                                             None)], list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


@pytest.fixture
def dynamic_onnx(tmp_path):
    """A detector-like input [N, 3, H, W] into one 3x3 convolution with 8 filters."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(8, 3, 3, 3)).astype(np.float32), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])
    return _onnx(tmp_path / "det.onnx", [helper.make_node("Conv", ["x", "w"], ["y"])], [x], [w])


@pytest.mark.parametrize("command", [["info"], ["estimate", "--target", "pixel4-big"]])
def test_dynamic_dimensions_are_refused_without_shape(dynamic_onnx, command):
    code, out = run(*command, dynamic_onnx)
    line = one_error_line(out)
    assert code == 2 and "'x'" in line and "--shape x=Nx3xNxN" in line


def test_info_counts_the_given_shape(dynamic_onnx, tmp_path):
    import json

    for res in (64, 128):
        code, out = run("info", dynamic_onnx, "--shape", f"x=1x3x{res}x{res}", "--json", tmp_path / f"{res}.json")
        assert code == 0, out
        stats = json.loads((tmp_path / f"{res}.json").read_text())
        out_hw = res - 2  # 3x3, no padding
        assert stats["macs"] == 8 * 27 * out_hw * out_hw
        assert stats["input_shape"] == [1, 3, res, res]


@pytest.mark.parametrize("shape, message", [("x=1x3x64", "does not fit"), ("x=1x4x64x64", "does not fit"),
                                            ("y=1x3x64x64", "no input named 'y'")])
def test_a_shape_that_does_not_fit_is_refused(dynamic_onnx, shape, message):
    code, out = run("info", dynamic_onnx, "--shape", shape)
    assert code == 2 and message in one_error_line(out)


def test_a_repeated_shape_is_refused(dynamic_onnx):
    code, out = run("info", dynamic_onnx, "--shape", "x=1x3x64x64", "--shape", "x=1x3x32x32")
    assert code == 2 and "given twice" in one_error_line(out)


def test_bench_estimates_the_measured_shape(dynamic_onnx, tmp_path):
    import json

    ms = {}
    for res in (32, 96):
        code, out = run("bench", dynamic_onnx, "--shape", f"x=1x3x{res}x{res}", "--target", "pixel4-big",
                        "--runs", 3, "--warmup", 0, "--json", tmp_path / f"{res}.json")
        assert code == 0, out
        est = json.loads((tmp_path / f"{res}.json").read_text())["device_estimates"]
        (entry,) = est.values()
        ms[res] = entry["estimate_ms"]
    assert ms[96] > ms[32]  # 9x the pixels: the estimate follows --shape


def test_fallback_shapes_of_ops_that_do_not_fit_are_not_internal_errors(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    p = _onnx(tmp_path / "rec.onnx", [helper.make_node("MatMul", ["x", "w"], ["h"]),
                                      helper.make_node("Transpose", ["h"], ["y"], perm=[0, 2, 1])], [x], [w])
    code, out = run("info", p)
    assert "internal error" not in out and code in (0, 2), out


def test_weightless_and_empty_models_are_errors_not_zeros(tmp_path):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    p = _onnx(tmp_path / "relu.onnx", [helper.make_node("Relu", ["x"], ["y"])], [x])
    for command in (["info"], ["estimate", "--target", "pixel4-big"]):
        code, out = run(*command, p)
        assert code == 2 and "no weights" in one_error_line(out)


# ---------------------------------------------------------------- numbers and outputs, checked up front


@pytest.mark.parametrize("args, message", [
    (["export", "--alpha", "1e9"], "needs about"),
    (["export", "--res", "100000"], "needs about"),
    (["export", "--alpha", "nan"], "alpha"),
    (["info", "--alpha", "1e9"], "needs about"),
    (["eval", "MODEL", "--timeout", "-1"], "--timeout"),
    (["eval", "MODEL", "--timeout", "0"], "--timeout"),
    (["eval", "MODEL", "--timeout", "nan"], "--timeout"),
    (["bench", "MODEL", "--timeout", "inf"], "--timeout"),
    (["bench", "MODEL", "--min-time", "inf"], "--min-time"),
    (["bench", "MODEL", "--shape", "x=1x3", "--shape", "x=1x4"], "given twice"),
])
def test_bad_numbers_fail_fast_before_tensorflow(tmp_path, tiny_tflite, args, message):
    t = time.monotonic()
    code, out = run(*[str(tiny_tflite) if a == "MODEL" else a for a in args],
                    *(["--out", tmp_path / "out"] if args[0] == "export" else []))
    assert code == 2 and message in one_error_line(out), out
    assert time.monotonic() - t < 5  # refused up front, not after building or converting
    assert not (tmp_path / "out").exists()


def test_threads_zero_in_a_calibration_csv_is_refused(tmp_path):
    csv = tmp_path / "m.csv"
    csv.write_text("arch,alpha,res,precision,threads,latency_ms\nmobilenet_v1,0.25,128,fp32,0,3.1\n")
    code, out = run("target", "calibrate", "--measurements", csv, "--out", tmp_path / "t.toml")
    assert code == 2 and "threads" in one_error_line(out)


def test_calibration_csv_models_stay_beside_the_csv(tmp_path, tiny_tflite):
    csv = tmp_path / "m.csv"
    csv.write_text(f"model,precision,latency_ms\n{tiny_tflite},fp32,3.1\n")
    code, out = run("target", "calibrate", "--measurements", csv, "--out", tmp_path / "t.toml")
    assert code == 2 and "absolute path" in one_error_line(out)


def test_train_checks_a_read_only_out_before_training(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as root: a read-only directory is still writable")
        t = time.monotonic()
        code, out = run("train", "--data", "digits", "--epochs", 50, "--out", ro / "m.keras")
        assert code == 2 and "permission denied" in one_error_line(out)
        assert time.monotonic() - t < 5  # before any epoch
    finally:
        ro.chmod(0o755)


def test_train_checks_an_out_that_is_a_directory_before_training(tmp_path):
    (tmp_path / "m.keras").mkdir()
    t = time.monotonic()
    code, out = run("train", "--data", "digits", "--epochs", 50, "--out", tmp_path / "m.keras")
    assert code == 2 and "is a directory" in one_error_line(out)
    assert time.monotonic() - t < 5


@pytest.mark.parametrize("command, kind", [
    (["check", "--budget", "FIFO"], "budget file"),
    (["bench", "--target-file", "FIFO", "MODEL"], "target profile"),
    (["target", "calibrate", "--measurements", "FIFO", "--out", "OUT"], "measurements file"),
])
def test_text_inputs_that_never_end_are_refused(tmp_path, tiny_tflite, command, kind):
    fifo = tmp_path / "f.toml"
    os.mkfifo(fifo)
    sub = {"FIFO": fifo, "MODEL": tiny_tflite, "OUT": tmp_path / "o.toml"}
    code, out = run(*[sub.get(a, a) for a in command])
    assert code == 2 and "FIFO" in one_error_line(out)


def test_a_manifest_that_is_a_fifo_is_refused(tmp_path):
    d = tmp_path / "exp"
    d.mkdir()
    (d / "m.tflite").write_bytes(b"\0\0\0\0TFL3" + b"\0" * 32)
    os.mkfifo(d / "manifest.json")
    code, out = run("bench", "--timeout", 5, d)
    assert code == 2 and "FIFO" in one_error_line(out)


def test_bench_gives_a_fifo_its_own_error_row_and_runs_the_others(odd_models, tiny_tflite, tmp_path):
    import json

    t = time.monotonic()
    code, out = run("bench", "--timeout", 5, "--runs", 2, "--warmup", 0, tiny_tflite, odd_models / "m.onnx",
                    "--json", tmp_path / "b.json")
    assert time.monotonic() - t < 30
    rows = {Path(r["model"]).name: r for r in json.loads((tmp_path / "b.json").read_text())["results"]}
    assert rows[tiny_tflite.name]["status"] == "ok"
    assert rows["m.onnx"]["status"] == "error" and "FIFO" in rows["m.onnx"]["error"]
    assert code == 2 and "Traceback" not in out


def test_a_tflite_with_a_tensor_name_that_is_not_utf8_is_exit_2(tiny_tflite_int8, tmp_path):
    """Found by benchmarks/fuzz_inputs.py: LiteRT raises UnicodeDecodeError reading tensor names."""
    data = bytearray(tiny_tflite_int8.read_bytes())
    i = data.rfind(b"arith.constant")  # a constant tensor's name
    assert i > 0
    data[i + 3] = 0xE9  # a lead byte followed by ASCII: not UTF-8
    bad = tmp_path / "bad_name.tflite"
    bad.write_bytes(bytes(data))
    for command in (["info"], ["estimate", "--target", "pixel4-big"]):
        code, out = run(*command, bad)
        assert code == 2 and "cannot read TFLite model" in one_error_line(out)


def test_a_path_with_a_nul_byte_in_a_file_is_exit_2(tmp_path, tiny_tflite):
    """Found by benchmarks/fuzz_inputs.py: a NUL byte in a CSV's model path was an internal ValueError."""
    csv = tmp_path / "m.csv"
    csv.write_text("model,precision,latency_ms\nti\0ny.tflite,fp32,3.1\n")
    code, out = run("target", "calibrate", "--measurements", csv, "--out", tmp_path / "t.toml")
    assert code == 2 and "NUL" in one_error_line(out)


def test_a_data_file_that_never_ends_is_refused(tmp_path):
    from mobiledeploy.data.datasets import load_dataset

    os.mkfifo(tmp_path / "d.npz")
    os.mkfifo(tmp_path / "labels.txt")
    with pytest.raises(UsageError, match="FIFO"):
        load_dataset(tmp_path / "d.npz", resolution=32, flag="--calib")
    with pytest.raises(UsageError, match="FIFO"):
        load_dataset("digits", resolution=32, labels_file=tmp_path / "labels.txt")

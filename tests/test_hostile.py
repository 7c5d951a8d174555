"""Hostile and odd inputs: files that never end, empty or non-finite data, bad numbers.

Each case is one line on stderr with exit code 2 (usage) and no traceback, quickly.
"""

from __future__ import annotations

import os
import time

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
    from mobiledeploy.accuracy.data import load_dataset

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

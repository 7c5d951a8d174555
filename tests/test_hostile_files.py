"""Hostile files beside and instead of models: unrelated models and FIFOs next to the one being
evaluated, outputs that cannot be written, a Keras archive that inflates to gigabytes, signals
to a running bench, corrupt and renamed model files. Tiny ONNX models are built with
onnx.helper (no TensorFlow)."""

from __future__ import annotations

import builtins
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mobiledeploy.accuracy.evaluate import EvalConfig, run_eval
from mobiledeploy.cli import cli
from test_eval_conventions import tiny_onnx

from conftest import one_line_error

MOBILEDEPLOY = [sys.executable, "-m", "mobiledeploy"]


def onnx_at(path: Path, res: int, *, seed: int = 0) -> Path:
    """The tiny NCHW ONNX classifier of test_eval_conventions, with a res x res input."""
    import onnx

    tiny_onnx(path, seed=seed)
    m = onnx.load(str(path))
    dims = m.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_value = dims[3].dim_value = res
    onnx.save(m, str(path))
    return path


def dynamic(fp32: Path, dest: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32), str(dest), weight_type=QuantType.QInt8)
    return dest


# ---------------------------------------------------------------- eval FILE: only its own float sibling


@pytest.fixture
def quantized(tmp_path):
    """tiny_dynamic.onnx (32x32) in a folder of its own; its float model is kept elsewhere."""
    (tmp_path / "src").mkdir()
    (tmp_path / "m").mkdir()
    fp32 = onnx_at(tmp_path / "src" / "tiny_fp32.onnx", 32)
    return fp32, dynamic(fp32, tmp_path / "m" / "tiny_dynamic.onnx")


def _eval(model: Path):
    return run_eval(EvalConfig(models=(str(model),), preprocessing="mobilenet", limit=20))


def test_sibling_names_replace_or_drop_the_precision_word_same_format_first():
    from mobiledeploy.models.siblings import candidate_names

    names = candidate_names("d/mobilenet_v1_0.25_128_int8.tflite", "tflite")
    assert names[:3] == ["mobilenet_v1_0.25_128_fp32.tflite", "mobilenet_v1_0.25_128_float32.tflite",
                         "mobilenet_v1_0.25_128.tflite"]
    assert set(names[3:]) == {f"mobilenet_v1_0.25_128{s}.{x}" for s in ("_fp32", "_float32", "")
                              for x in ("onnx", "keras")}
    assert candidate_names("model_int8.tflite", "tflite")[:3] == ["model_fp32.tflite", "model_float32.tflite",
                                                                 "model.tflite"]
    assert candidate_names("m-dynamic.onnx", "onnx")[0] == "m-fp32.onnx"
    assert candidate_names("efficientnet_lite0.tflite", "tflite") == []  # no precision word: no sibling


def test_an_unrelated_float_model_beside_the_file_is_not_its_reference(quantized):
    _, q = quantized
    onnx_at(q.parent / "deeplabv3_fp32.onnx", 48, seed=1)  # another model, another resolution
    rep = _eval(q)
    assert [r.model for r in rep.results] == [str(q)] and rep.results[0].agreement is None


def test_a_same_name_float_model_of_another_shape_is_not_its_reference(quantized):
    _, q = quantized
    onnx_at(q.parent / "tiny_fp32.onnx", 48)
    rep = _eval(q)
    assert [r.model for r in rep.results] == [str(q)] and rep.results[0].agreement is None


@pytest.mark.parametrize("name", ["tiny_fp32.onnx", "tiny.onnx", "tiny_float32.onnx"])
def test_the_float_sibling_of_the_same_model_is_the_reference(quantized, name):
    fp32, q = quantized
    sib = q.parent / name
    sib.write_bytes(fp32.read_bytes())
    onnx_at(q.parent / "aaa_fp32.onnx", 32, seed=2)  # same shape, another model: never chosen
    (res,) = [r for r in _eval(q).results if r.model == str(q)]
    assert res.agreement is not None and res.agreement.reference == str(sib)


def test_other_files_beside_the_model_are_never_opened_or_listed(quantized, monkeypatch):
    fp32, q = quantized
    folder = q.parent
    (folder / "tiny_fp32.onnx").write_bytes(fp32.read_bytes())
    (folder / "garbage.tflite").write_bytes(b"\0garbage" * 64)
    onnx_at(folder / "deeplabv3_fp32.onnx", 48, seed=1)
    os.mkfifo(folder / "pipe.tflite")
    seen: list[str] = []

    def spy(real):
        def wrapped(file, *a, **k):
            if isinstance(file, (str, bytes, os.PathLike)):
                seen.append(os.path.realpath(os.fsdecode(file)))
            return real(file, *a, **k)
        return wrapped

    for mod, name in ((builtins, "open"), (io, "open"), (os, "open"), (os, "listdir"), (os, "scandir")):
        monkeypatch.setattr(mod, name, spy(getattr(mod, name)))
    rep = _eval(q)
    monkeypatch.undo()
    assert any(r.agreement is not None for r in rep.results)
    here = {p for p in seen if Path(p).parent == folder.resolve() or p == str(folder.resolve())}
    allowed = {str((folder / n).resolve()) for n in ("tiny_dynamic.onnx", "tiny_fp32.onnx", "manifest.json")}
    assert here and here <= allowed, here - allowed


def test_a_fifo_with_the_sibling_name_is_skipped_without_hanging(quantized):
    _, q = quantized
    os.mkfifo(q.parent / "tiny_fp32.onnx")
    os.mkfifo(q.parent / "tiny.tflite")
    r = subprocess.run(MOBILEDEPLOY + ["eval", str(q), "--preprocessing", "mobilenet", "--limit", "10"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr


# ---------------------------------------------------------------- outputs that cannot be written


def _cli(*args):
    return CliRunner().invoke(cli, list(map(str, args)))


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="Linux /proc and /sys")
@pytest.mark.parametrize("out", ["/proc/m.keras", "/sys/m.keras"])
def test_train_refuses_an_out_in_proc_or_sys_before_training(out):
    one_line_error(_cli("train", "--out", out, "--epochs", 1), 2, str(Path(out).parent), "--out")
    assert not Path(out).exists()


def test_train_refuses_a_fifo_as_out_and_leaves_it_alone(tmp_path):
    fifo = tmp_path / "m.keras"
    os.mkfifo(fifo)
    one_line_error(_cli("train", "--out", fifo, "--epochs", 1), 2, "FIFO", "--out")
    assert fifo.is_fifo()


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="Linux /proc and /sys")
@pytest.mark.parametrize("out", ["/proc", "/sys/kernel"])
def test_export_refuses_an_out_directory_where_no_file_can_be_created(out):
    one_line_error(_cli("export", "--arch", "mobilenet_v1", "--alpha", 0.25, "--res", 32, "--classes", 2,
                        "--out", out), 2, out, "--out")


# ---------------------------------------------------------------- signals to a running bench


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _poll(cond, seconds: float = 60.0) -> bool:
    import time

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="Linux /proc")
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
def test_a_terminated_bench_takes_its_child_with_it(tmp_path, sig):
    import signal

    m = onnx_at(tmp_path / "tiny_fp32.onnx", 32)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, MOBILEDEPLOY_TEST_CHILD_FAULT="sleep", TMPDIR=str(tmp))  # the child runs until killed
    # the bench process gets the signal's default disposition even when the test run itself was
    # started under nohup (SIGHUP ignored, inherited): such a caller's choice is left alone by design
    parent = subprocess.Popen(MOBILEDEPLOY + ["bench", str(m), "--runs", "100000", "--timeout", "3000"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              preexec_fn=lambda: signal.signal(getattr(signal, sig), signal.SIG_DFL))
    child = None
    try:
        assert _poll(lambda: bool(_children(parent.pid))), "the child never started"
        (child,) = _children(parent.pid)
        parent.send_signal(getattr(signal, sig))
        _, err = parent.communicate(timeout=60)
        assert parent.returncode == 128 + getattr(signal, sig)
        assert err.strip().splitlines()[-1] == f"error: terminated by {sig}" and "Traceback" not in err
        assert _poll(lambda: not _alive(child)), "the child outlived its parent"
        assert not list(tmp.iterdir())  # its temporary folder is gone too
    finally:
        for pid in (parent.pid, child):
            if pid and _alive(pid):
                os.kill(pid, signal.SIGKILL)
        parent.wait()


# ---------------------------------------------------------------- Keras archives: truncated, inflating

KERAS = Path(__file__).resolve().parents[1] / "models" / "mobilenet_v1_0.25_32_digits.keras"


def _keras_zip(dest: Path, config_bytes: int, *, weights: bytes = b"\0" * 64) -> Path:
    """A .keras-shaped zip whose config.json is ``config_bytes`` spaces, written in chunks."""
    import zipfile

    chunk = b" " * 2**20
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr("metadata.json", "{}")
        with z.open("config.json", "w", force_zip64=True) as f:
            left = config_bytes
            while left:
                f.write(chunk[:min(left, len(chunk))])
                left -= min(left, len(chunk))
        z.writestr("model.weights.h5", weights)
    return dest


def _claim_size(path: Path, name: str, size: int) -> None:
    """Patch the uncompressed size the zip's headers give for ``name`` (the data stays small)."""
    import struct

    buf = bytearray(path.read_bytes())
    key = name.encode()
    for sig, off_size, off_name in ((b"PK\x01\x02", 24, 46), (b"PK\x03\x04", 22, 30)):
        at = buf.find(sig)
        while at >= 0:
            if buf[at + off_name:at + off_name + len(key)] == key:
                buf[at + off_size:at + off_size + 4] = struct.pack("<I", size)
            at = buf.find(sig, at + 4)
    path.write_bytes(bytes(buf))


def test_a_keras_config_that_inflates_past_64_mib_is_refused_before_loading(tmp_path):
    bomb = _keras_zip(tmp_path / "bomb.keras", 65 * 2**20)
    assert bomb.stat().st_size < 2 * 2**20
    r = _cli("info", bomb)
    one_line_error(r, 2, str(bomb), "config.json inflates to 65.0 MiB")


def test_a_keras_archive_that_inflates_past_2_gib_is_refused_before_loading(tmp_path):
    big = _keras_zip(tmp_path / "big.keras", 100)
    _claim_size(big, "model.weights.h5", 3 * 2**30)
    one_line_error(_cli("info", big), 2, str(big), "inflates to 3.0 GiB")


@pytest.mark.parametrize("command", [["info"], ["eval", "--limit", 5]])
def test_a_truncated_keras_file_is_named_as_given_and_said_to_be_incomplete(tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    data = KERAS.read_bytes()
    Path("cut.keras").write_bytes(data[:len(data) // 2])
    r = _cli(command[0], "cut.keras", *command[1:])
    one_line_error(r, 2, "'cut.keras'", "not a valid or complete Keras archive")
    last = r.stderr.strip().splitlines()[-1]
    assert "--model" not in last and "not found" not in last.lower()


# ---------------------------------------------------------------- corrupt and renamed model files


@pytest.fixture
def corrupt(tmp_path):
    (tmp_path / "c.tflite").write_bytes(b"\x1c\0\0\0TFL3" + b"\x07" * 200)  # TFLite magic, garbage after it
    (tmp_path / "c.onnx").write_bytes(b"\x08\x07\x12\x04abcd" + b"\xff" * 200)  # an ONNX start, garbage after it
    return tmp_path


@pytest.mark.parametrize("name, runtime", [("c.tflite", "LiteRT"), ("c.onnx", "ONNX Runtime")])
def test_info_bench_and_eval_agree_that_a_corrupt_model_file_is_a_usage_error(corrupt, name, runtime):
    for args in (["info"], ["eval", "--preprocessing", "mobilenet"]):
        one_line_error(_cli(*args, corrupt / name), 2, name, "is not a readable")
    one_line_error(_cli("bench", "--runs", 1, "--warmup", 0, corrupt / name), 2, name, f"{runtime} cannot load")


def test_an_onnx_file_named_tflite_is_read_as_onnx(tmp_path):
    m = onnx_at(tmp_path / "m.onnx", 32)
    renamed = tmp_path / "m.tflite"
    renamed.write_bytes(m.read_bytes())
    from mobiledeploy.models.inspect import detect_format

    assert detect_format(renamed) == "onnx"
    r = _cli("info", renamed, "--no-layers")
    assert r.exit_code == 0 and "onnx" in r.stdout, r.stderr
    r = _cli("bench", renamed, "--runs", 2, "--warmup", 0, "--json", "-")
    assert r.exit_code == 0, r.stderr
    assert '"runtime": "onnxruntime"' in r.stdout

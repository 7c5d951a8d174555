"""Every table fits 80 and 120 columns with every model name and figure in full; piped
runs print plain progress lines and no TensorFlow logs; every JSON output is stamped."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from datetime import datetime
from io import StringIO
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner
from rich.console import Console

from mobiledeploy.cli import cli
from mobiledeploy.cli.table import Column, render

WIDTHS = (80, 120)
ROOT = Path(__file__).resolve().parents[1]


def run(args, width: int | None = None, **kw):
    env = {"COLUMNS": str(width)} if width else {}
    r = CliRunner().invoke(cli, [str(a) for a in args], env=env, **kw)
    assert r.exit_code == 0, (r.output, r.stderr)
    return r


def fits(text: str, width: int) -> None:
    lines = text.splitlines()
    assert lines and max(len(line) for line in lines if not line.startswith("not shown at")) <= width, text


def dropped(text: str) -> list[str]:
    line = next((ln for ln in text.splitlines() if ln.startswith("not shown at")), "")
    return [h.strip() for h in line.split(":", 1)[1].rsplit("(", 1)[0].split(",")] if line else []


# ---------------------------------------------------------------- the layout itself


def test_layout_drops_low_priority_columns_never_cuts_a_name_or_digit():
    cols = [Column("model"), Column("size", "right", priority=1), Column("p50 ms", "right"),
            Column("p90 ms", "right", priority=3), Column("notes", fold=True, priority=2)]
    rows = [("mobilenet_v3_large_1.0_224_int8_per_channel.tflite", "12345.6 KiB", "123.456789", "234.567891",
             "a long free-text note that may fold onto several lines " * 2)]
    for width in (80, 120):
        con = Console(width=width, record=True, file=StringIO())
        render(con, cols, rows)
        text = con.export_text()
        fits(text, width)
        assert rows[0][0] in text and "123.456789" in text  # priority 0: always, in full
        shown = [c.header for c in cols if c.header not in dropped(text)]
        assert "model" in shown and "p50 ms" in shown
        for c, v in zip(cols, rows[0]):
            if c.header in shown and not c.fold:
                assert v in text  # a column is shown whole or not at all
        if dropped(text):  # the lowest priority goes first
            assert "p90 ms" in dropped(text)
    con = Console(width=50, record=True, file=StringIO())  # too narrow even for the essentials:
    render(con, cols, rows)  # they fold, never an ellipsis
    text = con.export_text()
    assert "…" not in text and "mobilenet_v3" in text, text
    con = Console(width=60, record=True, file=StringIO())
    render(con, cols, rows, wide=True)
    text = con.export_text()
    assert not dropped(text) and all(v in text for v in rows[0][:4])


def test_piped_width_is_columns_else_80(monkeypatch):
    from mobiledeploy.cli import table

    monkeypatch.setenv("COLUMNS", "97")
    assert table.width() == 97
    monkeypatch.delenv("COLUMNS")
    if not os.isatty(1):
        assert table.width() == table.PIPE_WIDTH == 80


# ---------------------------------------------------------------- every command's table


@pytest.fixture(scope="module")
def tiny_dir(tiny_tflite, tiny_onnx, tmp_path_factory):
    """An export directory of the tiny float models, with a manifest (preprocessing known)."""
    import shutil

    d = tmp_path_factory.mktemp("term")
    shutil.copy(tiny_tflite, d / "tiny_fp32.tflite")
    shutil.copy(tiny_onnx, d / "tiny_fp32.onnx")
    (d / "manifest.json").write_text(json.dumps({
        "schema_version": 1, "model": {"resolution": 32, "classes": 10, "preprocessing": "mobilenet"},
        "artifacts": [{"file": "tiny_fp32.tflite", "format": "tflite", "precision": "fp32"},
                      {"file": "tiny_fp32.onnx", "format": "onnx", "precision": "fp32"}]}))
    return d


@pytest.mark.parametrize("width", WIDTHS)
def test_bench_table_with_estimate_and_accuracy_fits(width, tiny_dir, tmp_path):
    out = tmp_path / "b.json"
    r = run(["bench", tiny_dir, "--runs", 3, "--warmup", 0, "--target", "pixel4", "--data", "digits",
             "--json", out], width)
    fits(r.stdout, width)
    doc = json.loads(out.read_text())
    for res in doc["results"]:
        name = Path(res["model"]).name
        assert name in r.stdout
        assert f"{res['latency_ms']['p50']:.3f}" in r.stdout  # the p50 column is never dropped
        assert f"{doc['device_estimates'][res['model']]['estimate_ms']:.2f}" in r.stdout
        assert f"{100 * doc['accuracy'][res['model']]['top1']:.2f}%" in r.stdout
        # piped: one plain stderr line as each model starts and one as it ends
        assert f"bench {res['model']} (" in r.stderr and f"bench {res['model']}: p50 " in r.stderr
    for header in dropped(r.stdout):
        assert header not in ("model", "p50 ms")
    wide = run(["bench", tiny_dir / "tiny_fp32.tflite", "--runs", 3, "--warmup", 0, "--wide"], width)
    assert "p99 ms" in wide.stdout and "mem MiB" in wide.stdout and not dropped(wide.stdout)


@pytest.mark.parametrize("width", WIDTHS)
def test_eval_table_fits(width, tiny_dir, tmp_path):
    out = tmp_path / "e.json"
    r = run(["eval", tiny_dir, "--limit", 50, "--json", out], width)
    fits(r.stdout, width)
    for res in json.loads(out.read_text())["results"]:
        assert Path(res["model"]).name in r.stdout and f"{100 * res['top1']:.2f}%" in r.stdout
        a = res.get("agreement")
        if a:
            assert f"{100 * a['top1_agreement']:.2f}%" in r.stdout
            sqnr = float(a["sqnr_db"])
            assert ("inf" if math.isinf(sqnr) else f"{sqnr:.1f}") in r.stdout
    assert f"eval {tiny_dir / 'tiny_fp32.onnx'}: " in r.stderr  # progress lines when piped


@pytest.mark.parametrize("width", WIDTHS)
def test_targets_table_fits_with_every_name(width):
    from mobiledeploy.targets import list_targets

    r = run(["targets"], width)
    fits(r.stdout, width)
    for t in list_targets():
        assert re.search(rf"│ {re.escape(t.name)} +│", r.stdout), t.name  # whole, in its own cell
        assert str(t.threads or "all") in r.stdout
    one = run(["targets", "pixel4"], width)
    fits(one.stdout, width)


@pytest.mark.parametrize("width", WIDTHS)
def test_info_and_estimate_tables_fit(width, tiny_onnx):
    r = run(["info", tiny_onnx], width)
    fits(r.stdout, width)
    doc = json.loads(run(["info", tiny_onnx, "--json", "-"]).stdout)
    for layer in doc["layers"]:
        assert f"{layer['macs']:,}" in r.stdout and f"{layer['params']:,}" in r.stdout
    r = run(["estimate", tiny_onnx, "--target", "pixel4"], width)
    fits(r.stdout, width)
    doc = json.loads(run(["estimate", tiny_onnx, "--target", "pixel4", "--json", "-"]).stdout)
    for layer in doc["layers"]:
        assert f"{layer['macs']:,}" in r.stdout and f"{layer['estimate_us']:.1f}" in r.stdout


@pytest.mark.parametrize("width", WIDTHS)
def test_check_table_fits(width, capsys, monkeypatch):
    from mobiledeploy.check.core import CheckOutcome, CheckReport
    from mobiledeploy.cli.check import _print

    outcomes = (CheckOutcome("mobilenet_v1_0.25_32_int8.tflite", "size", 320.0, "<=", "KiB", "pass", measured=306.8125),
                CheckOutcome("mobilenet_v1_0.25_32_int8.tflite", "latency_ratio", 1.1, "<=", "x", "inconclusive",
                             measured=1.0834, low=0.9876, high=1.1789, extra={"confidence": 0.95},
                             detail="the interval straddles the limit"))
    monkeypatch.setenv("COLUMNS", str(width))
    _print(CheckReport("models/budgets.toml", "host", False, outcomes, 1.0), wide=False)
    text = capsys.readouterr().out
    fits(text, width)
    for figure in ("306.8 KiB", "320.0 KiB", "1.083x", "1.100x", "inconclusive"):
        assert figure in text
    assert "mobilenet_v1_0.25_32_int8.tflite: latency_ratio" in text  # the detail lines name it whole


@pytest.mark.parametrize("width", WIDTHS)
def test_export_summary_fits_in_kib(width, capsys, monkeypatch):
    from mobiledeploy.cli.export import _print_table

    art = [SimpleNamespace(file=f"mobilenet_v2_1.0_224_{p}.{f}", format=f, precision=p, size_bytes=n,
                           validation=SimpleNamespace(summary=s), degraded=False)
           for f, p, n, s in (("tflite", "fp32", 14_246_012, "ok: max|diff| 2.0e-07 <= 0.0001"),
                              ("onnx", "int8", 3_612_345, "top-1 agree 100.0%, SQNR 48.7 dB"))]
    result = SimpleNamespace(model={"arch": "mobilenet_v2", "alpha": 1.0, "resolution": 224, "classes": 1000},
                             out_dir=Path("build"), artifacts=art, manifest_path=Path("build/manifest.json"),
                             calibration={"samples": 200, "source": "digits", "preprocessing": "mobilenet",
                                          "validation_inputs": "32 samples"}, quantization={})
    monkeypatch.setenv("COLUMNS", str(width))
    _print_table(result, wide=False)
    text = capsys.readouterr().out
    fits(text.split("calibration:")[0], width)
    assert "13.6 MiB" in text and "3.4 MiB" in text and " MB" not in text and " KB" not in text
    assert all(a.file in text for a in art)


# ---------------------------------------------------------------- logs and JSON


def _tf_env() -> dict:
    """The environment of a fresh shell, with TensorFlow's oneDNN custom operations forced on: the
    setting under which TensorFlow prints its start-up notices on every x86 CPU (on AVX-512 VNNI/BF16
    and AMX machines it is the default), so these tests fail wherever the notices would leak."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    env["TF_ENABLE_ONEDNN_OPTS"] = "1"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _tf_command(args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mobiledeploy", *map(str, args)], capture_output=True, text=True,
                          env=_tf_env(), timeout=600)


@pytest.fixture(scope="module")
def keras_file(tiny_keras, tmp_path_factory):
    path = tmp_path_factory.mktemp("tf-lines") / "m.keras"
    tiny_keras.save(path)
    return path


@pytest.mark.parametrize("command", [
    pytest.param(lambda m, tmp: ["info", m, "--no-layers"], id="info"),
    pytest.param(lambda m, tmp: ["train", "--init", m, "--epochs", "1", "--limit", "32", "--out", tmp / "t.keras"],
                 id="train-init"),
    pytest.param(lambda m, tmp: ["estimate", m, "--target", "pixel4"], id="estimate", marks=pytest.mark.slow),
    pytest.param(lambda m, tmp: ["export", "--model", m, "--quant", "fp32,int8", "--out", tmp / "x"], id="export",
                 marks=pytest.mark.slow),
])
def test_no_tensorflow_log_lines_on_stderr(command, keras_file, tmp_path):
    """Commands that import TensorFlow print nothing but their own output, with oneDNN on."""
    p = _tf_command(command(keras_file, tmp_path))
    assert p.returncode == 0, p.stderr
    # no oneDNN notice, absl, cpu_feature_guard or TensorFlow lines: only train's epochs, export's steps, our warnings
    own = re.compile(r"epoch \d+/\d+: .*|.+ \.\.\.|.+: done in [\d.]+ s|warning: .*")
    assert [ln for ln in p.stderr.splitlines() if not own.fullmatch(ln)] == [], p.stderr


@pytest.mark.slow
def test_no_tensorflow_log_lines_from_per_layer_eval(keras_file, tmp_path):
    x = _tf_command(["export", "--model", keras_file, "--quant", "int8", "--formats", "tflite", "--out", tmp_path])
    assert x.returncode == 0, x.stderr
    int8 = next(tmp_path.glob("*_int8.tflite"))
    p = _tf_command(["eval", int8, "--limit", "16", "--per-layer"])
    assert p.returncode == 0, p.stderr
    assert [ln for ln in p.stderr.splitlines() if not ln.startswith(("eval ", "per-layer "))] == [], p.stderr


@pytest.mark.slow
def test_tensorflow_prints_its_notices_under_the_test_setting():
    """The guard above has teeth: a bare TensorFlow import does print the notices with oneDNN forced on."""
    p = subprocess.run([sys.executable, "-c", "import tensorflow"], capture_output=True, text=True, env=_tf_env(),
                       timeout=600)
    assert "oneDNN custom operations are on" in p.stderr, p.stderr


def test_every_json_is_stamped_and_keeps_its_keys():
    doc = json.loads(run(["targets", "--json", "-"]).stdout)
    assert doc["schema_version"] == 1 and doc["targets"]  # the existing keys, unchanged
    from mobiledeploy import __version__

    assert doc["mobiledeploy_version"] == __version__
    created = datetime.fromisoformat(doc["created"])
    assert created.tzinfo is not None and created.utcoffset().total_seconds() == 0
    m = doc["machine"]
    assert m["cpu"] and m["cores"] >= 1 and len(m["loadavg_1_5_15"]) == 3


def test_non_finite_numbers_are_strings_everywhere(tmp_path):
    from mobiledeploy import io

    obj = {"a": math.inf, "b": [-math.inf, np.float32("nan"), np.float64(1.5)], "c": np.array([1.0, np.inf]),
           "d": None}
    doc = json.loads(io.dumps(obj))  # valid JSON (no bare Infinity/NaN)
    assert doc == {"a": "inf", "b": ["-inf", "nan", 1.5], "c": [1.0, "inf"], "d": None}
    assert float(doc["a"]) == math.inf  # float() reads them back
    io.write_json(tmp_path / "x.json", obj)
    assert json.loads((tmp_path / "x.json").read_text()) == doc


def test_one_size_unit():
    from mobiledeploy.units import format_size

    assert [format_size(n) for n in (None, 512, 1024, 1536, 5 * 1024**2, 3 * 1024**3)] == \
        ["-", "512 B", "1.0 KiB", "1.5 KiB", "5.0 MiB", "3.0 GiB"]

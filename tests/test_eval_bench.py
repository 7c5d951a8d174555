"""`bench --data`: the accuracy column next to latency is the number `eval` measures."""

from __future__ import annotations

import json
import shutil

from click.testing import CliRunner

from mobiledeploy.cli import cli


def test_bench_data_adds_top1_column_equal_to_eval(tiny_tflite_int8, tmp_path):
    d = tmp_path / "exp"
    d.mkdir()
    shutil.copy(tiny_tflite_int8, d / "tiny_int8.tflite")
    (d / "manifest.json").write_text(json.dumps({
        "schema_version": 1, "model": {"resolution": 32, "classes": 10, "preprocessing": "mobilenet"},
        "artifacts": [{"file": "tiny_int8.tflite", "format": "tflite", "precision": "int8"}]}))
    model = str(d / "tiny_int8.tflite")
    r = CliRunner().invoke(cli, ["bench", model, "--runs", "3", "--warmup", "0", "--data", "digits",
                                 "--json", str(tmp_path / "b.json"), "--wide"])  # --wide: headers on one line
    assert r.exit_code == 0, r.output + r.stderr
    acc = json.loads((tmp_path / "b.json").read_text())["accuracy"][model]
    assert acc["samples"] == 360 and acc["status"] == "ok"
    e = CliRunner().invoke(cli, ["eval", model, "--json", str(tmp_path / "e.json")])
    assert e.exit_code == 0, e.stderr
    assert json.loads((tmp_path / "e.json").read_text())["results"][0]["top1"] == acc["top1"]
    header = next(line for line in r.output.splitlines() if "top-1 (digits)" in line)
    assert header.index("size") < header.index("top-1 (digits)") < header.index("p50 ms")
    assert f"{100 * acc['top1']:.2f}%" in r.output


def test_bench_data_without_known_preprocessing_is_usage_error(tiny_tflite):
    r = CliRunner().invoke(cli, ["bench", str(tiny_tflite), "--runs", "2", "--warmup", "0", "--data", "digits"])
    assert r.exit_code == 2, r.output + r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: preprocessing unknown")

"""The one artifact resolver: export directories never lead outside themselves."""

from __future__ import annotations

import json
import os

import pytest

from mobiledeploy.errors import UsageError
from mobiledeploy.models.artifacts import resolve_models


def _export(tmp_path, file_value):
    d = tmp_path / "export"
    d.mkdir()
    (d / "m_fp32.tflite").write_bytes(b"\0\0\0\0TFL3" + b"\0" * 32)
    (d / "manifest.json").write_text(json.dumps({"artifacts": [
        {"file": file_value, "format": "tflite", "precision": "fp32"}]}))
    return d


@pytest.mark.parametrize("value, message", [
    ("../outside/x.tflite", "points outside"),
    ("/etc/passwd", "is an absolute path"),
    ("", "non-empty relative path"),
    ("link.tflite", "points outside"),
    ("missing.tflite", "the file is missing"),
    (7, "non-empty relative path"),
])
def test_manifest_paths_stay_inside_the_export_directory(tmp_path, value, message):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.tflite").write_bytes(b"\0\0\0\0TFL3" + b"\0" * 32)
    d = _export(tmp_path, value)
    os.symlink(outside / "x.tflite", d / "link.tflite")
    with pytest.raises(UsageError, match=message) as e:
        resolve_models([str(d)])
    assert "root:" not in str(e.value)  # never echoes what the path points at


def test_a_file_inside_is_resolved(tmp_path):
    d = _export(tmp_path, "m_fp32.tflite")
    (r,) = resolve_models([str(d)])
    assert r.path == str(d / "m_fp32.tflite") and r.precision == "fp32" and r.format == "tflite"


def test_a_directory_without_manifest_holds_its_model_files(tmp_path):
    (tmp_path / "a.onnx").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("not a model")
    assert [r.format for r in resolve_models([str(tmp_path)])] == ["onnx"]
    with pytest.raises(UsageError, match="holds no"):
        resolve_models([str(tmp_path / "a.onnx"), str(tmp_path)], formats=("tflite",))

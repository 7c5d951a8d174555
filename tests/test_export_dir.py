"""An export directory holds its float source and equals its manifest; nothing leads outside it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mobiledeploy.errors import UsageError
from mobiledeploy.export.pipeline import MANIFEST, STAGING_PREFIX, ExportConfig, export_model
from mobiledeploy.models.artifacts import resolve_models


def _export(out, formats):
    cfg = ExportConfig(arch="mobilenet_v1", alpha=0.25, resolution=32, classes=10, formats=formats,
                       precisions=("fp32",), calib="random", calib_samples=4, validate_samples=4, out=str(out))
    return export_model(cfg)


def _listed(out) -> set[str]:
    m = json.loads((out / MANIFEST).read_text())
    return {a["file"] for a in m["artifacts"]} | ({m["source_model"]["file"]} if m.get("source_model") else set())


@pytest.fixture(scope="module")
def reexported(tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    _export(out, ("tflite",))
    first = set(p.name for p in out.iterdir())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / f"{STAGING_PREFIX}{dead.pid}-abc").mkdir()  # left by a killed export
    (out / f"{STAGING_PREFIX}{dead.pid}-abc" / "partial.tflite").write_bytes(b"x" * 1000)
    (out / f"{STAGING_PREFIX}old").mkdir()  # an older naming
    _export(out, ("onnx",))
    return out, first


def test_export_saves_its_float_source_inside_the_directory(reexported):
    out, first = reexported
    assert "source.keras" in first
    (onnx_ref,) = resolve_models([str(out)])
    assert onnx_ref.source == str(out / "source.keras")


def test_reexport_replaces_the_artifacts_as_a_whole_and_cleans_staging(reexported):
    out, first = reexported
    assert any(n.endswith(".tflite") for n in first)
    files = {p.name for p in out.iterdir()}
    assert files == _listed(out) | {MANIFEST}  # no stale .tflite, no staging folders
    assert not any(n.endswith(".tflite") for n in files)


def _manifest_dir(tmp_path, **extra):
    d = tmp_path / "exp"
    d.mkdir()
    (d / "m.tflite").write_bytes(b"\0\0\0\0TFL3" + b"\0" * 32)
    (d / MANIFEST).write_text(json.dumps({"artifacts": [{"file": "m.tflite", "format": "tflite",
                                                         "precision": "int8"}], **extra}))
    return d


def test_model_source_outside_the_directory_is_never_followed(tmp_path):
    outside = tmp_path / "outside.keras"
    outside.write_bytes(b"PK\x03\x04")
    d = _manifest_dir(tmp_path, model={"source": str(outside)})
    (ref,) = resolve_models([str(d)])
    assert ref.source is None  # --source-model names a float model on purpose


@pytest.mark.parametrize("value, message", [("../outside.keras", "points outside"),
                                            ("/etc/passwd", "absolute path")])
def test_source_model_file_must_stay_inside(tmp_path, value, message):
    (tmp_path / "outside.keras").write_bytes(b"PK\x03\x04")
    d = _manifest_dir(tmp_path, source_model={"file": value})
    with pytest.raises(UsageError, match=message):
        resolve_models([str(d)])


def test_per_layer_calibration_outside_the_directory_is_not_loaded(tmp_path):
    import numpy as np

    from mobiledeploy.data.datasets import Dataset
    from mobiledeploy.export.perlayer import _calibration

    np.savez(tmp_path / "outside.npz", x=np.zeros((3, 8, 8, 3), np.uint8))
    d = _manifest_dir(tmp_path, calibration={"source": str(tmp_path / "outside.npz")})
    (ref,) = resolve_models([str(d)])
    ds = Dataset(x=np.ones((5, 8, 8, 3), np.float32), y=None, class_names=None, source="eval", preprocessing="raw")
    x, note = _calibration(ref, ds)
    assert len(x) == 5 and "outside the export directory" in note  # the evaluation samples, and why

"""Sweep results as typed rows: ``SweepRow``/``ArtifactRow`` write the documents sweep always wrote
and read back only documents of that shape."""

from __future__ import annotations

import json

import pytest

from mobiledeploy.sweep.rows import ArtifactRow, RowShapeError, SweepRow


def _row() -> SweepRow:
    a = ArtifactRow(file="m_fp32.tflite", path="/x/m_fp32.tflite", format="tflite", precision="fp32",
                    size_bytes=1234, sha256="ab" * 32, validation="ok", runtime="litert",
                    host_ms={"p50": 1.5, "mean": 1.6, "min": 1.4}, samples_ms=[1.4, 1.5, 1.9], init_ms=3.0,
                    peak_rss_mb=20.5, benched=True,
                    estimates={"pixel4": {"ms": 2.0, "fitted": False, "error": None, "target_hash": "h"}})
    failed = ArtifactRow(file="m_int8.tflite", path="/x/m_int8.tflite", format="tflite", precision="int8",
                         size_bytes=99, status="error", error="bench: boom", runtime="litert")
    return SweepRow(name="mobilenet_v1_0.25_32", row_key="r" * 64, export_key="e" * 64, export_dir="/x",
                    status="partial", error="1 of 2 artifacts failed", node={"host": "h", "cpu": "x", "pid": 1},
                    timings_s={"export": 1.0, "bench_wait": 0.0, "bench": 0.5, "total": 1.6, "cpu": 2.0},
                    artifacts=[a, failed], model={"arch": "mobilenet_v1", "alpha": 0.25, "resolution": 32,
                                                  "macs": 1000, "params": 10},
                    warnings=[], export_reused=False, versions={"tensorflow": "2"},
                    bench={"label": "host latency, host settings", "settings": {}, "loadavg_1m": 0.5})


def test_a_row_round_trips_through_its_json():
    row = _row()
    doc = json.loads(json.dumps(row.to_json()))
    assert SweepRow.from_json(doc) == row
    assert SweepRow.from_json(doc).to_json() == doc
    ok, failed = doc["artifacts"]
    assert "init_ms" in ok and "init_ms" not in failed  # measured figures only where measured
    assert "eval_samples" not in ok
    assert "usage_error" not in doc and "traceback" not in doc


def test_an_error_row_keeps_its_optional_fields():
    row = SweepRow(name="n", row_key="k", export_key="e", export_dir="/x", status="error", stage="eval",
                   error="eval: no labels", usage_error=False)
    doc = row.to_json()
    assert doc["usage_error"] is False and doc["stage"] == "eval" and doc["artifacts"] == []
    assert SweepRow.from_json(doc) == row


@pytest.mark.parametrize("mutate, why", [
    (lambda d: d.update(artifacts={}), "'artifacts' is missing or not a list"),
    (lambda d: d["artifacts"][0].update(size_bytes="12"), "size is not a byte count"),
    (lambda d: d["artifacts"][0]["host_ms"].update(p50="fast"), "a latency is not a number"),
    (lambda d: d["artifacts"][0].update(file="../etc/passwd"), "names no file"),
    (lambda d: d["timings_s"].update(total="x"), "a timing is not a number"),
    (lambda d: d.update(name="other"), "written for another config"),
])
def test_a_document_of_another_shape_is_refused_with_the_reason(mutate, why):
    doc = json.loads(json.dumps(_row().to_json()))
    mutate(doc)
    with pytest.raises(RowShapeError, match=why.replace("(", r"\(")):
        SweepRow.from_json(doc, name="mobilenet_v1_0.25_32", row_key="r" * 64)


@pytest.mark.parametrize("doc", [[], "ok", 42, None, {"status": "ok"}])
def test_not_an_object_is_refused(doc):
    with pytest.raises(RowShapeError):
        SweepRow.from_json(doc)

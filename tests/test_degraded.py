"""Degraded artifacts are loud: a dynamic or int8 artifact whose top-1 agreement with the float
model (on the export's validation samples) is below a floor is marked ``degraded`` in the
manifest and warned about; with ``--min-agreement`` the export fails with one line and writes
nothing; bench, eval, sweep and check show the mark.

The bad model is built to be bad on any CPU: a classifier whose class scores share one large
term and differ by parts in 10^4, below what int8 weights or activations can resolve, so every
quantized artifact answers (nearly) the same class whatever the input while the float model's
answer follows the input.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from mobiledeploy.cli import cli
from mobiledeploy.errors import UsageError
from mobiledeploy.export.pipeline import ExportConfig, export_model
from mobiledeploy.export.validate import DEFAULT_MIN_AGREEMENT

QUANTIZED = ("dynamic", "int8")


@pytest.fixture(scope="module")
def ties_file(tmp_path_factory):
    """Flatten -> Dense(10, softmax), weights 1 + 1e-4 x noise: the float top-1 is set by the noise part."""
    import keras

    inp = keras.Input((32, 32, 3))
    out = keras.layers.Dense(10, activation="softmax", name="classifier")(keras.layers.Flatten()(inp))
    model = keras.Model(inp, out, name="ties")
    r = np.random.default_rng(0).standard_normal((32 * 32 * 3, 10)).astype(np.float32)
    model.get_layer("classifier").set_weights([1.0 + 1e-4 * r, np.zeros(10, np.float32)])
    path = tmp_path_factory.mktemp("ties") / "ties.keras"
    model.save(str(path))
    return path


def _config(path, out, **kw) -> ExportConfig:
    return ExportConfig(model_path=str(path), formats=("tflite", "onnx"), precisions=("fp32", "dynamic", "int8"),
                        float_layers=(), calib="random", calib_samples=16, validate_samples=32, out=str(out), **kw)


@pytest.fixture(scope="module")
def degraded_export(ties_file, tmp_path_factory):
    warnings: list[str] = []
    res = export_model(_config(ties_file, tmp_path_factory.mktemp("bad")), warn=warnings.append)
    return res, warnings


def test_quantized_artifacts_below_the_floor_are_marked_and_warned(degraded_export):
    res, warnings = degraded_export
    manifest = json.loads(res.manifest_path.read_text())
    for entry in manifest["artifacts"]:
        if entry["precision"] == "fp32":  # float artifacts have tolerances, not a floor
            assert "degraded" not in entry and "agreement_floor" not in entry
            continue
        floor = entry["agreement_floor"]
        agreement = entry["validation"]["top1_agreement"]
        assert floor["floor"] == DEFAULT_MIN_AGREEMENT and floor["set_by"] == "default"
        assert floor["top1_agreement"] == agreement and floor["samples"] == 32
        assert floor["inputs"] == manifest["calibration"]["validation_inputs"]  # what it was measured on
        assert agreement < 0.5, entry["file"]  # the model is built so that quantization loses its top-1
        assert entry["degraded"] is True and floor["degraded"] is True
        (warning,) = [w for w in warnings if w.startswith(entry["file"] + " is degraded")]
        assert f"{agreement:.1%} is below the 90% floor (measured on {floor['inputs']})" in warning
        assert ("--quant int8" if entry["precision"] == "dynamic" else "--float-layers") in warning
    assert sum(e.get("degraded") is True for e in manifest["artifacts"]) == 4


def test_model_refs_carry_the_mark(degraded_export):
    from mobiledeploy.models.artifacts import resolve_models

    res, _ = degraded_export
    refs = {r.name: r for r in resolve_models([res.out_dir])}
    for a in res.artifacts:
        ref = refs[a.file]
        assert bool(ref.degraded) == (a.precision in QUANTIZED)
        if ref.degraded:
            assert ref.degraded["floor"] == DEFAULT_MIN_AGREEMENT
            assert ref.degraded_note.startswith("degraded (agreement ") and "< 90%)" in ref.degraded_note
        else:
            assert ref.degraded_note == ""


@pytest.mark.parametrize("saturates", [True, False])
def test_a_degraded_s8s8_onnx_file_names_this_hosts_saturation(ties_file, tmp_path, monkeypatch, saturates):
    """On an x86-64 CPU without VNNI ONNX Runtime's S8S8 arithmetic can saturate: the degraded warning of an
    S8S8 ONNX file says that this host understates ARM's agreement and how to measure ARM's."""
    from mobiledeploy.export import recipes
    from mobiledeploy.export.recipes import S8S8_HOST_NOTE

    monkeypatch.setattr(recipes, "arch", lambda: "x86_64")  # a host with or without VNNI, whatever this one is
    monkeypatch.setattr(recipes, "cpu_flags", lambda: {"avx2"} if saturates else {"avx2", "avx512_vnni"})
    warnings: list[str] = []
    res = export_model(_config(ties_file, tmp_path, onnx_quant_types="s8s8"), warn=warnings.append)
    by_file = {e["file"]: e for e in json.loads(res.manifest_path.read_text())["artifacts"]}
    degraded = [w for w in warnings if " is degraded" in w]
    assert by_file["ties_32_int8.onnx"]["degraded"] is True and len(degraded) == 4
    for w in degraded:  # only the S8S8 int8 ONNX file's warning carries the note, and only on such a host
        assert (S8S8_HOST_NOTE in w) is (saturates and w.startswith("ties_32_int8.onnx ")), w


def test_random_weights_are_recorded_not_judged(tmp_path):
    """A random-init build has no accuracy to keep: its agreement is recorded, no floor is applied."""
    res = export_model(ExportConfig(alpha=0.25, resolution=32, classes=10, formats=("tflite",), precisions=("int8",),
                                    calib="random", calib_samples=8, validate_samples=4, out=str(tmp_path)))
    (entry,) = json.loads(res.manifest_path.read_text())["artifacts"]
    assert entry["degraded"] is False and entry["agreement_floor"]["floor"] is None
    assert "random weights" in entry["agreement_floor"]["reason"]


def test_min_agreement_met_is_recorded(ties_file, tmp_path):
    """An explicit floor the artifacts meet (0 here) passes, recorded as set by --min-agreement."""
    res = export_model(_config(ties_file, tmp_path, min_agreement=0.0))
    entries = [e for e in json.loads(res.manifest_path.read_text())["artifacts"] if e["precision"] in QUANTIZED]
    assert len(entries) == 4
    assert all(e["degraded"] is False and e["agreement_floor"]["set_by"] == "--min-agreement" for e in entries)


def test_min_agreement_fails_the_export_with_one_line_and_writes_nothing(ties_file, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("before")
    r = CliRunner().invoke(cli, ["export", "--model", str(ties_file), "--formats", "tflite,onnx",
                                 "--quant", "fp32,dynamic,int8", "--float-layers", "none", "--calib", "random",
                                 "--calib-samples", "16", "--validate-samples", "32", "--min-agreement", "0.9",
                                 "--out", str(out)])
    assert r.exit_code == 1, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr + r.stdout
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and errors[0] == r.stderr.strip().splitlines()[-1]
    assert "ties_32_dynamic.tflite is degraded" in errors[0] and "below the 90% floor (--min-agreement) (measured " \
        "on 32 random samples" in errors[0]
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]  # no artifact, no manifest, no staging left


def test_min_agreement_is_checked_before_anything_runs(tmp_path):
    r = CliRunner().invoke(cli, ["export", "--min-agreement", "1.5", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "--min-agreement" in r.stderr and not (tmp_path / "o").exists()
    with pytest.raises(UsageError, match="--min-agreement must be a finite number in"):
        ExportConfig(min_agreement=float("nan")).check()


def _marked_names(text: str) -> set[str]:
    return {w for line in text.splitlines() for w in line.replace("│", " ").split()
            if w.endswith((".tflite", ".onnx")) and f"{w} [degraded]" in line}


def test_eval_shows_the_mark(degraded_export, tmp_path):
    res, _ = degraded_export
    degraded = {a.file for a in res.artifacts if a.degraded}
    r = CliRunner().invoke(cli, ["eval", str(res.out_dir), "--data", "digits", "--wide", "--json",
                                 str(tmp_path / "e.json"), "--md", str(tmp_path / "e.md")])
    assert r.exit_code == 0, (r.stdout, r.stderr)
    assert _marked_names(r.stdout) == degraded
    assert "[degraded]: the export measured top-1 agreement" in " ".join(r.stdout.split())
    results = json.loads((tmp_path / "e.json").read_text())["results"]
    marks = {Path(x["model"]).name: x["degraded"] for x in results}
    assert {n for n, d in marks.items() if d} == degraded
    assert all(d["floor"] == DEFAULT_MIN_AGREEMENT and d["top1_agreement"] < d["floor"] for d in marks.values() if d)
    assert _marked_names((tmp_path / "e.md").read_text().replace("|", " ")) == degraded


def test_check_shows_the_mark(degraded_export, tmp_path):
    """Size budgets (exact, no measurement) on a degraded and an unmarked artifact: the mark rides along."""
    res, _ = degraded_export
    budget = tmp_path / "budgets.toml"
    budget.write_text('[[artifact]]\nname = "onnx dynamic"\npath = "ties_32_dynamic.onnx"\nmax_size_kb = 10000\n'
                      '[[artifact]]\nname = "onnx fp32"\npath = "ties_32_fp32.onnx"\nmax_size_kb = 10000\n')
    r = CliRunner().invoke(cli, ["check", "--budget", str(budget), "--artifacts", str(res.out_dir), "--wide", "-q",
                                 "--json", str(tmp_path / "c.json"), "--md", str(tmp_path / "c.md")])
    assert r.exit_code == 0, (r.stdout, r.stderr)  # the mark is shown; it is not a budget
    assert "onnx dynamic: size [degraded]" in r.stdout and "onnx fp32: size [degraded]" not in r.stdout
    assert "[degraded]: the export measured" in " ".join(r.stdout.split())
    checks = {c["artifact"]: c for c in json.loads((tmp_path / "c.json").read_text())["checks"]}
    assert checks["onnx fp32"]["degraded"] is None
    assert checks["onnx dynamic"]["degraded"]["floor"] == DEFAULT_MIN_AGREEMENT
    md = (tmp_path / "c.md").read_text()
    assert "onnx dynamic: size [degraded]" in md and re.search(r"onnx dynamic \d+% < 90%", md)  # note, figures


def test_export_table_marks_and_warns(ties_file, tmp_path):
    r = CliRunner().invoke(cli, ["export", "--model", str(ties_file), "--formats", "onnx", "--quant", "fp32,dynamic",
                                 "--calib", "random", "--calib-samples", "8", "--validate-samples", "32", "--wide",
                                 "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, (r.stdout, r.stderr)
    assert _marked_names(r.stdout) == {"ties_32_dynamic.onnx"}
    assert "warning: ties_32_dynamic.onnx is degraded" in " ".join(r.stderr.split())


def test_sweep_rows_carry_the_mark_to_its_tables(degraded_export, tmp_path):
    """A sweep job's artifact rows read the mark from the export's manifest (sweep.run), keep it through their JSON
    (a malformed one is refused on resume) and show it in the results table and CSV."""
    from mobiledeploy.sweep import report
    from mobiledeploy.sweep.rows import RowShapeError, SweepRow

    from mobiledeploy.models.artifacts import degraded_mark

    res, _ = degraded_export
    manifest = json.loads(res.manifest_path.read_text())
    from mobiledeploy.sweep.run import _artifact_row

    arts = [_artifact_row(e, SimpleNamespace(results=()), res.out_dir) for e in manifest["artifacts"]]  # not benched
    assert [a.degraded for a in arts] == [degraded_mark(e) for e in manifest["artifacts"]]
    row = SweepRow(name="ties", row_key="r", export_key="e", export_dir=str(res.out_dir), artifacts=arts,
                   model={"arch": None, "alpha": None, "resolution": 32})
    again = SweepRow.from_json(json.loads(json.dumps(row.to_json())))
    assert [a.degraded for a in again.artifacts] == [a.degraded for a in arts]
    assert {a.file for a in again.artifacts if a.degraded} == {a.file for a in res.artifacts if a.degraded}
    bad = row.to_json()
    bad["artifacts"][0]["degraded"] = {"floor": "high"}
    with pytest.raises(RowShapeError, match="degraded mark"):
        SweepRow.from_json(bad)
    rows = report.table_rows([again], targets=())
    cols = report._columns(())
    cells = {r["file"]: report._cell(r, "degraded") for r in rows}
    assert {f for f, c in cells.items() if c} == {a.file for a in res.artifacts if a.degraded}
    assert all(re.fullmatch(r"degraded \(agreement \d+% < 90%\)", c) for c in cells.values() if c)
    assert ("degraded", "degraded") in cols


def test_bench_shows_the_mark(degraded_export, tmp_path):
    res, _ = degraded_export
    degraded = {a.file for a in res.artifacts if a.degraded}
    r = CliRunner().invoke(cli, ["bench", str(res.out_dir), "--warmup", "0", "--runs", "1", "--wide",
                                 "--json", str(tmp_path / "b.json"), "--md", str(tmp_path / "b.md")])
    assert r.exit_code == 0, (r.stdout, r.stderr)
    assert _marked_names(r.stdout) == degraded
    assert "[degraded]: the export measured top-1 agreement" in " ".join(r.stdout.split())
    results = json.loads((tmp_path / "b.json").read_text())["results"]
    assert {Path(x["model"]).name for x in results if x["degraded"]} == degraded
    assert all(x["degraded"] is None for x in results if Path(x["model"]).name not in degraded)
    md = (tmp_path / "b.md").read_text()
    assert _marked_names(md.replace("|", " ")) == degraded and "[degraded]: the export measured" in md

"""`mobiledeploy check` end to end on real runtimes: exit codes, the three outputs, exact
size/accuracy limits on both sides, latency decided on real child-process measurements."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mobiledeploy.cli import cli

STEM = "mobilenet_v1_0.25_32"


def invoke(*args, env=None):
    return CliRunner().invoke(cli, ["check", "-q", *map(str, args)], env=env)


@pytest.fixture(autouse=True)
def _run_where_the_exports_are(tmp_path_factory, monkeypatch):
    """Budgets here name export directories beside their own folder (both under pytest's base
    temporary directory): run from there, as CI runs from the checkout that holds both; a
    budget's paths must stay inside its own directory or the working directory."""
    monkeypatch.chdir(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory, tiny_tflite, tiny_tflite_int8):
    """An export directory as `mobiledeploy export` lays it out (manifest + artifacts)."""
    d = tmp_path_factory.mktemp("export")
    arts = []
    for src, prec in ((tiny_tflite, "fp32"), (tiny_tflite_int8, "int8")):
        name = f"{STEM}_{prec}.tflite"
        shutil.copy(src, d / name)
        arts.append({"file": name, "format": "tflite", "precision": prec, "size_bytes": (d / name).stat().st_size})
    manifest = {"schema_version": 1,
                "model": {"arch": "mobilenet_v1", "alpha": 0.25, "resolution": 32, "classes": 10,
                          "input_shape": [1, 32, 32, 3], "preprocessing": "mobilenet", "source": "build"},
                "artifacts": arts}
    (d / "manifest.json").write_text(json.dumps(manifest))
    return d


@pytest.fixture(scope="module")
def truth(export_dir):
    """Top-1 on digits/test of each artifact, computed directly with the runtime."""
    from mobiledeploy import runtimes
    from mobiledeploy.data.datasets import load_dataset

    ds = load_dataset("digits", resolution=32, split="test", labelled=True)
    out = {}
    for prec in ("fp32", "int8"):
        scores = runtimes.predict(runtimes.open_session(export_dir / f"{STEM}_{prec}.tflite"), ds.x)
        out[prec] = float(np.mean(scores.argmax(1) == ds.y))
    return {"top1": out, "n": len(ds.y)}


def budget(tmp_path, body, name="budgets.toml"):
    p = tmp_path / name
    p.write_text(body)
    return p


def test_all_hold_exit_0_and_all_outputs(tmp_path, export_dir, truth, monkeypatch):
    """Every limit set exactly at the measured value holds (the limit is inclusive)."""
    int8 = export_dir / f"{STEM}_int8.tflite"
    drop = truth["top1"]["fp32"] - truth["top1"]["int8"]
    p = budget(tmp_path, f"""
artifacts = "{export_dir}"
[data]
source = "digits"
[[artifact]]
name = "int8"
arch = "mobilenet_v1"
resolution = 32
precision = "int8"
max_size_kb = {int8.stat().st_size / 1024!r}
min_top1 = {truth["top1"]["int8"]!r}
max_int8_top1_drop = {drop!r}
""")
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    out = {k: tmp_path / f"report.{k}" for k in ("json", "xml", "md")}
    r = invoke("--budget", p, "--json", out["json"], "--junit", out["xml"], "--md", out["md"],
               env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert r.exit_code == 0, r.output + r.stderr
    assert "all budgets hold" in r.stdout and "int8: size" in r.stdout

    doc = json.loads(out["json"].read_text())
    assert doc["ok"] is True and doc["exit_code"] == 0
    checks = {c["check"]: c for c in doc["checks"]}
    assert set(checks) == {"size", "top1", "int8_top1_drop"}
    assert all(c["verdict"] == "pass" for c in checks.values())
    assert checks["size"]["size_bytes"] == int8.stat().st_size
    assert checks["top1"]["measured"] == pytest.approx(truth["top1"]["int8"], abs=0)
    assert checks["top1"]["samples"] == truth["n"]
    assert checks["int8_top1_drop"]["float_file"].endswith(f"{STEM}_fp32.tflite")  # found via the manifest

    suite = ET.parse(out["xml"]).getroot().find("testsuite")
    cases = suite.findall("testcase")
    assert suite.get("tests") == "3" and suite.get("failures") == "0" and len(cases) == 3
    assert {c.get("name") for c in cases} == {"size", "top1", "int8_top1_drop"}
    assert not suite.findall(".//failure")

    md = out["md"].read_text()
    assert "| check | limit | measured | interval | verdict |" in md and md.count("✅ pass") == 3
    assert summary.read_text() == "earlier step\n" + md + "\n"  # appended, not replaced


def test_one_past_each_limit_fails_exit_1(tmp_path, export_dir, truth):
    int8 = export_dir / f"{STEM}_int8.tflite"
    n = truth["n"]
    drop = truth["top1"]["fp32"] - truth["top1"]["int8"]
    p = budget(tmp_path, f"""
[[artifact]]
name = "int8"
path = "{int8.name}"
float = "{STEM}_fp32.tflite"
max_size_kb = {(int8.stat().st_size - 1) / 1024!r}
min_top1 = {truth["top1"]["int8"] + 1 / n!r}
max_int8_top1_drop = {drop - 1 / n!r}
""")
    junit = tmp_path / "r.xml"
    r = invoke("--budget", p, "--artifacts", export_dir, "--junit", junit, "--json", "-")
    assert r.exit_code == 1
    assert "3 of 3 budget checks broken" in r.stderr and "Traceback" not in r.stderr
    doc = json.loads(r.stdout)
    assert [c["verdict"] for c in doc["checks"]] == ["fail", "fail", "fail"]
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite.get("failures") == "3" and len(suite.findall("testcase/failure")) == 3


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory):
    """TF-free models: the yardstick's twin, a small net and one ~9x bigger."""
    from mobiledeploy.check.yardstick import conv_net_bytes, yardstick_bytes

    d = tmp_path_factory.mktemp("onnx")
    (d / "twin.onnx").write_bytes(yardstick_bytes())
    (d / "small.onnx").write_bytes(conv_net_bytes(resolution=32))
    (d / "big.onnx").write_bytes(conv_net_bytes(resolution=96))
    return d


def test_latency_on_real_runtimes(tmp_path, onnx_dir):
    """Decided on real child-process measurements, margins far from the noise."""
    p = budget(tmp_path, f"""
artifacts = "{onnx_dir}"
[latency]
rounds = 3
max_rounds = 3
warmup = 2
min_runs = 5
min_time_s = 0.02
[yardstick]
reference_ms = 1.0
[[artifact]]
name = "big"
path = "big.onnx"
max_latency_ratio = 1.5
baseline = "small.onnx"
[[artifact]]
name = "twin-loose"
path = "twin.onnx"
max_latency_ms = 3.0
[[artifact]]
name = "twin-tight"
path = "twin.onnx"
max_latency_ms = {{ host = 0.3, pixel4 = 9.9 }}
""")
    r = invoke("--budget", p, "--json", tmp_path / "r.json")
    assert r.exit_code == 1, r.output + r.stderr
    doc = json.loads((tmp_path / "r.json").read_text())
    c = {x["artifact"]: x for x in doc["checks"]}
    assert c["big"]["verdict"] == "fail" and c["big"]["interval"][0] > 1.5  # a whole interval above
    assert c["big"]["rounds"] == 3 and len(c["big"]["candidate_ms"]) == 3
    # the twin runs like the yardstick: ratio near 1 against limits of 3x and 0.3x
    assert c["twin-loose"]["verdict"] == "pass" and c["twin-tight"]["verdict"] == "fail"
    for name in ("twin-loose", "twin-tight"):
        x = c[name]
        assert x["yardstick_reference_ms"] == 1.0
        assert x["limit"] == pytest.approx(x["max_latency_ms"] * x["yardstick_ms"], rel=1e-3)  # normalised
    assert "fail (regression)" in r.stdout and doc["environment"]["yardstick"]["measured_ms"] > 0


@pytest.mark.parametrize("body, args, fragment", [
    ("[[artifact]]\npath = 'gone.tflite'\nmax_size_kb = 1\n", (), "artifact not found"),
    ("[[artifact]]\npath = 'small.onnx'\nmax_size_kbb = 1\n", (), "unknown key 'max_size_kbb'"),
    ("[[artifact]]\npath = 'small.onnx'\nmax_latency_ratio = 1.1\n", (), "needs a baseline"),
    ("[[artifact]]\npath = 'small.onnx'\nmax_latency_ms = 1\n", (), "no reference_ms"),
    ("[[artifact]]\nprecision = 'int8'\nmax_size_kb = 1\n", (), "has no manifest.json"),
    ("[[artifact]]\npath = 'small.onnx'\nmax_int8_top1_drop = 0.01\n", (), "needs the float artifact"),
    ("[[artifact]]\npath = 'small.onnx'\nmax_size_kb = 1\n", ("--baseline", "nowhere"), "baseline not found"),
    ("[[artifact]]\npath = 'small.onnx'\nmax_size_kb = 1\n", ("--skip", "speed"), "unknown value 'speed'"),
    ("[[artifact]]\npath = 'small.onnx'\nmax_size_kb = 1\n", ("--target", "nokia"), "nokia"),
])
def test_config_errors_exit_2_before_measuring(tmp_path, onnx_dir, body, args, fragment):
    p = budget(tmp_path, f'artifacts = "{onnx_dir}"\n' + body)
    out = tmp_path / "r.json"
    r = invoke("--budget", p, "--json", out, *args)
    assert r.exit_code == 2, r.output + r.stderr
    assert fragment in r.stderr and r.stderr.startswith("error: ") and "Traceback" not in r.stderr
    assert not out.exists()  # nothing written on a configuration error


def test_missing_budget_file_and_flag(tmp_path):
    assert invoke("--budget", tmp_path / "none.toml").exit_code == 2
    r = invoke()
    assert r.exit_code == 2 and "--budget" in r.stderr


def test_inconclusive_passes_unless_strict(tmp_path):
    from mobiledeploy.check import report
    from mobiledeploy.check.core import CheckOutcome, CheckReport

    o = CheckOutcome("m", "latency_ratio", 1.1, "<=", "x", "inconclusive", measured=1.08, low=1.0, high=1.17,
                     extra={"confidence": 0.95})
    lenient = CheckReport("b.toml", "host", False, (o,), 1.0)
    strict = CheckReport("b.toml", "host", True, (o,), 1.0)
    assert lenient.exit_code == 0 and strict.exit_code == 1
    assert ET.fromstring(report.junit_xml(lenient)).find(".//failure") is None
    assert ET.fromstring(report.junit_xml(strict)).find(".//failure") is not None
    assert "passes with a warning" in report.rows(lenient)[0][4]
    assert "[1.000x, 1.170x] (95%)" in report.markdown(strict)


def test_baseline_resolution(tmp_path, export_dir, onnx_dir):
    """--baseline DIR: same file name there; a selector override looks in its manifest; FILE: that file."""
    from mobiledeploy.check.budgets import load_budgets
    from mobiledeploy.check.core import CheckConfig, plan_checks
    from mobiledeploy.errors import UsageError

    main = tmp_path / "main"
    shutil.copytree(export_dir, main)
    head = f'artifacts = "{export_dir}"\n'
    same = f'[[artifact]]\nname = "same-name"\npath = "{STEM}_int8.tflite"\nmax_latency_ratio = 1.1\n'
    override = ('[[artifact]]\nname = "override"\nprecision = "int8"\nmax_latency_ratio = 1.1\n'
                'baseline = { precision = "fp32" }\n')
    p = budget(tmp_path, head + same + override)
    bf = load_budgets(p)
    plans = plan_checks(bf, CheckConfig(budget=p, baseline=main), target="host")
    assert plans[0].baseline.path == main / f"{STEM}_int8.tflite"
    assert plans[1].baseline.path == main / f"{STEM}_fp32.tflite"
    with pytest.raises(UsageError, match="same-name.*needs a baseline"):
        plan_checks(bf, CheckConfig(budget=p), target="host")
    p2 = budget(tmp_path, head + override, name="b2.toml")
    plans = plan_checks(load_budgets(p2), CheckConfig(budget=p2), target="host")  # in the artifacts dir
    assert plans[0].baseline.path == export_dir / f"{STEM}_fp32.tflite"
    plans = plan_checks(bf, CheckConfig(budget=p, baseline=onnx_dir / "small.onnx"), target="host")
    assert {pl.baseline.path for pl in plans} == {(onnx_dir / "small.onnx").resolve()}


def test_measure_yardstick_prints_a_budget_line(tmp_path):
    import tomllib

    p = budget(tmp_path, "target = 'host'\n[latency]\nmin_runs = 5\nmin_time_s = 0.02\nwarmup = 1\n"
                         "[[artifact]]\npath = 'x.onnx'\nmax_size_kb = 1\n")
    r = invoke("--measure-yardstick", "--budget", p)
    assert r.exit_code == 0, r.output + r.stderr
    doc = tomllib.loads(r.stdout)  # the output pastes into a budget file as it is
    assert doc["yardstick"]["reference_ms"]["host"] > 0
    assert "1 thread(s)" in r.stdout


def test_unnamed_config_entry_is_named_by_its_config(tmp_path, export_dir):
    """Rows are named after the export config; brackets in names are text, not markup."""
    p = budget(tmp_path, f'artifacts = "{export_dir}"\n[[artifact]]\nformat = "tflite"\nprecision = "int8"\n'
                         "max_size_kb = 1\n")
    r = invoke("--budget", p)
    assert r.exit_code == 1
    assert "[format=tflite, precision=int8]: size" in r.stdout and "fail" in r.stdout
    assert "[format=tflite, precision=int8]: size" in r.stderr  # the one error line names it too


@pytest.mark.slow
def test_project_budgets_hold_for_the_reference_model(tmp_path):
    """What .ci/run does: export the committed reference model, check models/budgets.toml."""
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "reference"
    r = CliRunner().invoke(cli, ["export", "--model", str(root / "models/mobilenet_v1_0.25_32_digits.keras"),
                                 "--calib", "digits", "--out", str(out)])
    assert r.exit_code == 0, r.output + r.stderr
    r = invoke("--budget", root / "models/budgets.toml", "--artifacts", out, "--baseline", out,
               "--json", tmp_path / "check.json")
    assert r.exit_code == 0, r.output + r.stderr
    doc = json.loads((tmp_path / "check.json").read_text())
    assert len(doc["checks"]) >= 12 and doc["counts"]["fail"] == doc["counts"]["error"] == 0


def test_an_artifact_that_cannot_run_is_an_error_row_exit_1(tmp_path, onnx_dir):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07 this is not a model" * 10)
    shutil.copy(onnx_dir / "small.onnx", tmp_path / "small.onnx")
    p = budget(tmp_path, "[latency]\nrounds = 3\nmin_runs = 2\nmin_time_s = 0.01\n"
                         "[[artifact]]\npath = 'broken.onnx'\nmin_top1 = 0.5\nmax_latency_ratio = 1.5\n"
                         "baseline = 'small.onnx'\n")
    junit = tmp_path / "r.xml"
    r = invoke("--budget", p, "--junit", junit, "--max-time", "20", "--json", tmp_path / "r.json")
    assert r.exit_code == 1 and "Traceback" not in r.stderr
    doc = json.loads((tmp_path / "r.json").read_text())
    assert [c["verdict"] for c in doc["checks"]] == ["error", "error"]
    assert all("broken.onnx" in c["detail"] for c in doc["checks"])
    assert doc["environment"]["latency"]["max_time_s"] == 20
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite.get("errors") == "2" and len(suite.findall("testcase/error")) == 2


def test_broken_manifest_is_a_config_error(tmp_path):
    d = tmp_path / "export"
    d.mkdir()
    (d / "manifest.json").write_text("{not json")
    p = budget(tmp_path, f'artifacts = "{d}"\n[[artifact]]\nprecision = "int8"\nmax_size_kb = 1\n')
    r = invoke("--budget", p)
    assert r.exit_code == 2 and "manifest" in r.stderr and "Traceback" not in r.stderr


def test_a_new_check_kind_is_one_registry_row(tmp_path, export_dir, monkeypatch):
    """A check kind is a function and one row in check/kinds.py: the budget schema and the run follow."""
    from mobiledeploy.check import kinds
    from mobiledeploy.models import inspect

    def max_inputs(checker, plan, limit):  # how many graph inputs the artifact has
        n = len(inspect.inputs(plan.artifact.path))
        return kinds.CheckOutcome(plan.budget.name, "inputs", limit, "<=", "", kinds.PASS if n <= limit else kinds.FAIL,
                                  measured=n)

    monkeypatch.setitem(kinds.KINDS, "max_inputs", kinds.CheckKind("max_inputs", "size", kinds.number(low=0), max_inputs))
    p = budget(tmp_path, f'artifacts = "{export_dir}"\n[[artifact]]\nprecision = "int8"\nmax_inputs = 0\n')
    r = invoke("--budget", p, "--json", tmp_path / "r.json")
    assert r.exit_code == 1 and "Traceback" not in r.stderr
    (row,) = json.loads((tmp_path / "r.json").read_text())["checks"]
    assert (row["check"], row["verdict"], row["measured"]) == ("inputs", "fail", 1)
    assert invoke("--budget", p, "--skip", "size").exit_code == 0  # its group is skippable like the others
    bad = budget(tmp_path, f'artifacts = "{export_dir}"\n[[artifact]]\nprecision = "int8"\nmax_inputs = -1\n', "b.toml")
    assert invoke("--budget", bad).exit_code == 2  # and its bounds are the schema's

"""The benchmark harness: every study imports, parses its arguments and is listed; results go
through one writer that records how they were made. Nothing here runs a study."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import __main__ as cli
from benchmarks import harness, load, study_names

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
STUDIES = study_names()


def test_every_script_is_a_study():
    files = {p.stem for p in BENCH.glob("*.py")} - {"__init__", "__main__", "harness"}
    assert files and set(STUDIES) == files


@pytest.mark.parametrize("name", STUDIES)
def test_study_imports_and_parses_its_arguments(name, capsys):
    m = load(name)
    assert m.KIND in ("study", "regression") and callable(m.run)
    ap = cli.study_parser(name, m)
    args = ap.parse_args([])  # every option has a default: no study needs arguments to run
    assert args.tag is None and not args.no_write
    assert ap.parse_args(["--tag", "x"]).tag == "x"
    with pytest.raises(SystemExit) as e:
        ap.parse_args(["--help"])
    assert e.value.code == 0 and f"python -m benchmarks run {name}" in capsys.readouterr().out


@pytest.mark.parametrize("name", STUDIES)
def test_study_source_follows_the_harness(name):
    """No path hacks, no ROOT of its own, no import of another study (shared code lives in benchmarks/common)."""
    tree = ast.parse((BENCH / f"{name}.py").read_text())
    src = ast.unparse(tree)
    assert "sys.path.insert" not in src and "sys.path.append" not in src
    assert not any(isinstance(n, ast.Assign) and any(getattr(t, "id", None) == "ROOT" for t in n.targets)
                   for n in ast.walk(tree))
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom) and n.module:
            parts = n.module.split(".")
            assert not (parts[0] == "benchmarks" and len(parts) > 1 and parts[1] in STUDIES), n.module
            assert parts[0] not in STUDIES, n.module
            if n.module == "benchmarks":
                assert not {a.name for a in n.names} & set(STUDIES)
        if isinstance(n, ast.Import):
            assert not {a.name.split(".")[0] for a in n.names} & set(STUDIES)


def test_list_names_every_study_with_its_kind():
    out = subprocess.run([sys.executable, "-m", "benchmarks", "list"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line.split()[1] for line in out.stdout.splitlines() if line.strip()}
    assert set(rows) == set(STUDIES)
    assert set(rows.values()) <= {"study", "regression"} and "regression" in rows.values()
    out = subprocess.run([sys.executable, "-m", "benchmarks", "list", "regression"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and {line.split()[0] for line in out.stdout.splitlines()} == {
        n for n, kind in rows.items() if kind == "regression"}


def test_unknown_study_is_one_line():
    out = subprocess.run([sys.executable, "-m", "benchmarks", "run", "no_such_study"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.startswith("error: no study 'no_such_study'")
    assert "Traceback" not in out.stderr


def test_write_result_records_how_it_was_made(tmp_path, monkeypatch):
    import mobiledeploy

    monkeypatch.setattr(harness, "RESULTS", tmp_path)
    path = harness.write_result("some_study", {"figure": 1.5}, tag="idle", text="| a |\n")
    assert path == tmp_path / "some_study_idle.json" and (tmp_path / "some_study_idle.md").read_text() == "| a |\n"
    doc = json.loads(path.read_text())
    run = doc["run"]
    assert doc["figure"] == 1.5 and run["study"] == "some_study" and run["tag"] == "idle"
    assert run["mobiledeploy"] == mobiledeploy.__version__ and run["command"]
    assert len(run["commit"].split("+")[0]) == 40
    assert {"cpu", "cores", "loadavg_1_5_15"} <= set(run["machine"])


def test_run_writes_through_the_harness(tmp_path, monkeypatch, capsys):
    """A cheap study end to end (a simulation, no timing): its document under a run record, in the one layout."""
    monkeypatch.setattr(harness, "RESULTS", tmp_path)
    monkeypatch.setattr(sys, "argv", ["benchmarks/__main__.py", "run", "check_at_limit_sim", "--sims", "2",
                                      "--tag", "smoke"])
    assert cli.main(sys.argv[1:]) == 0
    doc = json.loads((tmp_path / "check_at_limit_sim_smoke.json").read_text())
    assert doc["run"]["command"] == "python -m benchmarks run check_at_limit_sim --sims 2 --tag smoke"
    assert doc["sims_per_row"] == 2 and len(doc["rows"]) == 12
    assert cli.main(["run", "check_at_limit_sim", "--sims", "2", "--no-write"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["check_at_limit_sim_smoke.json"]


RESULTS = sorted((BENCH / "results").glob("*.json"))


@pytest.mark.parametrize("path", RESULTS, ids=[p.name for p in RESULTS])
def test_every_results_file_records_how_it_was_made(path):
    """Command, version, commit and machine in every results file (a backfilled record says so)."""
    run = json.loads(path.read_text())["run"]
    assert run["command"] and run["mobiledeploy"] and run["machine"]
    assert len(run["commit"].split("+")[0]) == 40
    if run.get("study"):
        assert run["command"].startswith(f"python -m benchmarks run {run['study']}") and run["study"] in STUDIES
        assert path.stem == run["study"] + (f"_{run['tag']}" if run.get("tag") else "")
    if "backfilled" in run:
        assert run["backfilled"].startswith("from git history on ")

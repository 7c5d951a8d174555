"""requirements.lock: it parses, pins every dependency pyproject.toml names, is what is installed,
and the CLI notes on stderr when a converter/runtime version differs from it."""

from __future__ import annotations

import importlib.metadata as md
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from mobiledeploy import lockcheck
from mobiledeploy.cli import cli
from mobiledeploy.machine import host

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"


def _requirements(extra: str | None = None) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    return [Requirement(s) for s in specs]


def _wanted_here() -> list[Requirement]:
    """pyproject's dependencies, all extras, whose markers hold on this platform."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    reqs = [(r, "") for r in _requirements()]
    reqs += [(r, extra) for extra in extras for r in _requirements(extra)]
    return [r for r, extra in reqs if r.name != "mobiledeploy" and (r.marker is None or r.marker.evaluate({"extra": extra}))]


def test_lock_is_found_and_parses_to_exact_pins():
    assert lockcheck.lock_path() == LOCK
    pins = lockcheck.read_lock(LOCK)
    assert len(pins) >= 20 and "pip" in pins
    for name, version in pins.items():
        assert Requirement(f"{name}=={version}").specifier.contains(version, prereleases=True)


def test_every_pyproject_dependency_is_pinned_within_its_range():
    pins = lockcheck.read_lock(LOCK)
    wanted = _wanted_here()
    assert {"tensorflow-cpu", "onnxruntime", "pytest"} <= {lockcheck.normalize(r.name) for r in wanted}
    for r in wanted:
        name = lockcheck.normalize(r.name)
        assert name in pins, f"{r.name} (pyproject.toml) is not pinned in requirements.lock"
        assert r.specifier.contains(pins[name], prereleases=True), f"{r} but locked {pins[name]}"


def test_installed_versions_are_the_locked_ones():
    """`make install`/`make test` install with the lock: every pin is what this venv has."""
    pins = lockcheck.read_lock(LOCK)
    have = {name: md.version(name) for name in pins}
    assert {n: v for n, v in have.items() if v != pins[n]} == {}
    # the start-up check's cheap reading (dist-info names) agrees with importlib.metadata
    assert lockcheck.installed(pins) == have
    assert lockcheck.drift() == {} and host()["versions_match_lock"] is True


def test_malformed_lock_line_is_named(tmp_path):
    bad = tmp_path / "requirements.lock"
    bad.write_text("# pins\nnumpy==2.0.0\nonnx>=1.16\n")
    with pytest.raises(ValueError, match=r":3: not an exact pin"):
        lockcheck.read_lock(bad)


@pytest.fixture
def changed_lock(tmp_path):
    """A copy of the lock with onnxruntime's pin changed: the installed one now differs."""
    pins = lockcheck.read_lock(LOCK)
    other = pins["onnxruntime"] + ".post9"
    lines = [f"onnxruntime=={other}" if ln.startswith("onnxruntime==") else ln
             for ln in LOCK.read_text().splitlines()]
    path = tmp_path / "requirements.lock"
    path.write_text("\n".join(lines) + "\n")
    return path, pins["onnxruntime"], other


def test_note_when_a_runtime_version_differs(changed_lock, capsys, tmp_path, monkeypatch):
    path, have, other = changed_lock
    assert lockcheck.drift(path) == {"onnxruntime": (have, other)}
    monkeypatch.setattr(lockcheck, "lock_path", lambda: path)
    code = cli.main(["bench", str(tmp_path / "missing.tflite")], prog_name="mobiledeploy", standalone_mode=False)
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 2  # the note, then the command's own error
    assert err[0] == (f"note: installed versions differ from requirements.lock: onnxruntime {have} "
                      f"(locked {other}); results may differ from ones measured with the locked set "
                      "(`make install` installs it)")
    assert err[1].startswith("error: ")


@pytest.mark.parametrize("args", [["bench", "--help"], ["--help"], ["--version"], ["targets"],
                                  ["info", "x.tflite"], ["--", "bench"]])
def test_no_note_where_versions_do_not_matter(changed_lock, capsys, args):
    lockcheck.note_drift(args, lock=changed_lock[0])
    assert capsys.readouterr().err == ""


def test_no_note_without_a_lock_or_with_an_unreadable_one(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(lockcheck, "lock_path", lambda: None)
    lockcheck.note_drift(["export"])
    (tmp_path / "bad.lock").write_text("onnx\n")
    lockcheck.note_drift(["export"], lock=tmp_path / "bad.lock")
    assert capsys.readouterr().err == ""
    assert lockcheck.drift() is None

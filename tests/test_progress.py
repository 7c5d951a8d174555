"""One progress event type (``mobiledeploy.progress.Progress``) for every command, drawn in one place
(``mobiledeploy.cli.progress``), and the lines a CI log shows for it."""

from __future__ import annotations

import ast
import io
import re
from pathlib import Path

import pytest
from rich.console import Console

import mobiledeploy
from mobiledeploy.cli.progress import progress_renderer
from mobiledeploy.progress import Progress

PACKAGE = Path(mobiledeploy.__file__).parent
# parameter names that carry a progress callback, in any spelling the package ever used
CALLBACK_NAMES = {"progress", "on_progress", "on_event", "on_start", "on_epoch"}


def _callback_params():
    """(module, function, parameter, annotation) of every callback-named parameter in the package."""
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for a in node.args.args + node.args.kwonlyargs:
                    if a.arg in CALLBACK_NAMES:
                        ann = ast.unparse(a.annotation) if a.annotation else None
                        yield path.relative_to(PACKAGE).as_posix(), node.name, a.arg, ann
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) \
                    and node.target.id in CALLBACK_NAMES:  # a config field such as EvalConfig.progress
                yield path.relative_to(PACKAGE).as_posix(), "<field>", node.target.id, ast.unparse(node.annotation)


def test_every_progress_callback_in_the_package_takes_the_one_event_type():
    found = list(_callback_params())
    assert found, "the scan found no progress parameter at all"
    wrong = [f for f in found if f[3] not in ("OnProgress | None", "OnProgress")]
    assert not wrong, f"progress callbacks of another shape: {wrong}"
    entry_points = {(m, f) for m, f, _, _ in found}
    for expected in [("bench/core.py", "bench_models"), ("bench/service.py", "run_bench"),
                     ("export/pipeline.py", "export_model"), ("accuracy/train.py", "train"),
                     ("sweep/core.py", "run_sweep"), ("accuracy/evaluate.py", "<field>"),
                     ("accuracy/emulated.py", "emulated_eval"), ("check/core.py", "<field>"),
                     ("check/latency.py", "measure_yardstick")]:
        assert expected in entry_points, expected


def test_no_other_progress_type_is_defined():
    """No module but mobiledeploy/progress.py names a callback type for progress."""
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "progress.py":
            continue
        src = path.read_text(encoding="utf-8")
        assert not re.search(r"^(Progress|OnEvent|OnProgress)\s*=", src, re.M), path


def _plain_lines(events) -> list[str]:
    """What the renderer prints for ``events`` when stderr is not a terminal (a CI log)."""
    buf = io.StringIO()
    con = Console(file=buf, force_terminal=False, width=60, soft_wrap=True, highlight=False)
    with progress_renderer(console=con, steps=events[0]) as progress:
        for e in events[1]:
            progress(e)
    return buf.getvalue().splitlines()


def test_ci_lines_of_an_export_step_and_a_bench_model():
    steps = (True, [Progress("export", "tflite int8", "start"), Progress("export", "tflite int8",
                                                                          metrics={"seconds": 1.25})])
    assert _plain_lines(steps) == ["tflite int8 ...", "tflite int8: done in 1.2 s"]
    long = "x" * 100  # never broken in the middle in a log
    lines = (False, [Progress("bench", f"bench {long} (host)", "start"), Progress("bench", f"bench {long}: ok"),
                     Progress("sweep", "[1/2] a: FAILED: boom", failed=True), Progress("bench", "note: n", "note")])
    assert _plain_lines(lines) == [f"bench {long} (host)", f"bench {long}: ok", "[1/2] a: FAILED: boom", "note: n"]


def test_a_terminal_shows_starts_live_and_keeps_lines_without_a_start():
    buf = io.StringIO()
    con = Console(file=buf, force_terminal=True, width=80, highlight=False)
    with progress_renderer(console=con) as progress:
        progress(Progress("train", "epoch 1/2: loss 0.5000, accuracy 0.500", done=1, total=2))
        progress(Progress("bench", "bench m.tflite (host)", "start"))
        progress(Progress("bench", "bench m.tflite: p50 1.000 ms"))
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buf.getvalue())
    assert "epoch 1/2: loss 0.5000, accuracy 0.500\n" in text
    assert "bench m.tflite: p50" not in text  # the live line ends; only a CI log keeps it


def test_a_bad_kind_is_refused():
    with pytest.raises(ValueError, match="kind"):
        Progress("bench", "x", "begin")


# ---------------------------------------------------------------- the lines real commands print in a CI log


def test_export_prints_a_line_as_each_step_starts_and_ends(tmp_path):
    from click.testing import CliRunner

    from mobiledeploy.cli import cli

    r = CliRunner().invoke(cli, ["export", "--alpha", "0.25", "--res", "32", "--classes", "10", "--formats", "tflite",
                                 "--quant", "fp32", "--calib", "random", "--calib-samples", "8",
                                 "--validate-samples", "4", "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if not ln.startswith("warning:")]
    steps = ["calibration data (random)", "build mobilenet_v1", "keras reference outputs", "tflite fp32"]
    assert len(lines) == 2 * len(steps), lines
    for i, step in enumerate(steps):
        assert lines[2 * i] == f"{step} ..."
        assert re.fullmatch(rf"{re.escape(step)}: done in \d+\.\d s", lines[2 * i + 1]), lines[2 * i + 1]


def test_sweep_prints_its_start_and_a_line_per_config(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from mobiledeploy.cli import cli
    from mobiledeploy.sweep.run import error_result

    def fail_each(todo, workers, on_result):  # the executor, without exporting: each job fails at once
        for job in todo:
            on_result(job, error_result(job, "worker: boom [x]"))

    monkeypatch.setattr("mobiledeploy.sweep.core.run_local", fail_each)
    out = tmp_path / "o"
    r = CliRunner().invoke(cli, ["sweep", "--alpha", "0.25,0.5", "--res", "32", "--formats", "tflite", "--quant",
                                 "fp32", "--jobs", "1", "--out", str(out)])
    assert r.exit_code == 1
    assert r.stderr.splitlines()[:4] == [
        f"sweep: 2 configs into {out}",
        "[0/2] running 2 configs on 1 worker(s); a line as each finishes",
        "[1/2] mobilenet_v1_0.25_32: FAILED: worker: boom [x]",
        "[2/2] mobilenet_v1_0.5_32: FAILED: worker: boom [x]"]

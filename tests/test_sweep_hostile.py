"""`mobiledeploy sweep` against hostile input and state: huge numbers, corrupt or stale state files,
deleted artifacts, a second sweep into the same directory, huge grids, narrow terminals."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mobiledeploy.cli import cli
from mobiledeploy.errors import UsageError
from mobiledeploy.sweep.grid import SweepConfig
from mobiledeploy.sweep.rows import SweepRow
from tests.conftest import one_line_error

TINY = ["--alpha", "0.25", "--res", "32", "--formats", "tflite", "--quant", "fp32,int8", "--samples", "5",
        "--jobs", "1"]


def _sweep(*args, **kw):
    return CliRunner().invoke(cli, ["sweep", *map(str, args)], **kw)


@pytest.mark.parametrize("value", ["1e300", "86401", "inf", "nan", "0", "-1"])
def test_timeout_is_bounded_like_bench(value, tmp_path):
    out = tmp_path / "out"
    one_line_error(_sweep(*TINY, "--timeout", value, "--out", out), 2, "--timeout")
    assert not out.exists()


def test_timeout_is_bounded_in_the_library(tmp_path):
    with pytest.raises(UsageError, match="--timeout"):
        SweepConfig(alphas=(0.25,), resolutions=(32,), timeout_s=1e300, out=str(tmp_path / "o")).check()
    SweepConfig(alphas=(0.25,), resolutions=(32,), timeout_s=86400.0, out=str(tmp_path / "o")).check()


# ---------------------------------------------------------------- kept state: malformed, stale, deleted

ONE = [*TINY, "--target", "pixel4", "--max-latency-ms", "1000"]


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """One real finished config (alpha 0.25, 32x32, TFLite fp32 + int8)."""
    out = tmp_path_factory.mktemp("hostile") / "out"
    r = _sweep(*ONE, "--out", out)
    assert r.exit_code == 0, (r.stdout, r.stderr)
    return out


def _copy(src: Path, dst: Path) -> tuple[Path, Path, Path]:
    """(out, its one row file, its one export directory)."""
    shutil.copytree(src, dst)
    (row,) = (dst / "rows").glob("*.json")
    (export,) = (dst / "exports").iterdir()
    return dst, row, export


@pytest.fixture
def replay(monkeypatch, done):
    """The executor replays the real run's result instead of running: what is rerun, cheaply."""
    (row,) = (done / "rows").glob("*.json")
    good = json.loads(row.read_text())
    ran = []

    def fake_run_local(todo, workers, on_result):
        for job in todo:
            ran.append(job.name)
            on_result(job, SweepRow.from_json(json.loads(json.dumps(good))))

    monkeypatch.setattr("mobiledeploy.sweep.core.run_local", fake_run_local)
    return ran, good


def _stale_lines(r) -> list[str]:
    return [ln for ln in r.stderr.splitlines() if "kept result not used" in ln]


def _mutated(good: dict, path: str, value) -> dict:
    doc = json.loads(json.dumps(good))
    *keys, last = path.split(".")
    d = doc
    for k in keys:
        d = d[int(k)] if isinstance(d, list) else d[k]
    d[int(last) if isinstance(d, list) else last] = value
    return doc


BAD_ROWS = {
    "list": [], "string": "ok", "number": 42, "status only": {"status": "ok"}, "not json": "{",
    "size as text": ("artifacts.0.size_bytes", "581"), "latency as text": ("artifacts.0.host_ms.p50", "fast"),
    "artifact as text": ("artifacts.0", "x"), "estimate as number": ("artifacts.0.estimates.pixel4", 3),
    "artifacts as object": ("artifacts", {}), "path as number": ("artifacts.0.path", 7),
    "file outside": ("artifacts.0.file", "../../../etc/passwd"), "timing as text": ("timings_s.total", "x"),
    "macs as text": ("model.macs", "many"), "samples as text": ("artifacts.1.samples_ms", ["a"]),
}


@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_a_malformed_row_is_rerun_with_one_warning(case, done, replay, tmp_path):
    ran, good = replay
    out, row, _ = _copy(done, tmp_path / "o")
    bad = BAD_ROWS[case]
    if case == "not json":
        row.write_text(bad)
    else:
        row.write_text(json.dumps(_mutated(good, *bad) if isinstance(bad, tuple) else bad))
    r = _sweep(*ONE, "--out", out)
    assert r.exit_code == 0, (r.stdout, r.stderr)
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr
    assert len(_stale_lines(r)) == 1 and row.name in _stale_lines(r)[0]
    assert ran == [good["name"]]
    assert json.loads(row.read_text()) == good  # the rerun's result replaced it
    ex = _summary(out)["executor"]
    assert (ex["ran"], ex["cached"]) == (1, 0)


def test_a_fifo_row_is_rerun_not_waited_on(done, replay, tmp_path):
    ran, _ = replay
    out, row, _ = _copy(done, tmp_path / "o")
    row.unlink()
    os.mkfifo(row)
    r = _sweep(*ONE, "--out", out)
    assert r.exit_code == 0, r.stderr
    assert len(ran) == 1 and len(_stale_lines(r)) == 1


def test_a_directory_in_place_of_a_row_is_one_error_line(done, replay, tmp_path):
    ran, _ = replay
    out, row, _ = _copy(done, tmp_path / "o")
    row.unlink()
    (row / "inside").mkdir(parents=True)
    r = _sweep(*ONE, "--out", out)
    one_line_error(r, 1, f"cannot write '{row}'")
    assert len(ran) == 1 and len(_stale_lines(r)) == 1


def test_a_malformed_results_json_is_rewritten(done, replay, tmp_path):
    ran, _ = replay
    out, _, _ = _copy(done, tmp_path / "o")
    for doc in ("[1, 2]", '"x"', "{"):
        (out / "results.json").write_text(doc)
        r = _sweep(*ONE, "--out", out)
        assert r.exit_code == 0, r.stderr
        assert ran == [] and _summary(out)["executor"]["cached"] == 1


def test_a_moved_sweep_is_cached_with_its_new_paths(done, replay, tmp_path):
    ran, _ = replay
    out, _, export = _copy(done, tmp_path / "moved")
    r = _sweep(*ONE, "--out", out)
    assert r.exit_code == 0 and ran == [] and not _stale_lines(r), r.stderr
    assert {Path(x["path"]).parent for x in _summary(out)["rows"]} == {export}


def test_a_second_sweep_into_the_same_out_is_refused_while_the_first_runs(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(  # the first sweep, as far as the directory is concerned
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from mobiledeploy.sweep.run import out_lock\n"
         f"with out_lock(Path({str(out)!r})):\n    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        assert holder.stdout.readline().strip() == "held"
        r = _sweep(*ONE, "--out", out)
        one_line_error(r, 1, "another sweep", f"pid {holder.pid}", "--out")
        assert sorted(p.name for p in out.iterdir()) == [".sweep.lock"]  # nothing else written
    finally:
        holder.kill()
        holder.wait()
    from mobiledeploy.sweep.run import out_lock

    with out_lock(out):  # released with its process
        pass


# ---------------------------------------------------------------- huge grids


def _values(n: int, start: float, step: float) -> str:
    return ",".join(f"{start + i * step:g}" for i in range(n))


def test_a_huge_grid_is_refused_at_once_in_one_line(tmp_path):
    import time

    out = tmp_path / "out"
    t = time.perf_counter()
    r = _sweep("--alpha", _values(1000, 0.001, 0.001), "--res", _values(1000, 32, 1), "--out", out)
    one_line_error(r, 2, "1000000 configs", "1000 alpha x 1000 resolution", "--max-configs 100")
    assert "pass --max-configs" not in r.stderr  # beyond what --max-configs allows at all
    assert not out.exists()
    r = _sweep("--alpha", _values(11, 0.05, 0.05), "--res", _values(10, 32, 1), "--out", out)
    one_line_error(r, 2, "110 configs", "pass --max-configs 110")
    assert not out.exists()
    print(f"two refusals in {time.perf_counter() - t:.2f} s")  # shown with -s; no timed assertion


@pytest.mark.parametrize("value", ["0", "-3", "10001"])
def test_max_configs_is_bounded(value, tmp_path):
    one_line_error(_sweep(*TINY, "--max-configs", value, "--out", tmp_path / "o"), 2, "--max-configs")


def test_max_configs_lets_a_bigger_grid_through_to_its_other_checks(tmp_path):
    cfg = SweepConfig(alphas=tuple(0.05 * i for i in range(1, 12)), resolutions=tuple(range(32, 42)),
                      max_configs=110, out=str(tmp_path / "o"))
    assert cfg.size == 110
    cfg.check()
    with pytest.raises(UsageError, match="--max-configs 109"):
        SweepConfig(**{**cfg.to_json(), "max_configs": 109}).check()


def test_progress_starts_before_the_first_config_finishes(done, replay, tmp_path):
    ran, _ = replay
    out, row, _ = _copy(done, tmp_path / "o")
    row.unlink()
    r = _sweep(*ONE, "--out", out)
    assert r.exit_code == 0, r.stderr
    lines = r.stderr.splitlines()
    assert lines[0].startswith("sweep: 1 configs into ")
    assert lines[1] == "[0/1] running 1 configs on 1 worker(s); a line as each finishes"
    assert lines[2].startswith("[1/1] mobilenet_v1_0.25_32: ")


# ---------------------------------------------------------------- narrow terminals


@pytest.mark.parametrize("columns,wide", [(80, False), (50, False), (50, True)])
def test_front_table_shows_names_whole_or_not_at_all(columns, wide, done, replay, tmp_path):
    ran, _ = replay
    out, _, _ = _copy(done, tmp_path / "o")
    r = _sweep(*ONE, "--out", out, *(["--wide"] if wide else []), env={"COLUMNS": str(columns)})
    assert r.exit_code == 0 and ran == [], r.stderr
    table = [ln for ln in r.stdout.splitlines() if ln.startswith("│")]
    names = sorted(x["file"] for x in _summary(out)["rows"])
    assert sorted(ln.split("│")[1].strip() for ln in table) == names  # one line each, whole
    assert "…" not in r.stdout
    if not wide:
        assert max(len(ln) for ln in r.stdout.splitlines() if ln[:1] in "┏│└") <= columns
    dropped = [ln for ln in r.stdout.splitlines() if ln.startswith(f"not shown at {columns} columns")]
    assert len(dropped) == (columns == 50 and not wide)
    assert ("host p50 ms" in dropped[0]) if dropped else all(len(ln.split("│")) == 7 for ln in table)


def _summary(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def _flip_last_byte(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[-1] ^= 0xFF
    p.write_bytes(bytes(data))


def _swap_in_other_model(export: Path) -> None:
    fp32, int8 = export / "mobilenet_v1_0.25_32_fp32.tflite", export / "mobilenet_v1_0.25_32_int8.tflite"
    int8.write_bytes(fp32.read_bytes())


INT8 = "mobilenet_v1_0.25_32_int8.tflite"
GONE = {  # what happens to a finished config's export, what the warning names
    "int8 file deleted": (lambda e: (e / INT8).unlink(), INT8),
    "export dir deleted": (shutil.rmtree, "gone"),
    "same size, other bytes": (lambda e: _flip_last_byte(e / INT8), INT8),
    "another model swapped in": (_swap_in_other_model, INT8),
    "manifest corrupt": (lambda e: (e / "manifest.json").write_text('{"artifacts": 1}'), "manifest"),
}


@pytest.mark.parametrize("case", list(GONE))
def test_a_result_whose_artifacts_changed_is_not_cached(case, done, replay, tmp_path):
    ran, good = replay
    out, _, export = _copy(done, tmp_path / "o")
    damage, needle = GONE[case]
    damage(export)
    r = _sweep(*ONE, "--out", out)
    assert r.exit_code == 0, r.stderr
    assert ran == [good["name"]] and len(_stale_lines(r)) == 1
    assert needle in _stale_lines(r)[0]
    assert "0 cached" in r.stdout and "1 run" in r.stdout


@pytest.mark.parametrize("case", ["not json", "a list", "no artifacts", "artifact without hash", *GONE])
def test_a_kept_export_that_is_broken_is_not_reused(case, done, tmp_path):
    from mobiledeploy.sweep.run import reusable_export

    _, _, export = _copy(done, tmp_path / "o")
    manifest = export / "manifest.json"
    m = json.loads(manifest.read_text())
    assert reusable_export(export) == (m, None)
    if case in GONE:
        GONE[case][0](export)
    else:
        manifest.write_text({"not json": "{", "a list": "[]",
                             "no artifacts": json.dumps({**m, "artifacts": []}),
                             "artifact without hash": json.dumps(_mutated(m, "artifacts.0.sha256", None))}[case])
    found, why = reusable_export(export)
    assert found is None and (why or case == "export dir deleted")


def test_a_deleted_artifact_is_exported_again_and_the_recommendation_exists(done, tmp_path):
    out, _, export = _copy(done, tmp_path / "o")
    (export / "mobilenet_v1_0.25_32_int8.tflite").unlink()
    (export / "manifest.json").write_text("[]")  # and the export's manifest is corrupt
    from mobiledeploy.export.pipeline import STAGING_PREFIX

    dead = subprocess.Popen(["true"])
    dead.wait()
    live = export / f"{STAGING_PREFIX}{os.getpid()}-another-export"  # this process is alive: someone's export
    stale = export / f"{STAGING_PREFIX}{dead.pid}-killed"
    live.mkdir()
    stale.mkdir()
    r = _sweep(*ONE, "--out", out)
    assert r.exit_code == 0, (r.stdout, r.stderr)
    assert live.is_dir() and not stale.exists()  # the re-export cleaned only what no live process owns
    assert len(_stale_lines(r)) == 1 and "1 run, 0 cached" in r.stdout
    s = _summary(out)
    assert s["configs"][0]["export_reused"] is False
    for row in s["rows"]:  # the sizes reported are those of the files there now
        assert abs(Path(row["path"]).stat().st_size / 1024 - row["size_kb"]) < 0.1
    rec = s["recommendations"][0]["file"]
    assert (export / rec).is_file()
    r = _sweep(*ONE, "--out", out)  # healed: the next rerun reuses everything
    assert r.exit_code == 0 and "0 run, 1 cached" in r.stdout and not _stale_lines(r), r.stderr

"""`mobiledeploy sweep`: a real tiny grid end to end, resume, error rows, decision support, bad input."""

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
from mobiledeploy.sweep import pareto
from tests.conftest import one_line_error

TINY = ["--alpha", "0.25", "--res", "32,48", "--formats", "tflite", "--quant", "fp32,int8", "--samples", "10",
        "--target", "pixel4,pixel4-big", "--jobs", "2"]


def _sweep(*args):
    return CliRunner().invoke(cli, ["sweep", *map(str, args)])




@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "out"
    r = _sweep(*TINY, "--data", "digits", "--classes", "10", "--eval-limit", "100", "--max-latency-ms", "1000",
               "--out", out)
    assert r.exit_code == 0, (r.stdout, r.stderr)
    return out, r


def _summary(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def test_tiny_grid_writes_every_output(tiny_sweep):
    out, r = tiny_sweep
    for name in ("results.json", "results.csv", "results.md", "report.html", "pareto_pixel4.png",
                 "pareto_pixel4-big.png", "latency_histograms.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    s = _summary(out)
    assert [c["status"] for c in s["configs"]] == ["ok", "ok"]
    assert len(s["rows"]) == 4  # 2 configs x tflite x (fp32, int8)
    assert {(r["config"], r["precision"]) for r in s["rows"]} == {
        (f"mobilenet_v1_0.25_{res}", p) for res in (32, 48) for p in ("fp32", "int8")}
    for row in s["rows"]:
        assert row["status"] == "ok"
        assert len(row["samples_ms"]) == 10 and row["host_p50_ms"] > 0
        assert row["est_ms"]["pixel4"] > 0 and row["est_ms"]["pixel4-big"] > 0
        assert 0.0 <= row["top1"] <= 1.0
        assert row["macs"] > 0 and row["size_kb"] > 0
    assert s["random_weights"] is True and s["use_accuracy"] is False
    assert "RANDOM WEIGHTS" in r.stderr
    assert "RANDOM WEIGHTS" in (out / "results.md").read_text()
    csv_lines = (out / "results.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 5 and "est_ms_pixel4" in csv_lines[0]
    kept = [a for f in (out / "rows").glob("*.json") for a in json.loads(f.read_text())["artifacts"]]
    assert len(kept) == 4  # each artifact keeps its export's validation line, judged on this host
    for a in kept:
        expect = "ok: logits max|diff| " if a["precision"] == "fp32" else "logits: top-1 agree "
        assert a["validation"].startswith(expect) and "emulated" not in a["validation"], a["validation"]


def test_recommendation_meets_constraints_and_says_why(tiny_sweep):
    out, r = tiny_sweep
    s = _summary(out)
    assert [rec["target"] for rec in s["recommendations"]] == ["pixel4", "pixel4-big"]
    for rec in s["recommendations"]:
        row = next(x for x in s["rows"] if x["file"] == rec["file"])
        assert row["est_ms"][rec["target"]] <= 1000
        # no accuracy on trained weights: the most MACs wins, fp32 before int8
        assert row["macs"] == max(x["macs"] for x in s["rows"]) and row["precision"] == "fp32"
        assert f"recommended for {rec['target']}: {rec['file']}" in r.stdout
    assert "MACs stand in" in r.stdout


def test_front_is_non_dominated(tiny_sweep):
    s = _summary(tiny_sweep[0])
    rank = {"fp32": 0, "int8": 1}
    for target, files in s["fronts"].items():
        assert files
        # random weights: latency and size (lower), MACs (higher) and precision (fp32 first) as accuracy's proxy
        pts = {x["file"]: (x["est_ms"][target], x["size_kb"], -x["macs"], rank[x["precision"]]) for x in s["rows"]}

        def beaten(p):
            return any(all(a <= b for a, b in zip(o, p)) and o != p for o in pts.values())

        assert not any(beaten(pts[f]) for f in files)
        assert all(beaten(pts[f]) for f in set(pts) - set(files))
        # the largest config's fp32 artifact has no better on the proxy: it is always on the front
        assert "mobilenet_v1_0.25_48_fp32.tflite" in files


def test_html_is_self_contained(tiny_sweep):
    html = (tiny_sweep[0] / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3  # two Pareto plots, one histogram figure
    assert "http://" not in html and "https://" not in html  # nothing fetched when opened
    assert html.count("<tr class=") == 4 and "Machine and versions" in html


def test_rerun_is_cached_and_a_lost_result_is_redone_from_the_kept_export(tiny_sweep, tmp_path):
    src, _ = tiny_sweep
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    rows = sorted((out / "rows").glob("*.json"))
    before = {p.name: p.read_bytes() for p in rows}
    r = _sweep(*TINY, "--data", "digits", "--classes", "10", "--eval-limit", "100", "--out", out)
    assert r.exit_code == 0, r.stderr
    s = _summary(out)
    assert s["executor"]["ran"] == 0 and s["executor"]["cached"] == 2
    assert {p.name: p.read_bytes() for p in sorted((out / "rows").glob("*.json"))} == before
    rows[1].unlink()  # as if killed before that config's result was written
    r = _sweep(*TINY, "--data", "digits", "--classes", "10", "--eval-limit", "100", "--out", out)
    assert r.exit_code == 0, r.stderr
    s = _summary(out)
    assert s["executor"]["ran"] == 1
    redone = next(c for c in s["configs"] if c["row_key"][:12] in rows[1].name)
    assert redone["export_reused"] is True and redone["status"] == "ok"


def test_a_failing_config_is_an_error_row_not_the_end(tiny_sweep, tmp_path):
    src, _ = tiny_sweep
    out = tmp_path / "broken"
    shutil.copytree(src, out)
    victim = next((out / "exports").glob("mobilenet_v1_0.25_48-*")) / "mobilenet_v1_0.25_48_int8.tflite"
    victim.write_bytes(b"not a flatbuffer")
    from mobiledeploy.export.pipeline import sha256_file

    manifest = json.loads((victim.parent / "manifest.json").read_text())  # it vouches for the broken file:
    for a in manifest["artifacts"]:  # the export is reused (a changed file alone is exported again)
        if a["file"] == victim.name:
            a.update(size_bytes=victim.stat().st_size, sha256=sha256_file(victim))
    (victim.parent / "manifest.json").write_text(json.dumps(manifest))
    for p in (out / "rows").glob("mobilenet_v1_0.25_48-*.json"):
        p.unlink()
    r = _sweep(*TINY, "--data", "digits", "--classes", "10", "--eval-limit", "100", "--out", out)
    one_line_error(r, 1, "1 of 2 configs failed")
    s = _summary(out)
    bad = [x for x in s["rows"] if x["status"] != "ok"]
    assert [x["file"] for x in bad] == ["mobilenet_v1_0.25_48_int8.tflite"]
    assert len([x for x in s["rows"] if x["status"] == "ok"]) == 3
    assert (out / "report.html").is_file() and "mobilenet_v1_0.25_48_int8.tflite" in (out / "results.md").read_text()


@pytest.mark.parametrize("args,needle", [
    (["--alpha", ""], "--alpha"),
    (["--res", ""], "--res"),
    (["--alpha", "0"], "--alpha"),
    (["--alpha", "1.5"], "(0, 1.4]"),
    (["--res", "16"], "--res"),
    (["--target", "nokia3310"], "unknown target 'nokia3310'"),
    (["--quant", "fp8"], "--quant"),
    (["--min-top1", "0.5"], "--data"),
    (["--min-top1", "70", "--data", "digits", "--classes", "10"], "fraction"),
    (["--data", "digits"], "--classes 10"),
    (["--executor", "ray", "--ray-address", "127.0.0.1:1"], "unreachable"),
    (["--ray-address", "127.0.0.1:1"], "--executor ray"),
    (["--jobs", "0"], "--jobs"),
    (["--equalize", "sideways"], "--equalize"),
    (["--weight-rounding", "up"], "--weight-rounding"),
    (["--emulate", "cortex-a99"], "unknown emulated CPU 'cortex-a99'"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(args, needle, tmp_path):
    out = tmp_path / "out"
    one_line_error(_sweep(*args, "--out", out), 2, needle)
    assert not out.exists()


def test_unwritable_out_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    one_line_error(_sweep("--out", blocker / "sub"), 2, "--out")
    one_line_error(_sweep("--out", blocker), 2, "--out")


def test_bad_input_never_imports_tensorflow():
    code = ("import sys; from mobiledeploy.cli import cli; "
            "rc = cli.main(['sweep', '--target', 'nope'], standalone_mode=False); "
            "print(rc, 'tensorflow' in sys.modules, 'keras' in sys.modules, 'ray' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1])))
    assert r.stdout.split() == ["2", "False", "False", "False"], r.stderr


# ---------------------------------------------------------------- decision logic on hand-made rows


def _row(config, fmt, precision, est, size, top1=None, macs=1, host=1.0):
    return {"config": config, "file": f"{config}_{precision}.{fmt}", "format": fmt, "precision": precision,
            "runtime": {"tflite": "litert", "onnx": "onnxruntime"}[fmt], "status": "ok", "est_ms": {"t": est},
            "size_kb": size, "top1": top1, "macs": macs, "host_p50_ms": host, "host_label": "host latency"}


def test_front_and_recommendation_with_accuracy():
    rows = [_row("a", "tflite", "fp32", 10, 400, 0.70), _row("a", "tflite", "int8", 4, 100, 0.69),
            _row("b", "tflite", "fp32", 3, 200, 0.60), _row("c", "tflite", "fp32", 12, 500, 0.65)]
    assert [r["file"] for r in pareto.front(rows, "t", use_accuracy=True)] == ["b_fp32.tflite", "a_int8.tflite",
                                                                              "a_fp32.tflite"]
    rec = pareto.recommend(rows, "t", pareto.Constraints(max_latency_ms=5), use_accuracy=True)
    assert rec.row["file"] == "a_int8.tflite" and rec.fitting == 2 and "most accurate" in rec.reason
    rec = pareto.recommend(rows, "t", pareto.Constraints(max_latency_ms=2), use_accuracy=True)
    assert rec.row is None and "closest is b_fp32.tflite" in rec.reason


def test_slower_than_fp32_sibling_on_the_same_runtime():
    rows = [_row("a", "onnx", "fp32", 1, 1, host=7.4), _row("a", "onnx", "int8", 1, 1, host=59.9),
            _row("a", "tflite", "fp32", 1, 1, host=7.4), _row("a", "tflite", "int8", 1, 1, host=2.6)]
    warnings = pareto.slower_than_fp32(rows)
    assert len(warnings) == 1 and warnings[0].startswith("a_int8.onnx") and "8.1x" in warnings[0]


# ---------------------------------------------------------------- slow tier: a real browser, a real Ray


def _screenshot_module():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "sweep_report_screenshot.py"
    spec = importlib.util.spec_from_file_location("sweep_report_screenshot", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_report_renders_in_headless_chromium(tiny_sweep, tmp_path):
    shot = _screenshot_module()
    if shot.chromium() is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    found = shot.check_report(tiny_sweep[0] / "report.html", tmp_path / "report.png")
    assert found["ok"], found
    assert found["plots_rendered"] == 3 and found["table_rows"] == 4
    # the check can fail: a plot the browser cannot decode is counted out
    broken = tmp_path / "broken.html"
    html = (tiny_sweep[0] / "report.html").read_text()
    broken.write_text(html.replace("data:image/png;base64,", "data:image/png;base64,AAAA", 1))
    bad = shot.check_report(broken, tmp_path / "broken.png")
    assert not bad["ok"] and bad["plots_rendered"] == 2


@pytest.mark.slow
def test_ray_local_instance_runs_the_same_sweep(tiny_sweep, tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'mobiledeploy[ray]')")
    out = tmp_path / "ray"
    r = _sweep(*TINY, "--data", "digits", "--classes", "10", "--eval-limit", "100", "--executor", "ray",
               "--out", out)
    assert r.exit_code == 0, (r.stdout, r.stderr)
    ray_s, local_s = _summary(out), _summary(tiny_sweep[0])
    assert ray_s["executor"]["kind"] == "ray" and ray_s["executor"]["nodes"] == 1
    assert ray_s["executor"]["cpus"] == 2
    assert all(c["node"].get("ray_node_id") for c in ray_s["configs"])
    key = lambda x: (x["file"], x["macs"], x["params"], x["top1"], tuple(sorted(x["est_ms"].items())))  # noqa: E731
    # identical results apart from latency noise ...
    assert sorted(map(key, ray_s["rows"])) == sorted(map(key, local_s["rows"]))
    # ... and a few bytes of names in the ONNX graph, which depend on what the worker process built before
    sizes = {x["file"]: x["size_kb"] for x in local_s["rows"]}
    assert all(abs(x["size_kb"] - sizes[x["file"]]) <= 1.0 for x in ray_s["rows"])


@pytest.mark.slow
def test_killed_midway_then_rerun_loses_no_finished_config(tmp_path):
    import signal
    import time

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "mobiledeploy", "sweep", "--alpha", "0.25", "--res", "32,48,64",
           "--formats", "tflite", "--samples", "10", "--jobs", "1", "--out", str(out)]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while not list((out / "rows").glob("*.json")) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        finished = {p.name: p.read_bytes() for p in (out / "rows").glob("*.json")}
        assert finished, "no config finished before the deadline"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers, mid-sweep
        proc.wait()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    s = _summary(out)
    assert s["executor"]["cached"] >= len(finished) and len(s["configs"]) == 3
    assert all(c["status"] == "ok" for c in s["configs"])
    for name, data in finished.items():  # what was finished was kept, byte for byte
        assert (out / "rows" / name).read_bytes() == data
    assert not [p for p in out.rglob(".*") if p.name.startswith((".mobiledeploy-export-", ".results", ".report"))]


def test_the_int8_recipe_options_reach_every_export_and_its_key(tmp_path):
    """sweep --tflite-calibration/--equalize/--weight-rounding/--onnx-calibration build each config's int8 artifacts
    with that recipe (the export's manifest records it) and key the kept export by it: the default recipe is
    another export directory, never mistaken for this one."""
    from mobiledeploy.sweep.grid import SweepConfig, jobs

    out = tmp_path / "out"
    r = _sweep("--alpha", "0.25", "--res", "32", "--formats", "tflite", "--quant", "int8", "--samples", "5",
               "--target", "pixel4", "--jobs", "1", "--tflite-calibration", "mse", "--out", out)
    assert r.exit_code == 0, (r.stdout, r.stderr)
    (manifest,) = (out / "exports").glob("*/manifest.json")
    assert json.loads(manifest.read_text())["quantization"]["tflite"]["calibrate_method"] == "mse"
    base = dict(alphas=(0.25,), resolutions=(32,), formats=("tflite",), precisions=("int8",), out=str(out))
    (mse,) = jobs(SweepConfig(**base, tflite_calibration="mse"))
    (default,) = jobs(SweepConfig(**base))
    assert mse.export.out == str(manifest.parent) and default.export.out != mse.export.out
    (other,) = jobs(SweepConfig(**base, equalize="cle", weight_rounding="adaround", onnx_calibration="entropy"))
    assert (other.export.equalize, other.export.weight_rounding, other.export.onnx_calibration) == (
        "cle", "adaround", "entropy")
    assert len({mse.export_key, default.export_key, other.export_key}) == 3
    (arm,) = jobs(SweepConfig(**base, emulate="cortex-a76"))  # judged on an emulated ARM CPU: another export
    assert arm.export.emulate == "cortex-a76" and arm.export_key != default.export_key
    assert "emulate" not in SweepConfig(**base).to_json() and SweepConfig(**base, emulate="cortex-a76").to_json()[
        "emulate"] == "cortex-a76"

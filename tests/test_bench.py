"""bench: child-process measurement, isolation, targets, CLI output and errors."""

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import errors

from mobiledeploy.bench import core as b
from mobiledeploy import targets as tg
from mobiledeploy.runtimes.child import FAULT_ENV
from mobiledeploy.runtimes.timing import run_plan, timed_loop
from mobiledeploy.cli import cli

FAST = b.BenchSettings(warmup=1, runs=5, timeout_s=120)
FAST_ARGS = ["--warmup", "1", "--runs", "5"]


def _check_ok(r: b.BenchResult, runs: int = 5):
    assert r.status == "ok" and r.error is None, r.error
    assert r.runs == runs == len(r.samples_ms)
    lat = r.latency_ms
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert lat["mean"] == pytest.approx(np.mean(r.samples_ms))
    assert r.throughput_ips == pytest.approx(1000 / lat["mean"])
    assert r.init_ms > 0 and r.first_ms > 0 and r.size_bytes > 0
    assert r.peak_rss_mb is not None and r.peak_rss_mb >= 0


@pytest.fixture(scope="module")
def tiny_results(tiny_tflite, tiny_onnx, tiny_tflite_int8):
    return {name: b.bench_model(p, FAST) for name, p in
            [("tflite", tiny_tflite), ("onnx", tiny_onnx), ("int8", tiny_tflite_int8)]}


def test_bench_model_on_both_runtimes(tiny_results):
    t, o, q = tiny_results["tflite"], tiny_results["onnx"], tiny_results["int8"]
    for r in (t, o, q):
        _check_ok(r)
    assert (t.format, t.runtime, t.precision) == ("tflite", "litert", "fp32")
    assert (o.format, o.runtime, o.precision) == ("onnx", "onnxruntime", "fp32")
    assert q.precision == "int8" and q.inputs[0]["dtype"] == "int8" and q.inputs[0]["quantization"]
    assert o.inputs[0]["shape"] == [1, 32, 32, 3]  # dynamic batch -> 1
    j = t.to_json()
    assert set(j["latency_ms"]) == {"mean", "std", "min", "p50", "p90", "p99", "max"}
    assert "samples_ms" not in j and len(t.to_json(samples=True)["samples_ms"]) == 5
    assert j["label"] == "host latency, host settings"


def test_child_never_imports_tensorflow(tiny_tflite):
    raw = b._run_child(tiny_tflite, FAST)
    assert raw["status"] == "ok" and raw["tensorflow_imported"] is False


def test_bench_cli_path_does_not_import_tensorflow(tiny_tflite):
    code = ("import sys; from click.testing import CliRunner; from mobiledeploy.cli import cli; "
            "r = CliRunner().invoke(cli, ['bench', '--help']); assert r.exit_code == 0, r.output; "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules); "
            f"r = CliRunner().invoke(cli, ['bench', {str(tiny_tflite)!r}, '--target', 'pixel4-big', '--runs', '2']); "
            "assert r.exit_code == 0, r.output; "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-4:] == ["False", "False", "False", "False"]


def test_segfault_and_hang_become_error_rows(tiny_tflite, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "segfault")
    r = b.bench_model(tiny_tflite, FAST)
    assert r.status == "error" and r.error == "crashed with signal SIGSEGV"
    monkeypatch.setenv(FAULT_ENV, "sleep")
    r = b.bench_model(tiny_tflite, b.BenchSettings(warmup=1, runs=5, timeout_s=1.5))
    assert r.status == "error" and r.error.startswith("timed out after 1.5 s") and "--timeout" in r.error
    monkeypatch.setenv(FAULT_ENV, "raise")
    r = b.bench_model(tiny_tflite, FAST)
    assert r.status == "error" and r.error == "RuntimeError: deliberate failure from " + FAULT_ENV


def _tflite_split_zero(path):
    """A flatbuffer-valid TFLite model that segfaults LiteRT: SPLIT with num_splits = 0.

    The builtin kernels reject it in Prepare; with XNNPACK (the default) LiteRT 2.3
    crashes with SIGSEGV while applying the delegate. Built with the schema's object API,
    so no TensorFlow is needed.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    m = s.ModelT()
    m.version = 3
    code = s.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = s.BuiltinOperator.SPLIT
    code.version = 1
    m.operatorCodes = [code]
    axis = s.BufferT()
    axis.data = list(np.array(1, np.int32).tobytes())
    m.buffers = [s.BufferT(), axis]
    tensors = []
    for i, (shape, ttype, buf) in enumerate([((), s.TensorType.INT32, 1), ((1, 4), s.TensorType.FLOAT32, 0),
                                             ((1, 4), s.TensorType.FLOAT32, 0)]):
        t = s.TensorT()
        t.shape, t.type, t.buffer, t.name = list(shape), ttype, buf, f"t{i}".encode()
        tensors.append(t)
    opts = s.SplitOptionsT()
    opts.numSplits = 0
    op = s.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1], [2]
    op.builtinOptionsType, op.builtinOptions = s.BuiltinOptions.SplitOptions, opts
    sg = s.SubGraphT()
    sg.tensors, sg.operators, sg.inputs, sg.outputs = tensors, [op], [1], [2]
    m.subgraphs = [sg]
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    path.write_bytes(bytes(b.Output()))
    return path


def test_a_model_that_crashes_the_runtime_is_an_error_row(tiny_tflite, tmp_path):
    crash = _tflite_split_zero(tmp_path / "split0.tflite")
    out = tmp_path / "r.json"
    r = CliRunner().invoke(cli, ["bench", str(crash), str(tiny_tflite), *FAST_ARGS, "--json", str(out)])
    assert r.exit_code == 1
    assert errors(r.stderr) == [f"error: {crash}: crashed with signal SIGSEGV"]
    rows = json.loads(out.read_text())["results"]
    assert [row["status"] for row in rows] == ["error", "ok"]  # the next model still ran
    # the builtin kernels refuse the same file cleanly
    r = b.bench_model(crash, b.BenchSettings(xnnpack=False, warmup=0, runs=1))
    assert r.status == "error" and "SPLIT" in r.error and "crashed" not in r.error


def test_hang_on_cli_still_benches_the_rest_and_exits_1(tiny_tflite, tmp_path, monkeypatch):
    # the hook makes the child hang: the timeout kills it, the row says why, exit 1, JSON written
    monkeypatch.setenv(FAULT_ENV, "sleep")
    out = tmp_path / "r.json"
    r = CliRunner().invoke(cli, ["bench", str(tiny_tflite), "--timeout", "1", "--json", str(out)])
    assert r.exit_code == 1
    assert "timed out after 1 s" in r.stderr and "Traceback" not in r.stderr
    assert json.loads(out.read_text())["results"][0]["status"] == "error"


@pytest.mark.parametrize("blob", [b"TFL3", None, b"random"], ids=["header-only", "truncated", "random"])
def test_broken_tflite_files_fail_cleanly(tiny_tflite, tmp_path, blob):
    p = tmp_path / "broken.tflite"
    data = tiny_tflite.read_bytes()
    p.write_bytes(data[:len(data) // 2] if blob is None else
                  (b"\0\0\0\0" + blob if blob == b"TFL3" else np.random.default_rng(0).bytes(5000)))
    r = b.bench_model(p, FAST)
    assert r.status == "error" and "LiteRT cannot load broken.tflite" in r.error


def test_export_directory_with_manifest_and_a_bad_model(tiny_tflite, tiny_onnx, tiny_tflite_int8, tmp_path):
    d = tmp_path / "build"
    d.mkdir()
    for src, name in [(tiny_tflite, "m_fp32.tflite"), (tiny_onnx, "m_fp32.onnx"), (tiny_tflite_int8, "m_int8.tflite")]:
        (d / name).write_bytes(src.read_bytes())
    (d / "m_bad.onnx").write_bytes(b"not a model at all")
    (d / "notes.txt").write_text("ignored")
    manifest = {"schema_version": 1, "artifacts": [
        {"file": "m_fp32.tflite", "format": "tflite", "precision": "fp32"},
        {"file": "m_int8.tflite", "format": "tflite", "precision": "int8"},
        {"file": "m_fp32.onnx", "format": "onnx", "precision": "fp16"},  # manifest wins over inference
        {"file": "m_bad.onnx", "format": "onnx", "precision": "fp32"}]}  # listed, but no runtime can load it
    (d / "manifest.json").write_text(json.dumps(manifest))
    out, md = tmp_path / "bench.json", tmp_path / "bench.md"
    r = CliRunner().invoke(cli, ["bench", str(d), *FAST_ARGS, "--json", str(out), "--md", str(md)])
    assert r.exit_code == 2, r.output  # the only failure is a corrupt file: the input's fault, as in `info`
    assert "error: " in r.stderr and "m_bad.onnx" in r.stderr and "ONNX Runtime cannot load" in r.stderr
    assert "Traceback" not in r.stderr
    data = json.loads(out.read_text())
    assert data["schema_version"] == 1 and data["target"]["name"] == "host"
    assert data["host"]["cores"] >= 1 and data["host"]["versions"]["onnxruntime"]
    rows = {p["model"].rsplit("/", 1)[-1]: p for p in data["results"]}
    assert set(rows) == {"m_bad.onnx", "m_fp32.onnx", "m_fp32.tflite", "m_int8.tflite"}
    assert rows["m_fp32.onnx"]["precision"] == "fp16" and rows["m_int8.tflite"]["precision"] == "int8"
    assert rows["m_bad.onnx"]["status"] == "error" and rows["m_bad.onnx"]["latency_ms"] is None
    for name in ("m_fp32.onnx", "m_fp32.tflite", "m_int8.tflite"):
        assert rows[name]["status"] == "ok" and rows[name]["runs"] == 5 and rows[name]["latency_ms"]["p50"] > 0
    text = md.read_text()
    assert "| model | format | precision |" in text and "m_int8.tflite" in text and "Errors:" in text
    assert "host latency, host settings" in r.stdout


def test_target_profile_pins_cores_and_labels_output(tiny_tflite, tmp_path):
    cores = tg.host_cores()
    s = b.settings_for_target(tg.load_target("pixel4-big"), warmup=1, runs=5)
    assert (s.threads, s.affinity, s.target) == (1, (cores[0],), "pixel4-big")
    r = b.bench_model(tiny_tflite, s)
    _check_ok(r)
    assert r.threads == 1 and r.cores == (cores[0],)
    assert r.to_json()["label"] == "host latency, pixel4-big settings"
    s4 = b.settings_for_target(tg.load_target("pixel4"), threads=None)
    assert s4.threads == 4 and s4.affinity == tuple(cores[:4])
    if len(cores) < 4:
        assert "asks for 4 threads" in s4.notes[0]
    res = CliRunner().invoke(cli, ["bench", str(tiny_tflite), "--target", "pixel4-big", *FAST_ARGS, "--json", "-"])
    assert res.exit_code == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["label"] == "host latency, pixel4-big settings" and data["target"]["threads"] == 1
    assert data["results"][0]["threads"] == 1


def test_user_target_file_and_overrides_on_cli(tiny_onnx, tmp_path):
    core = tg.host_cores()[-1]
    p = tmp_path / "mine.toml"
    p.write_text(f'name = "mine"\n[run]\nthreads = 2\naffinity = [{core}]\nort_opt_level = "basic"\n')
    res = CliRunner().invoke(cli, ["bench", str(tiny_onnx), "--target-file", str(p), "--threads", "1",
                                   "--runs", "3", "--warmup", "0", "--json", "-"])
    assert res.exit_code == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["label"] == "host latency, mine settings"
    assert data["settings"]["ort_opt_level"] == "basic" and data["settings"]["affinity"] == [core]
    row = data["results"][0]
    assert row["threads"] == 1 and row["cores"] == [core] and row["runs"] == 3


@pytest.mark.parametrize("args, code, message", [
    (["missing.tflite"], 2, "model not found"),
    (["{empty}"], 2, "holds no .tflite or .onnx models"),
    (["{tflite}", "--target", "nope"], 2, "unknown target 'nope'"),
    (["{tflite}", "--shape", "input=1xAx3"], 2, "--shape"),
    (["{tflite}", "--shape", "nope=1x32x32x3", "--runs", "1"], 2, "has no input named 'nope'"),
    (["{other}"], 2, "neither a TFLite nor an ONNX model"),
    (["{tflite}", "--affinity", "999"], 2, "do not exist on this host"),
])
def test_bad_input_is_one_clear_line(tiny_tflite, tmp_path, args, code, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "model.bin").write_bytes(b"12345678")
    args = [a.format(empty=tmp_path / "empty", tflite=tiny_tflite, other=tmp_path / "model.bin") for a in args]
    r = CliRunner().invoke(cli, ["bench", *args])
    assert r.exit_code == code, (r.stdout, r.stderr)
    lines = errors(r.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr


def test_run_plan_and_timed_loop():
    assert run_plan(None, None) == (50, 2.0, None)
    assert run_plan(7, None) == (7, 0.0, 7)
    assert run_plan(None, 0.5) == (1, 0.5, None)
    assert run_plan(7, 0.5) == (7, 0.5, None)
    calls = []
    assert len(timed_loop(lambda: calls.append(1), min_runs=7, max_runs=7)) == 7 == len(calls)
    samples = timed_loop(lambda: None, min_runs=3, min_time_s=0.05)
    assert len(samples) > 3 and all(s >= 0 for s in samples)


def test_settings_validate_and_stats():
    with pytest.raises(b.UsageError, match="--runs"):
        b.BenchSettings(runs=0)
    with pytest.raises(b.UsageError, match="--ort-opt-level"):
        b.BenchSettings(ort_opt_level="max")
    s = b.latency_stats([1.0, 2.0, 3.0, 4.0])
    assert s["p50"] == 2.5 and s["min"] == 1.0 and s["max"] == 4.0 and s["std"] == pytest.approx(np.std([1, 2, 3, 4], ddof=1))


@pytest.mark.slow
def test_bench_over_a_real_export_directory(tmp_path):
    """The foundation's export (all four artifacts) benches cleanly, precisions from its manifest."""
    out = tmp_path / "build"
    r = CliRunner().invoke(cli, ["export", "--alpha", "0.25", "--res", "32", "--out", str(out)])
    assert r.exit_code == 0, r.stderr
    manifest = {a["file"]: a["precision"] for a in json.loads((out / "manifest.json").read_text())["artifacts"]}
    res = CliRunner().invoke(cli, ["bench", str(out), *FAST_ARGS, "--json", "-"])
    assert res.exit_code == 0, res.stderr
    rows = json.loads(res.stdout)["results"]
    assert len(rows) == len([f for f in manifest if f.endswith((".tflite", ".onnx"))]) >= 4
    for row in rows:
        assert row["status"] == "ok" and row["precision"] == manifest[row["model"].rsplit("/", 1)[-1]]


def test_a_target_with_priors_only_says_so_like_estimate(tiny_tflite):
    r = CliRunner().invoke(cli, ["bench", str(tiny_tflite), "--target", "a55-little", "--runs", "2", "--warmup", "0"])
    assert r.exit_code == 0, r.stderr
    assert "warning: target 'a55-little' has no calibrated [cost_model]: priors only" in r.stderr


def test_profile_gives_every_operator_on_both_runtimes(tiny_tflite_int8, tiny_onnx, tmp_path):
    """bench --profile: one row per LiteRT operator of the file (prefix differencing) and per ONNX Runtime
    node (its profiler), in the table and the JSON; the LiteRT differences add up to the prefix-timed model."""
    from ai_edge_litert import schema_py_generated as schema

    out = tmp_path / "b.json"
    md = tmp_path / "b.md"
    r = CliRunner().invoke(cli, ["bench", str(tiny_tflite_int8), str(tiny_onnx), *FAST_ARGS, "--threads", "1",
                                 "--profile", "--json", str(out), "--md", str(md)])
    assert r.exit_code == 0, r.output
    profiles = json.loads(out.read_text())["profiles"]
    tfl, onx = profiles[str(tiny_tflite_int8)], profiles[str(tiny_onnx)]
    model = schema.Model.GetRootAsModel(tiny_tflite_int8.read_bytes(), 0)
    assert tfl["status"] == "ok" and len(tfl["ops"]) == model.Subgraphs(0).OperatorsLength()
    assert tfl["ops"][0]["op"] in ("QUANTIZE", "CONV_2D") and any(o["op"] == "DEPTHWISE_CONV_2D" for o in tfl["ops"])
    assert tfl["sum_ms"] == pytest.approx(sum(o["ms"] for o in tfl["ops"])) and tfl["sum_ms"] > 0
    assert "prefix differencing" in tfl["method"]
    assert onx["status"] == "ok" and any(o["op"] == "Conv" for o in onx["ops"]) and onx["run_p50_ms"] > 0
    assert all(o["ms"] >= 0 for o in onx["ops"])  # measured kernel times, never differences
    assert "per operator (host)" in r.output and "operators, sum" in r.output
    # estimate --target host per layer beside the measured operators: every conv of both files is matched
    for prof in (tfl, onx):
        est = prof["estimate"]
        assert est["target"] == "host" and est["label"].startswith("device estimate for host") and est["latency_ms"] > 0
        convs = [o for o in prof["ops"] if "CONV" in o["op"].upper()]
        assert convs and all(o["estimate_ms"] > 0 for o in convs)
        assert 0 < est["matched_ms"] <= est["latency_ms"] + 1e-9 and est["layers_matched"] >= len(convs)
    assert "host est. ms" in r.output and "`estimate --target host` per layer" in r.output
    text = md.read_text()
    assert text.count(": per operator (host)") == 2 and "| host est. ms |" in text


def test_profile_operators_find_their_cost_model_layer():
    """ONNX Runtime renames what it fuses (after the activation's output, with layout or quantization
    suffixes); each measured operator still finds the layer the cost model has for it, once."""
    from types import SimpleNamespace as L

    from mobiledeploy.bench.profile import match_layers

    layers = [L(name="Conv__227", fused=("m/conv1_relu/Relu6",)), L(name="m/conv_dw_1/depthwise", fused=("m/dw_relu/Relu6",)),
              L(name="Conv__237", fused=()), L(name="m/pool", fused=())]
    ops = ["input_q", "m/conv1_relu/Relu6:0_nchwc", "m/conv_dw_1/depthwise_token_3", "Conv__237_quant", "ReorderOutput",
           "Conv__237"]
    assert match_layers(ops, layers) == [None, 0, 1, 2, None, None]


def test_profile_refuses_emulation(tiny_tflite):
    r = CliRunner().invoke(cli, ["bench", str(tiny_tflite), "--profile", "--emulate", "cortex-a55", "--runs", "2"])
    assert r.exit_code == 2 and "cannot be combined with --emulate" in r.output


def test_profile_of_a_model_too_large_to_load_every_prefix_times_them_one_after_another(tiny_tflite, monkeypatch):
    from ai_edge_litert import schema_py_generated as schema

    from mobiledeploy.runtimes import profile

    monkeypatch.setattr(profile, "MAX_LOADED_BYTES", 0)
    res = profile.tflite_op_times(str(tiny_tflite), threads=1, runs=3, warmup=0)
    n = schema.Model.GetRootAsModel(tiny_tflite.read_bytes(), 0).Subgraphs(0).OperatorsLength()
    assert "one prefix after another" in res["method"] and len(res["ops"]) == n
    assert res["sum_ms"] == pytest.approx(res["run_p50_ms"]) and res["run_p50_ms"] > 0


def test_a_model_the_cost_model_cannot_read_keeps_its_profile(monkeypatch):
    """The host estimate beside the profile is best effort: a parser failure becomes estimate_error."""
    from mobiledeploy.bench import profile as bp
    from mobiledeploy.cost import info

    def broken(*a, **k):
        raise ValueError("unexpected graph")

    monkeypatch.setattr(info, "model_stats", broken)
    prof = {"status": "ok", "ops": [{"index": 0, "name": "x", "op": "CONV_2D", "ms": 0.1}], "sum_ms": 0.1,
            "run_p50_ms": 0.1, "method": "m"}
    bp.attach_estimates(prof, "m.tflite", threads=1)
    assert "cannot read this model (ValueError: unexpected graph)" in prof["estimate_error"] and "estimate" not in prof
    rows, summary = bp.profile_rows(prof, 0.1)
    assert rows[0][-1] == "-" and "No host estimate: the cost model cannot read" in summary

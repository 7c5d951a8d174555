"""`target calibrate` inputs: benchmark_model text and op profile, ORT profile, bench --json."""

from __future__ import annotations

import json
import math
import shutil
import tomllib

import pytest
from click.testing import CliRunner

from mobiledeploy.cli import cli
from mobiledeploy.errors import UsageError
from mobiledeploy.cost.measurements import (parse_benchmark_model_text, parse_op_profile_csv, parse_ort_profile,
                                       read)

# What LiteRT's benchmark_model prints on a phone (abridged only in the memory lines).
BENCHMARK_MODEL_LOG = """\
STARTING!
Log parameter values verbosely: [0]
Num threads: [4]
Graph: [/data/local/tmp/fp32.tflite]
#threads used for CPU inference: [4]
Loaded model /data/local/tmp/fp32.tflite
INFO: Initialized TensorFlow Lite runtime.
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
The input model file size (MB): 0.052
Initialized session in 3.204ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=1234 first=1021 curr=402 min=389 max=1124 avg=405.2 std=21

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=2468 first=411 curr=399 min=388 max=702 avg=401.7 std=12

Inference timings in us: Init: 3204, First inference: 1021, Warmup (avg): 405.2, Inference (avg): 401.7
Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your one's own risk.
Memory footprint delta from the start of the tool (MB): init=2.31 overall=3.12
"""

# benchmark_model --enable_op_profiling=true --profiling_output_csv_file=ops.csv (two tables)
OP_PROFILE_CSV = """\
"Operator-wise Profiling Info for Regular Benchmark Runs:"
"Run Order"
node type,first,avg_ms,%,cdf%,mem KB,times called,name
CONV_2D,0.112,0.105,26.250%,26.250%,0.000,1,[sequential/conv1/Relu6]
DEPTHWISE_CONV_2D,0.051,0.048,12.000%,38.250%,0.000,1,[sequential/conv_dw_1/Relu6]
CONV_2D,0.130,0.127,31.750%,70.000%,0.000,1,[sequential/conv_pw_1/Relu6]
MEAN,0.020,0.019,4.750%,74.750%,0.000,1,[sequential/global_average_pooling2d/Mean]
FULLY_CONNECTED,0.095,0.090,22.500%,97.250%,0.000,1,[sequential/predictions/MatMul]
SOFTMAX,0.012,0.011,2.750%,100.000%,0.000,1,[StatefulPartitionedCall:0]

"Top by Computation Time"
node type,first,avg_ms,%,cdf%,mem KB,times called,name
CONV_2D,0.130,0.127,31.750%,31.750%,0.000,1,[sequential/conv_pw_1/Relu6]
CONV_2D,0.112,0.105,26.250%,58.000%,0.000,1,[sequential/conv1/Relu6]
"""

# The text form of the same profile (tab separated, bracketed header), as printed to the log.
OP_PROFILE_TEXT = """\
Operator-wise Profiling Info for Regular Benchmark Runs:
============================== Run Order ==============================
\t             [node type]\t          [first]\t  [avg ms]\t      [%]\t    [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t                 CONV_2D\t            0.112\t     0.105\t 26.250%\t 26.250%\t     0.000\t        1\t[conv1]
\t       DEPTHWISE_CONV_2D\t            0.051\t     0.048\t 12.000%\t 38.250%\t     0.000\t        1\t[dw1]

============================== Top by Computation Time ==============================
\t             [node type]\t          [first]\t  [avg ms]\t      [%]\t    [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t                 CONV_2D\t            0.112\t     0.105\t 26.250%\t 26.250%\t     0.000\t        1\t[conv1]
"""


def _ort_profile(durs_us) -> list:
    """An ONNX Runtime profile (SessionOptions.enable_profiling): chrome-trace events."""
    ev = [{"cat": "Session", "pid": 4242, "tid": 4242, "dur": 2100, "ts": 10, "ph": "X",
           "name": "model_loading_uri", "args": {}},
          {"cat": "Session", "pid": 4242, "tid": 4242, "dur": 3000, "ts": 2200, "ph": "X",
           "name": "session_initialization", "args": {}}]
    ts = 6000
    for d in durs_us:
        ev.append({"cat": "Node", "pid": 4242, "tid": 4242, "dur": d // 3, "ts": ts + 5, "ph": "X",
                   "name": "conv1_kernel_time", "args": {"op_name": "Conv", "provider": "CPUExecutionProvider"}})
        ev.append({"cat": "Session", "pid": 4242, "tid": 4242, "dur": d, "ts": ts, "ph": "X",
                   "name": "model_run", "args": {}})
        ts += d + 50
    return ev


def test_benchmark_model_text():
    got = parse_benchmark_model_text(BENCHMARK_MODEL_LOG, "log")
    assert math.isclose(got["latency_ms"], 0.4017) and got["threads"] == 4
    assert got["graph"] == "/data/local/tmp/fp32.tflite"
    with pytest.raises(UsageError, match="Inference timings in us"):
        parse_benchmark_model_text("Num threads: [4]\nGraph: [x.tflite]\n", "log")


def test_op_profile_sums_the_run_order_table_only():
    assert math.isclose(parse_op_profile_csv(OP_PROFILE_CSV, "ops.csv"), 0.105 + 0.048 + 0.127 + 0.019 + 0.090 + 0.011)
    assert math.isclose(parse_op_profile_csv(OP_PROFILE_TEXT, "ops.txt"), 0.105 + 0.048)
    with pytest.raises(UsageError, match="no rows"):
        parse_op_profile_csv("node type,first,avg_ms\n", "ops.csv")


def test_ort_profile_median_model_run():
    assert math.isclose(parse_ort_profile(_ort_profile([900, 610, 600, 605]), "p.json"), 0.6075)
    assert math.isclose(parse_ort_profile({"traceEvents": _ort_profile([500])}, "p.json"), 0.5)
    with pytest.raises(UsageError, match="no 'model_run' events"):
        parse_ort_profile(_ort_profile([])[:2], "p.json")


@pytest.fixture(scope="module")
def phone_dir(tmp_path_factory, tiny_tflite, tiny_tflite_int8, tiny_onnx):
    d = tmp_path_factory.mktemp("phone")
    for src, name in ((tiny_tflite, "fp32.tflite"), (tiny_tflite_int8, "int8.tflite"), (tiny_onnx, "fp32.onnx")):
        shutil.copy(src, d / name)
    (d / "run.log").write_text(BENCHMARK_MODEL_LOG)
    (d / "ops.csv").write_text(OP_PROFILE_CSV)
    (d / "ort.json").write_text(json.dumps(_ort_profile([900, 610, 600, 605])))
    return d


def test_read_each_format(phone_dir):
    [log] = read(str(phone_dir / "run.log"))
    assert log.label == "fp32.tflite" and log.threads == 4 and log.precision == "fp32"
    [ops] = read(f"int8.tflite={phone_dir / 'ops.csv'}", default_threads=2)
    assert ops.precision == "int8" and ops.threads == 2 and math.isclose(ops.latency_ms, 0.4)
    [ort] = read(f"{phone_dir / 'fp32.onnx'}={phone_dir / 'ort.json'}")
    assert ort.label == "fp32.onnx" and math.isclose(ort.latency_ms, 0.6075)
    with pytest.raises(UsageError, match="does not name its model"):
        read(str(phone_dir / "ort.json"))


def test_read_bench_json(phone_dir):
    out = phone_dir / "bench.json"
    r = CliRunner().invoke(cli, ["bench", str(phone_dir / "fp32.tflite"), str(phone_dir / "int8.tflite"),
                                 "--runs", "3", "--warmup", "1", "--json", str(out)])
    assert r.exit_code == 0, r.output + r.stderr
    rows = read(str(out))
    measured = {x["model"]: x["latency_ms"]["p50"] for x in json.loads(out.read_text())["results"]}
    assert sorted(x.precision for x in rows) == ["fp32", "int8"]
    assert all(math.isclose(x.latency_ms, measured[str(phone_dir / x.label)]) for x in rows)


def test_calibrate_from_tool_outputs_writes_loo(phone_dir, tmp_path):
    out = tmp_path / "phone.toml"
    r = CliRunner().invoke(cli, ["target", "calibrate", "--target", "pixel4", "--measurements",
                                 str(phone_dir / "run.log"), "--measurements", f"int8.tflite={phone_dir / 'ops.csv'}",
                                 "--measurements", f"fp32.onnx={phone_dir / 'ort.json'}", "--out", str(out)])
    assert r.exit_code == 0, r.output + r.stderr
    cm = tomllib.loads(out.read_text())["cost_model"]
    assert len(cm["fitted_on"]) == 3 and "run.log" in cm["fitted_from"] and "ort.json" in cm["fitted_from"]
    assert cm["loo_worst_abs_error_pct"] >= cm["loo_median_abs_error_pct"] >= 0
    assert all("loo_error_pct" in row for row in cm["fitted_on"])


@pytest.mark.parametrize("name, content, message", [
    ("empty.log", "", "is empty"),
    ("blank.json", "  \n", "is empty"),
    ("noise.txt", "hello\nworld\n", "not a measurements file"),
    ("cut.log", "STARTING!\nNum threads: [1]\nGraph: [fp32.tflite]\n", "Inference timings in us"),
    ("nograph.log", "Inference timings in us: Init: 1, First inference: 2, Warmup (avg): 3, Inference (avg): 4\n",
     "no 'Graph: [...]' line"),
    ("bad.json", "{not json", "not valid JSON"),
    ("trace.json", json.dumps([{"name": "session_initialization", "dur": 5}]), "no 'model_run' events"),
    ("zero.log", "Graph: [fp32.tflite]\nInference timings in us: Init: 1, First inference: 2, "
                 "Warmup (avg): 3, Inference (avg): 0\n", "must be positive"),
    ("bench.json", json.dumps({"schema_version": 1, "results": [{"model": "fp32.tflite", "status": "error"}]}),
     "no successful results"),
    ("ops.csv", "node type,first,avg_ms\nCONV_2D,0.1,abc\n", "not a number"),
])
def test_calibrate_rejects_malformed_inputs(phone_dir, tmp_path, name, content, message):
    bad = tmp_path / name
    bad.write_text(content)
    spec = f"fp32.tflite={bad}" if name in ("trace.json", "ops.csv") else str(bad)
    if name in ("cut.log", "nograph.log", "zero.log", "bench.json"):
        shutil.copy(phone_dir / "fp32.tflite", tmp_path / "fp32.tflite")
    out = tmp_path / "x.toml"
    r = CliRunner().invoke(cli, ["target", "calibrate", "--target", "pixel4", "--measurements", spec,
                                 "--out", str(out)])
    assert r.exit_code == 2, r.output + r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()

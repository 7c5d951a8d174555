"""Budget files: the schema is strict (unknown keys are errors that name key and file)."""

from __future__ import annotations

import pytest

from mobiledeploy.check.budgets import LatencySpec, Selector, load_budgets
from mobiledeploy.errors import UsageError

FULL = """
schema_version = 1
artifacts = "build/x"
target = "pixel4"

[data]
source = "digits"
split = "test"
limit = 100

[latency]
rounds = 4
max_time_s = 30
min_runs = 10

[yardstick]
reference_ms = 0.5
machine = "ci"

[[artifact]]
name = "int8"
arch = "mobilenet_v1"
alpha = 0.25
resolution = 32
format = "tflite"
precision = "int8"
max_size_kb = 300
min_top1 = 0.8
max_int8_top1_drop = 0.02
max_latency_ratio = 1.1
baseline = { precision = "fp32" }
max_latency_ms = { pixel4 = 2.0, host = 1.5 }

[[artifact]]
path = "a.onnx"
max_size_kb = 10
max_latency_ms = 3
"""


def write(tmp_path, text, name="budgets.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_full_file_parses(tmp_path):
    bf = load_budgets(write(tmp_path, FULL))
    assert bf.artifacts_dir == tmp_path / "build/x"
    assert bf.target == "pixel4"
    assert (bf.data.source, bf.data.split, bf.data.limit) == ("digits", "test", 100)
    assert bf.latency.rounds == 4 and bf.latency.max_time_s == 30 and bf.latency.min_runs == 10
    assert bf.latency.confidence == LatencySpec().confidence  # defaults fill the rest
    assert bf.yardstick_ms == {"pixel4": 0.5}  # a bare float belongs to the file's target
    a, b = bf.budgets
    assert a.name == "int8"
    assert a.ref.selector == Selector("mobilenet_v1", 0.25, 32, "tflite", "int8")
    assert a.baseline.selector == Selector(precision="fp32")
    assert a.limits["max_latency_ms"] == {"pixel4": 2.0, "host": 1.5}
    assert b.name == "a.onnx" and b.ref.path == "a.onnx" and b.limits["max_latency_ms"] == {"pixel4": 3}


@pytest.mark.parametrize("text, where, key", [
    ("typo = 1\n[[artifact]]\npath='a'\nmax_size_kb=1\n", "top level", "typo"),
    ("[data]\nsorce='digits'\n[[artifact]]\npath='a'\nmax_size_kb=1\n", "[data]", "sorce"),
    ("[latency]\nround=3\n[[artifact]]\npath='a'\nmax_size_kb=1\n", "[latency]", "round"),
    ("[yardstick]\nref=1\n[[artifact]]\npath='a'\nmax_size_kb=1\n", "[yardstick]", "ref"),
    ("[[artifact]]\npath='a'\nmax_size_kbs=1\n", "[[artifact]] #1", "max_size_kbs"),
    ("[[artifact]]\npath='a'\nmax_size_kb=1\nbaseline={precison='fp32'}\n", "baseline", "precison"),
])
def test_unknown_keys_are_errors_naming_key_and_file(tmp_path, text, where, key):
    p = write(tmp_path, text)
    with pytest.raises(UsageError) as e:
        load_budgets(p)
    msg = str(e.value)
    assert str(p) in msg and where in msg and repr(key) in msg


@pytest.mark.parametrize("text, fragment", [
    ("[[artifact]]\npath='a'\n", "no limits"),
    ("[[artifact]]\nmax_size_kb=1\n", "name the artifact"),
    ("[[artifact]]\npath='a'\nformat='tflite'\nmax_size_kb=1\n", "not both"),
    ("[[artifact]]\npath='a'\nmax_size_kb=-1\n", "max_size_kb = -1"),
    ("[[artifact]]\npath='a'\nmax_size_kb='big'\n", "expected a number"),
    ("[[artifact]]\npath='a'\nmin_top1=1.5\n", "min_top1 = 1.5"),
    ("[[artifact]]\npath='a'\nmax_latency_ms={}\n", "empty table"),
    ("[[artifact]]\npath='a'\nformat='pt'\nmax_size_kb=1\n", "choose from tflite, onnx"),
    ("[[artifact]]\npath='a'\nmax_size_kb=1\n[[artifact]]\npath='a'\nmax_size_kb=2\n", "duplicate name"),
    ("schema_version = 2\n[[artifact]]\npath='a'\nmax_size_kb=1\n", "schema_version = 2"),
    ("[latency]\nrounds=1\n[[artifact]]\npath='a'\nmax_size_kb=1\n", "rounds = 1"),
    ("[artifact]\npath='a'\n", "[[artifact]]"),
    ("target = 'host'\n", "no [[artifact]]"),
    ("[[artifact]\n", "not valid TOML"),
])
def test_bad_values_are_usage_errors(tmp_path, text, fragment):
    with pytest.raises(UsageError, match=None) as e:
        load_budgets(write(tmp_path, text))
    assert fragment in str(e.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        load_budgets(tmp_path / "nope.toml")
    with pytest.raises(UsageError, match="directory"):
        load_budgets(tmp_path)


def test_project_budget_file_is_valid():
    from pathlib import Path

    bf = load_budgets(Path(__file__).resolve().parents[1] / "models" / "budgets.toml")
    assert bf.budgets and all(b.name for b in bf.budgets)

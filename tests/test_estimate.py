"""The per-layer cost model, its fitting, `estimate` and `target calibrate`."""

from __future__ import annotations

import json
import math
import tomllib
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner

from mobiledeploy.cli import cli
from mobiledeploy.errors import UsageError
from mobiledeploy.cost.estimate import CostModel, cost_model_for, estimate_layers
from mobiledeploy.cost.fit import Measurement, default_params, fit, predict_ms
from mobiledeploy.cost.graph import LayerStats
from mobiledeploy.targets import list_targets, load_target


def _model(**kw) -> CostModel:
    base = dict(target="t", peak_gmacs={"fp32": 10.0, "int8": 40.0},
                efficiency={"fp32": {"conv1x1": 0.5, "convkxk": 0.25, "depthwise": 0.1, "fc": 0.2},
                            "int8": {"conv1x1": 0.5, "convkxk": 0.25, "depthwise": 0.1, "fc": 0.2}},
                bandwidth_gbs=1.0, overhead_us=10.0, thread_efficiency=0.5, threads=1)
    base.update(kw)
    return CostModel(**base)


def _layer(cls: str, macs: int, elems: int, name: str = "l") -> LayerStats:
    return LayerStats(name=name, type="X", op_class=cls, output_shape=(1,), params=0, macs=macs,
                      in_elems=elems, weight_elems=0, out_elems=elems)


def test_layer_time_is_compute_plus_memory_plus_overhead():
    # The per-layer combination is now the sum (measured choice, see mobiledeploy.cost.model);
    # the old max() is still available as combine="max" and checked below.
    m = _model()
    layers = [_layer("conv1x1", 10**9, 1000, "big"),  # 1e9 / (10e9 * 0.5) = 200 ms; 8000 B = 8 us
              _layer("elementwise", 0, 125_000_000, "copy"),  # 2 * 125e6 * 4 B / 1 GB/s = 1000 ms
              _layer("reshape", 0, 1, "tiny")]  # overhead only
    e = estimate_layers(layers, m, precision="fp32")
    big, copy, tiny = e.layers
    assert big.bound == "compute" and math.isclose(big.estimate_us, 200_000 + 8 + 10, rel_tol=1e-9)
    assert copy.bound == "memory" and math.isclose(copy.estimate_us, 1_000_000 + 10, rel_tol=1e-9)
    assert tiny.bound == "overhead" and math.isclose(tiny.estimate_us, 10 + 8e-3, rel_tol=1e-6)
    assert math.isclose(e.latency_ms, (200_018 + 1_000_010 + 10.008) / 1e3, rel_tol=1e-6)
    assert "not a measurement" in e.label and "device estimate for t" in e.label and e.macs == 10**9
    assert "priors only" in e.label and not e.fitted
    # int8: 4x the peak and 1-byte tensors; 3 threads: 1 + 2 * 0.5 = 2x on compute and memory
    i8 = estimate_layers(layers, m, precision="int8", threads=3)
    assert math.isclose(i8.layers[0].estimate_us, (1e9 / (40e9 * 0.5) + 2000 / 1e9) / 2 * 1e6 + 10, rel_tol=1e-9)
    assert math.isclose(i8.layers[1].memory_us, 2 * 125e6 / 1e9 / 2 * 1e6, rel_tol=1e-9)
    # max(compute, memory) + overhead when the target asks for it
    mx = estimate_layers(layers, _model(combine="max"), precision="fp32")
    assert math.isclose(mx.layers[0].estimate_us, 200_000 + 10, rel_tol=1e-9)


def test_bytes_beyond_the_cache_cost_cache_ratio_times_more():
    layer = [_layer("elementwise", 0, 1000, "copy")]  # 8000 B
    flat = estimate_layers(layer, _model()).layers[0].memory_us
    assert math.isclose(flat, 8.0, rel_tol=1e-9)
    spilled = estimate_layers(layer, _model(cache_kb=1.0, cache_ratio=3.0)).layers[0].memory_us
    assert math.isclose(spilled, (8000 + 2 * (8000 - 1024)) / 1e3, rel_tol=1e-9)
    fits = estimate_layers(layer, _model(cache_kb=8.0, cache_ratio=3.0)).layers[0].memory_us
    assert math.isclose(fits, flat, rel_tol=1e-9)


def test_other_ops_are_kept_and_warned_about():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        e = estimate_layers([_layer("conv1x1", 1000, 10), _layer("other", 0, 10, "weird")], _model())
    assert [x.op_class for x in e.layers] == ["conv1x1", "other"]
    assert e.layers[1].estimate_us > 0 and "other" in e.by_class_ms
    assert any("not classified" in str(w.message) for w in caught)


# Synthetic "networks" of different shapes: what varies is the share of each class.
def _net(scale: int, dw_share: float, n_small: int) -> tuple:
    return tuple([_layer("conv1x1", int(scale * 1e6), scale * 2000, "pw"),
                  _layer("depthwise", int(scale * dw_share * 1e6), scale * 20000, "dw"),
                  _layer("convkxk", int(scale * 1e5), scale * 500, "k3")]
                 + [_layer("elementwise", 0, 100, f"e{i}") for i in range(n_small)])


NETS = [_net(s, d, k) for s, d, k in [(1, 0.1, 5), (4, 0.05, 20), (16, 0.2, 8), (64, 0.03, 40),
                                      (2, 0.3, 60), (32, 0.1, 2)]]


def test_fit_recovers_a_known_model():
    truth = _model(overhead_us=25.0, bandwidth_gbs=3.0,
                   efficiency={p: {"conv1x1": 0.3, "convkxk": 0.15, "depthwise": 0.02, "fc": 0.12}
                               for p in ("fp32", "int8")})
    rows = [Measurement(label=f"net{i}", layers=n, precision="fp32", threads=1,
                        latency_ms=estimate_layers(n, truth).latency_ms) for i, n in enumerate(NETS)]
    result = fit(_model(), rows)
    assert result.params == ("compute", "memory", "overhead", "depthwise")
    assert result.worst_abs_error_pct < 1.0
    assert math.isclose(result.model.overhead_us, 25.0, rel_tol=0.05)
    # and it generalises to a network it was not fitted on
    other = _net(8, 0.15, 30)
    want = estimate_layers(other, truth).latency_ms
    got = predict_ms(result.model, Measurement("x", other, "fp32", 1, want))
    assert abs(got - want) / want < 0.02


def test_one_measurement_fits_only_a_global_scale():
    rows = [Measurement(label="only", layers=NETS[2], precision="fp32", threads=1, latency_ms=7.0)]
    result = fit(_model(), rows)
    assert result.params == ("scale",) and abs(result.errors_pct[0]) < 1e-6
    before = estimate_layers(NETS[0], _model()).latency_ms
    after = estimate_layers(NETS[0], result.model).latency_ms
    assert math.isclose(after / before, result.model.scale, rel_tol=1e-9)


def test_fit_errors():
    rows = [Measurement(label=f"n{i}", layers=n, precision="fp32", threads=1, latency_ms=1.0)
            for i, n in enumerate(NETS[:2])]
    with pytest.raises(UsageError, match="too few rows: 2 measurement"):
        fit(_model(), rows, params=("compute", "overhead", "depthwise"))
    with pytest.raises(UsageError, match="positive"):
        fit(_model(), [Measurement("bad", NETS[0], "fp32", 1, 0.0)])
    with pytest.raises(UsageError, match="unknown fit parameter"):
        fit(_model(), rows, params=("gravity",))
    mixed = rows + [Measurement("q", NETS[3], "int8", 4, 1.0), Measurement("r", NETS[4], "fp32", 1, 2.0),
                    Measurement("s", NETS[5], "int8", 1, 2.0), Measurement("t", NETS[1], "fp32", 4, 2.0)]
    assert default_params(mixed) == ("compute", "int8", "threads", "memory", "overhead", "depthwise")
    assert default_params(mixed[:2]) == ("compute", "memory")


def test_target_without_figures_or_peak_is_a_usage_error(tmp_path):
    p = tmp_path / "bare.toml"
    p.write_text('name = "bare"\n[device]\nsoc = "x"\n')
    with pytest.raises(UsageError, match="peak_gmacs_fp32"):
        cost_model_for(load_target(file=p))


def test_shipped_targets_carry_a_stated_fit():
    fitted = [t for t in list_targets() if t.cost_model]
    assert {t.name for t in fitted} >= {"host", "pixel4", "pixel4-big"}
    for t in fitted:
        cm = t.cost_model
        assert cm["fitted_on"] and cm["fit_params"], t.name
        assert cm["fit_median_abs_error_pct"] >= 0 and cm["fit_worst_abs_error_pct"] >= cm["fit_median_abs_error_pct"]
        m = cost_model_for(t)
        assert m.fitted and m.peak_gmacs["fp32"] > 0


# ---------------------------------------------------------------- CLI, on real model files


def _csv(tmp_path, rows: str):
    p = tmp_path / "m.csv"
    p.write_text(rows)
    return p


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_tflite, tiny_tflite_int8, tiny_onnx):
    import shutil

    d = tmp_path_factory.mktemp("est")
    for src, name in ((tiny_tflite, "fp32.tflite"), (tiny_tflite_int8, "int8.tflite"), (tiny_onnx, "fp32.onnx")):
        shutil.copy(src, d / name)
    return d


def test_estimate_cli_json(model_dir):
    r = CliRunner().invoke(cli, ["estimate", str(model_dir / "fp32.tflite"), "--target", "pixel4-big",
                                 "--json", "-"])
    assert r.exit_code == 0, r.output + r.stderr
    data = json.loads(r.stdout)
    assert data["target"] == "pixel4-big" and data["precision"] == "fp32" and data["threads"] == 1
    assert data["latency_ms"] > 0 and "not a measurement" in data["label"]
    assert abs(sum(x["estimate_us"] for x in data["layers"]) / 1e3 - data["latency_ms"]) < 1e-6
    assert {x["bound"] for x in data["layers"]} <= {"compute", "memory", "overhead"}
    r8 = CliRunner().invoke(cli, ["estimate", str(model_dir / "int8.tflite"), "--target", "pixel4-big",
                                  "--json", "-"])
    assert json.loads(r8.stdout)["precision"] == "int8"
    r = CliRunner().invoke(cli, ["estimate", str(model_dir / "fp32.onnx"), "--target", "pixel4",
                                 "--no-layers"])
    assert r.exit_code == 0 and "estimated latency on pixel4" in r.stdout and "4 thread" in r.stdout


def test_calibrate_writes_a_loadable_target_and_estimate_uses_it(model_dir, tmp_path):
    csv = _csv(model_dir, "model,threads,latency_ms\nfp32.tflite,1,0.9\nint8.tflite,1,0.45\nfp32.onnx,1,1.2\n")
    out = tmp_path / "my-phone.toml"
    r = CliRunner().invoke(cli, ["target", "calibrate", "--target", "pixel4-big", "--measurements", str(csv),
                                 "--out", str(out)])
    assert r.exit_code == 0, r.output + r.stderr
    t = load_target(file=out)
    assert t.name == "my-phone" and t.device["core"] == "Cortex-A76" and t.threads == 1
    cm = tomllib.loads(out.read_text())["cost_model"]
    assert len(cm["fitted_on"]) == 3 and cm["fit_params"] == ["compute", "int8", "memory"]
    assert cm["loo_median_abs_error_pct"] >= 0 and all("loo_error_pct" in x for x in cm["fitted_on"])
    assert "m.csv" in cm["fitted_from"] and cm["fit_worst_abs_error_pct"] < 50
    r = CliRunner().invoke(cli, ["estimate", str(model_dir / "fp32.tflite"), "--target-file", str(out),
                                 "--json", "-"])
    data = json.loads(r.stdout)
    assert data["fitted"] and abs(data["latency_ms"] - cm["fitted_on"][0]["estimate_ms"]) < 1e-3


@pytest.mark.parametrize("rows, message", [
    ("model,latency_ms\nfp32.tflite,-3\n", "must be positive"),
    ("model,latency_ms\nfp32.tflite,0\n", "must be positive"),
    ("model,latency_ms\nnope.tflite,3\n", "'nope.tflite' (line 2 model) but the file is missing"),
    ("arch,alpha,res,latency_ms\nresnet50,1.0,224,3\n", "unknown model arch 'resnet50'"),
    ("model,latency_ms\nfp32.tflite,abc\n", "not a number"),
    ("name,ms\nx,1\n", "needs a header"),
    ("model,precision,latency_ms\nfp32.tflite,int8,1\n", "given, but the file is a fp32 model"),
])
def test_calibrate_rejects_bad_measurements(model_dir, tmp_path, rows, message):
    csv = model_dir / f"bad{abs(hash(rows))}.csv"
    csv.write_text(rows)
    out = tmp_path / "x.toml"
    r = CliRunner().invoke(cli, ["target", "calibrate", "--target", "pixel4-big", "--measurements", str(csv),
                                 "--out", str(out)])
    assert r.exit_code == 2, r.output + r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()


def test_calibrate_too_few_rows_for_params(model_dir, tmp_path):
    csv = _csv(model_dir, "model,latency_ms\nfp32.tflite,1.0\n")
    r = CliRunner().invoke(cli, ["target", "calibrate", "--target", "pixel4-big", "--measurements", str(csv),
                                 "--out", str(tmp_path / "x.toml"), "--params", "compute,overhead"])
    assert r.exit_code == 2 and "too few rows: 1 measurement(s) cannot fit 2 parameters" in r.stderr
    assert not (tmp_path / "x.toml").exists()


def test_bench_shows_the_device_estimate_in_its_own_column(model_dir):
    path = str(model_dir / "fp32.tflite")
    r = CliRunner().invoke(cli, ["bench", path, "--target", "pixel4-big", "--runs", "2", "--warmup", "0",
                                 "--json", "-"])
    assert r.exit_code == 0, r.output + r.stderr
    est = json.loads(r.stdout)["device_estimates"][path]
    assert est["estimate_ms"] > 0 and "not a measurement" in est["label"]
    r = CliRunner().invoke(cli, ["bench", path, "--target", "pixel4-big", "--runs", "2", "--warmup", "0", "--wide"])
    assert "pixel4-big est. ms (device estimate)" in r.stdout and "not pixel4-big latency" in r.stdout


def test_config_and_converted_file_give_the_same_estimate(model_dir):
    # The Keras graph of a config (BN/ReLU fused, explicit padding folded as the converter
    # does) and the .tflite converted from the same architecture cost about the same.
    for precision, name in (("fp32", "fp32.tflite"), ("int8", "int8.tflite")):
        cfg = CliRunner().invoke(cli, ["estimate", "--alpha", "0.25", "--res", "32", "--classes", "10",
                                       "--precision", precision, "--target", "pixel4-big", "--json", "-"])
        assert cfg.exit_code == 0, cfg.output + cfg.stderr
        f = CliRunner().invoke(cli, ["estimate", str(model_dir / name), "--target", "pixel4-big", "--json", "-"])
        a, b = json.loads(cfg.stdout), json.loads(f.stdout)
        assert a["macs"] == b["macs"] and a["precision"] == b["precision"] == precision
        assert abs(a["latency_ms"] - b["latency_ms"]) / b["latency_ms"] < 0.15
    # a file's precision is its own
    r = CliRunner().invoke(cli, ["estimate", str(model_dir / "fp32.tflite"), "--precision", "int8",
                                 "--target", "pixel4-big"])
    assert r.exit_code == 2 and "is a fp32 model" in r.stderr


def test_expected_error_label_says_what_it_rests_on():
    from mobiledeploy.cost.model import expected_error_text

    rows = [{"model": "a"}, {"model": "b"}, {"model": "c"}]
    assert expected_error_text({"loo_median_abs_error_pct": 6.1, "fitted_on": rows}) == \
        "expected error ~6% (leave-one-out median)"
    assert "held-out" in expected_error_text({"heldout_median_abs_error_pct": 4.0})
    assert "in-sample median only" in expected_error_text(
        {"fit_median_abs_error_pct": 3.0, "fitted_on": rows, "fit_params": ["compute", "memory"]})
    one = {"fit_median_abs_error_pct": 0.0, "fitted_on": rows[:1], "fit_params": ["scale"]}
    assert "unknown" in expected_error_text(one) and "~0%" not in expected_error_text(one)
    assert "one measurement fits a scale only" in expected_error_text(one)
    exact = {"fit_median_abs_error_pct": 0.0, "fitted_on": rows[:2], "fit_params": ["compute", "memory"]}
    assert "fitted exactly" in expected_error_text(exact)
    assert "priors alone" in expected_error_text({})


def test_label_evidence_matches_the_published_table_study():
    """The figures the labels quote are those benchmarks/estimate_generalize.py last measured."""
    from mobiledeploy.cost import model

    ev = json.loads((Path(__file__).resolve().parents[1] / "benchmarks" / "results"
                     / "estimate_generalize.json").read_text())["label_evidence"]
    assert ev["tables"] == model.PUBLISHED_TABLES
    lo, hi = ev["one_point_median_abs_error_pct_range"]
    assert model.ONE_POINT_MEDIAN_PCT == (round(lo), round(hi))
    lo, hi = ev["priors_only_estimate_over_measured_range"]
    assert model.PRIORS_ONLY_RATIO == (round(lo, 2), round(hi, 1))

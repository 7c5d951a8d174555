"""export --equalize and --tflite-calibration on tiny models: manifest round trip, the float change stated,
narrower TFLite activation ranges that still validate, eval --per-layer re-running the same recipe."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from mobiledeploy.errors import UsageError
from mobiledeploy.export.recipes import QuantRecipe, TfliteQuant
from tests.test_equalize import _dw_pw_model


def test_each_option_round_trips_in_the_manifest():
    for recipe in (QuantRecipe(equalize="cle"), QuantRecipe(equalize="cle-relu", bias_correction=True),
                   QuantRecipe(tflite=TfliteQuant(calibration="percentile")),
                   QuantRecipe(equalize="cle", rounding="adaround", tflite=TfliteQuant(calibration="mse"))):
        record = json.loads(json.dumps(recipe.to_json(calibration_samples=10)))
        assert QuantRecipe.from_manifest(record) == recipe
    record = QuantRecipe(equalize="cle-relu", tflite=TfliteQuant(calibration="mse")).to_json(10)
    assert record["equalize"]["method"] == "cle-relu" and record["tflite"]["calibrate_method"] == "mse"
    plain = QuantRecipe().to_json(10)  # the defaults write what manifests before the options held
    assert "equalize" not in plain and "calibrate_method" not in plain["tflite"]
    assert QuantRecipe.from_manifest(plain) == QuantRecipe()


def test_bad_values_are_one_line_usage_errors():
    from mobiledeploy.cli import cli
    from mobiledeploy.export.pipeline import ExportConfig

    for flag, value in (("--equalize", "relu"), ("--tflite-calibration", "entropy")):
        r = CliRunner().invoke(cli, ["export", flag, value])
        assert r.exit_code == 2
        lines = [line for line in r.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and flag in lines[0], r.output
    for kw in ({"equalize": "relu"}, {"tflite_calibration": "entropy"}):
        with pytest.raises(UsageError):
            ExportConfig(**kw).check()


def _reference(model, x):
    from mobiledeploy.export.validate import Reference

    return Reference(outputs=model.predict(x, verbose=0))


def test_cle_keeps_a_relu_model_and_cle_relu_states_what_it_changed():
    from mobiledeploy.export.float_change import equalization_record
    from mobiledeploy.export.recipes import Calibration

    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, (8, 16, 16, 8)).astype(np.float32)
    cal = Calibration(x)
    relu = _dw_pw_model(rng, "relu")
    eq = cal.equalized(relu, "cle")
    assert eq is not relu and cal.equalized(relu, "cle") is eq  # computed once per model
    record, warning = equalization_record(relu, eq, "cle", x, _reference(relu, x), atol=1e-4, rtol=1e-4)
    assert warning is None and record["chains_equalized"] == 2 and record["relu6_replaced"] == 0
    assert record["float_change"]["changed"] is False and record["float_change"]["top1_agreement"] == 1.0

    capped = _dw_pw_model(rng, "relu6")  # depthwise channels up to ~30: pre-activations pass 6
    assert cal.equalized(capped, "cle") is capped  # cle keeps the caps: nothing to scale
    record, warning = equalization_record(capped, capped, "cle", x, _reference(capped, x), atol=1e-4, rtol=1e-4)
    assert record["chains_equalized"] == 0 and record["chains_left_alone"] == 2 and "cle-relu" in warning
    uncapped = cal.equalized(capped, "cle-relu")
    record, warning = equalization_record(capped, uncapped, "cle-relu", x, _reference(capped, x), atol=1e-4,
                                          rtol=1e-4)
    change = record["float_change"]
    assert record["relu6_replaced"] == 2 and change["changed"] is True
    assert change["max_abs_diff"] > change["fp32_tolerance"]
    assert "changed the float model" in warning and "\n" not in warning


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A ReLU depthwise/pointwise model converted to int8 TFLite with each activation-range method."""
    from mobiledeploy.export.formats import tflite
    from mobiledeploy.export.recipes import Calibration

    rng = np.random.default_rng(7)
    model = _dw_pw_model(rng, "relu")
    calib = rng.uniform(-1, 1, (24, 16, 16, 8)).astype(np.float32)
    out = tmp_path_factory.mktemp("ranges")
    paths = {m: tflite.convert(model, "int8", QuantRecipe(tflite=TfliteQuant(calibration=m)), Calibration(calib),
                               out, m) for m in ("minmax", "percentile", "mse")}
    return model, calib, paths


def _activation_scales(path):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    return {d["name"]: float(d["quantization"][0]) for d in it.get_tensor_details()
            if d["dtype"] == np.int8 and d["quantization"][0] and len(d["quantization_parameters"]["scales"]) == 1}


def test_minmax_is_the_converters_own_file(converted):
    from mobiledeploy.export.formats.tflite import converter_for
    from mobiledeploy.export.recipes import Calibration
    from mobiledeploy.export.signature import add_signature

    model, calib, paths = converted
    again = add_signature(converter_for(model, "int8", QuantRecipe(), Calibration(calib)).convert())
    assert paths["minmax"].read_bytes() == again


def test_percentile_and_mse_narrow_activation_ranges_and_still_validate(converted):
    from ai_edge_litert.interpreter import Interpreter

    from mobiledeploy.export.validate import validate_artifact

    model, calib, paths = converted
    base = _activation_scales(paths["minmax"])
    x = np.random.default_rng(8).uniform(-1, 1, (8, 16, 16, 8)).astype(np.float32)
    for method in ("percentile", "mse"):
        scales = _activation_scales(paths[method])
        assert set(scales) == set(base)
        assert all(scales[k] <= base[k] * (1 + 1e-6) for k in base), method
        assert sum(scales[k] < base[k] * 0.999 for k in base) >= 2, method  # inner tensors narrowed
        it = Interpreter(model_path=str(paths[method]))
        io = [it.get_input_details()[0]["name"], it.get_output_details()[0]["name"]]
        assert all(scales.get(n, 0) == base.get(n, 0) for n in io)  # input and output keep min/max
        for op in it._get_ops_details():  # noqa: SLF001 - the quantized graph's own consistency
            if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D") and len(op["inputs"]) > 2:
                d = [it.get_tensor_details()[i]["quantization_parameters"]["scales"] for i in op["inputs"][:3]]
                np.testing.assert_allclose(d[2], d[0] * d[1], rtol=1e-5)  # bias scale = input x weight scale
        v = validate_artifact(paths[method], fmt="tflite", precision="int8", x=x, reference=_reference(model, x),
                              atol=1e-4, rtol=1e-4, strict=True, int8_io=False, inputs="uniform noise")
        assert v.status == "reported" and v.samples == len(x)


@pytest.mark.slow
def test_export_records_both_options_and_per_layer_reruns_them(tmp_path):
    from mobiledeploy.cli import cli

    out = tmp_path / "e"
    r = CliRunner().invoke(cli, ["export", "--alpha", "0.25", "--res", "32", "--classes", "10", "--quant", "int8",
                                 "--formats", "tflite,onnx", "--equalize", "cle-relu", "--tflite-calibration",
                                 "percentile", "--bias-correction", "--calib-samples", "20", "--validate-samples", "8",
                                 "--out", str(out)])
    assert r.exit_code == 0, r.output
    manifest = json.loads((out / "manifest.json").read_text())
    q = manifest["quantization"]
    assert q["equalize"]["method"] == "cle-relu" and q["equalize"]["chains_equalized"] == 13
    assert q["equalize"]["relu6_replaced"] == 13 and q["equalize"]["float_change"]["samples"] == 8
    assert q["tflite"]["calibrate_method"] == "percentile" and q["bias_correction"]["enabled"]
    assert QuantRecipe.from_manifest(q).equalize == "cle-relu"
    assert {a["format"] for a in manifest["artifacts"]} == {"tflite", "onnx"}
    report = tmp_path / "pl.json"
    r = CliRunner().invoke(cli, ["eval", str(out), "--limit", "8", "--per-layer", "--json", str(report)])
    assert r.exit_code == 0, r.output
    rows = json.loads(report.read_text())["results"]
    notes = [row["per_layer"]["note"] for row in rows
             if row.get("per_layer") and row["per_layer"]["model"].endswith(".tflite")]
    assert notes and all("equalized (cle-relu)" in n and "percentile activation ranges" in n for n in notes)


def test_the_budget_search_keeps_equalized_pairs_equalized_in_float():
    from mobiledeploy.export.budget import _shared_correction
    from mobiledeploy.export.recipes import Calibration

    rng = np.random.default_rng(9)
    model = _dw_pw_model(rng, "relu")
    cal = Calibration(rng.uniform(-1, 1, (8, 16, 16, 8)).astype(np.float32))
    recipe = QuantRecipe(equalize="cle", bias_correction=True, float_layers=("dw0", "pw0"))
    source = _shared_correction(cal).quant_source(model, recipe)
    eq = cal.equalized(model, "cle")
    for name in ("dw0", "dw0_bn", "pw0", "pw0_bn"):  # the float layers and their batch-norms: as equalized
        for a, b in zip(source.get_layer(name).get_weights(), eq.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    assert not np.allclose(np.asarray(eq.get_layer("pw0").kernel), np.asarray(model.get_layer("pw0").kernel))

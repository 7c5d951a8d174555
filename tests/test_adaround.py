"""Learned int8 rounding with quantized-path bias correction (mobiledeploy/export/adaround.py) on tiny models."""

from __future__ import annotations

import numpy as np
import pytest

from mobiledeploy.errors import UsageError
from mobiledeploy.export import adaround as A
from mobiledeploy.export import equalize as E
from tests.test_equalize import _smooth_images, _tiny_mobilenet
from tests.test_equalize import _weight_quantized as _nearest  # every kernel rounded to nearest on the grid


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(0)
    model = _tiny_mobilenet(rng)
    return model, _smooth_images(rng, 24, 32), _smooth_images(rng, 16, 32)


@pytest.fixture(scope="module")
def rounded(tiny):
    """The tiny model with learned rounding, and with round-to-nearest plus the quantized-path bias correction."""
    model, calib, _ = tiny
    before = [w.copy() for w in model.get_weights()]
    out = {"adaround": A.adaround(model, calib, iterations=80), "nearest": A.adaround(model, calib, iterations=0)}
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)  # the input model is untouched
    return out


def _mse(a, b):
    return float(np.mean((np.asarray(a) - np.asarray(b)) ** 2))


def test_adaround_kernels_sit_on_the_converters_grid(tiny, rounded):
    model = tiny[0]
    out = rounded["adaround"]
    changed = 0
    for layer, bn in E.conv_targets(out):
        k = np.asarray(layer.kernel)
        delta = E.kernel_delta(layer, bn, per_channel=True, qmax=127)
        assert np.abs(delta).max() <= 1e-4 * np.abs(k).max(), layer.name  # the converters re-round to the same integers
        ref = model.get_layer(layer.name)
        changed += int(np.sum(np.abs(k - (np.asarray(ref.kernel) + E.kernel_delta(ref, bn and model.get_layer(bn.name),
                                                                                     per_channel=True, qmax=127)))
                               > 1e-6 * np.abs(k).max()))
    assert changed > 0  # some weights were rounded the other way than nearest


def test_adaround_brings_the_quantized_path_closer_to_float(tiny, rounded):
    model, _, held_out = tiny
    ref = model.predict(held_out, verbose=0)
    path = A._path_model  # ReLU6 outputs on the 8-bit grid, as in the int8 artifact
    err_nearest = _mse(path(_nearest(model)).predict(held_out, verbose=0), ref)
    err_bias = _mse(path(rounded["nearest"]).predict(held_out, verbose=0), ref)
    err_ada = _mse(path(rounded["adaround"]).predict(held_out, verbose=0), ref)
    assert err_bias < 0.5 * err_nearest, (err_nearest, err_bias)
    assert err_ada < err_nearest, (err_nearest, err_ada)


def test_adaround_int8_tflite_is_closer_to_float(tiny, rounded):
    from ai_edge_litert.interpreter import Interpreter

    from mobiledeploy.export.formats.tflite import converter_for
    from mobiledeploy.export.recipes import Calibration, QuantRecipe

    model, calib, held_out = tiny
    ref = model.predict(held_out, verbose=0)

    def run(m):
        it = Interpreter(model_content=converter_for(m, "int8", QuantRecipe(), Calibration(calib)).convert())
        it.allocate_tensors()
        i, o = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
        out = []
        for x in held_out:
            it.set_tensor(i, x[None])
            it.invoke()
            out.append(it.get_tensor(o)[0].copy())
        return np.stack(out)

    assert _mse(run(rounded["adaround"]), ref) < _mse(run(model), ref)


def test_adaround_refuses_an_unknown_grid(tiny):
    model, calib, _ = tiny
    with pytest.raises(UsageError, match="weight grid"):
        A.adaround(model, calib, weights="int4")


def test_weight_rounding_round_trips_through_the_manifest():
    from mobiledeploy.export.recipes import QuantRecipe

    for recipe in (QuantRecipe(rounding="adaround", bias_correction=True), QuantRecipe(rounding="adaround")):
        record = recipe.to_json(calibration_samples=10)
        assert record["weight_rounding"]["method"] == "adaround" and record["weight_rounding"]["iterations"] > 0
        assert QuantRecipe.from_manifest(record) == recipe
    plain = QuantRecipe().to_json(10)
    assert "weight_rounding" not in plain  # round to nearest: the record of manifests before the option
    assert QuantRecipe.from_manifest(plain).rounding == "nearest"


def test_quant_source_rounds_once_per_model_and_grid(tiny, monkeypatch):
    from mobiledeploy.export import recipes
    from mobiledeploy.export.recipes import Calibration, QuantRecipe

    monkeypatch.setattr(recipes, "ADAROUND_ITERATIONS", 5)  # the wiring, not the optimiser (tested above)
    model, calib, _ = tiny
    cal = Calibration(calib[:8])
    recipe = QuantRecipe(rounding="adaround", bias_correction=True)
    src = cal.quant_source(model, recipe, "int8_reduce_range")
    assert src is not model and cal.quant_source(model, recipe, "int8_reduce_range") is src
    for layer, bn in E.conv_targets(src):  # on ONNX Runtime's reduce_range grid
        assert np.abs(E.kernel_delta(layer, bn, per_channel=True, qmax=64)).max() <= 1e-4 * np.abs(layer.kernel).max()


def test_export_refuses_adaround_with_per_tensor_weights():
    from mobiledeploy.export.pipeline import ExportConfig

    with pytest.raises(UsageError, match="per-channel"):
        ExportConfig(weight_rounding="adaround", per_channel=False).check()
    with pytest.raises(UsageError):
        ExportConfig(weight_rounding="up").check()


@pytest.mark.slow
def test_export_records_learned_rounding_and_per_layer_reruns_it(tmp_path):
    import json

    from click.testing import CliRunner

    from mobiledeploy.cli import cli

    out = tmp_path / "e"
    r = CliRunner().invoke(cli, ["export", "--alpha", "0.25", "--res", "64", "--classes", "10", "--quant", "int8",
                                 "--formats", "tflite", "--weight-rounding", "adaround", "--calib-samples", "50",
                                 "--out", str(out)])
    assert r.exit_code == 0, r.output
    record = json.loads((out / "manifest.json").read_text())["quantization"]["weight_rounding"]
    assert record["method"] == "adaround" and record["applies_to"] == "int8"
    report = tmp_path / "pl.json"
    r = CliRunner().invoke(cli, ["eval", str(out), "--limit", "16", "--per-layer", "--json", str(report)])
    assert r.exit_code == 0, r.output
    rows = json.loads(report.read_text())["results"]
    notes = [row["per_layer"]["note"] for row in rows if row.get("per_layer")]
    assert notes and all("learned rounding (adaround)" in n for n in notes)

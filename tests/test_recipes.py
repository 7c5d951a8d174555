"""The quantization recipe: common part + one part per backend, calibration beside it, manifest round trip."""

from __future__ import annotations

import copy

import numpy as np

from mobiledeploy.export.recipes import (Calibration, OnnxQuant, OnnxQuantTypes, QuantRecipe, TfliteQuant,
                                         choose_onnx_types)

# the quantization record of a manifest written before the recipe was split (an ImageNet export on an
# x86-64 host without VNNI): the exporter adds the two "reason" keys beside the recipe's own record
MANIFEST_QUANTIZATION = {
    "tflite": {"int8_io": False, "per_channel": True, "calibration_samples": 200},
    "bias_correction": {"enabled": True, "applies_to": "int8",
                        "method": "empirical, on the calibration samples (Nagel et al., 2019)",
                        "reason": "default for trained weights"},
    "float_layers": {"layers": ["conv1", "conv_dw_1", "conv_pw_1"], "applies_to": "int8",
                     "reason": "default for trained weights: the stem (first convolutions) in float"},
    "onnx": {"types": "u8s8", "activation": "uint8", "weight": "int8", "reduce_range": True, "format": "QDQ",
             "reason": "x86-64 host without VNNI: U8S8 with reduce_range (ONNX Runtime guidance)",
             "per_channel": True, "calibrate_method": "minmax"},
}


def _without_reasons(q: dict) -> dict:
    q = copy.deepcopy(q)
    for key in ("bias_correction", "float_layers"):
        q[key].pop("reason", None)
    return q


def test_a_manifest_written_before_the_split_reads_back_to_the_same_record():
    recipe = QuantRecipe.from_manifest(MANIFEST_QUANTIZATION)
    assert recipe == QuantRecipe(per_channel=True, bias_correction=True,
                                 float_layers=("conv1", "conv_dw_1", "conv_pw_1"), tflite=TfliteQuant(int8_io=False),
                                 onnx=OnnxQuant(OnnxQuantTypes("u8s8", True, MANIFEST_QUANTIZATION["onnx"]["reason"]),
                                                "minmax"))
    assert recipe.to_json(200) == _without_reasons(MANIFEST_QUANTIZATION)


def test_every_recipe_round_trips_through_its_record():
    for recipe in (QuantRecipe(),
                   QuantRecipe(per_channel=False, tflite=TfliteQuant(int8_io=True)),
                   QuantRecipe(bias_correction=True, float_layers=("a", "b"),
                               onnx=OnnxQuant(choose_onnx_types("s8s8"), "percentile"))):
        record = recipe.to_json(8)
        assert QuantRecipe.from_manifest(record) == recipe
        assert QuantRecipe.from_manifest(record).to_json(8) == record
    assert "onnx" not in QuantRecipe().to_json(8)  # no ONNX int8 artifact: nothing chosen, nothing recorded


def test_older_and_odd_manifests_read_with_the_defaults():
    assert QuantRecipe.from_manifest(None) == QuantRecipe.from_manifest({}) == QuantRecipe()
    odd = QuantRecipe.from_manifest({"onnx": {"types": "u8u8", "calibrate_method": "median"}})
    assert odd.onnx == OnnxQuant(None, "minmax")


def test_calibration_is_beside_the_recipe_not_in_it():
    x = np.zeros((3, 4, 4, 3), np.float32)
    cal = Calibration(x)
    assert cal.samples == 3 and [b[0].shape for b in cal.representative()] == [(1, 4, 4, 3)] * 3
    model = object()
    assert cal.quant_source(model, QuantRecipe()) is model  # no bias correction: the model itself, nothing computed
    assert not cal._sources
    assert "calib" not in {f for f in QuantRecipe.__dataclass_fields__}

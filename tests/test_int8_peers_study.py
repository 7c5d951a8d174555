"""The int8 peers study's own plumbing (nothing is quantized here): recipes given as `export`
options become the ExportConfig the export command would build, and the peers' driver
refuses what it does not know with a usage line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import int8_peers as P


def test_recipes_are_export_options_parsed_by_the_export_command(tmp_path):
    recipes = P._recipes(["bc_off=--float-layers none --no-bias-correction --per-tensor"])
    assert list(recipes) == ["default", "full_int8", "bc_off"]
    cfg = P._export_config("bc_off", recipes["bc_off"], tmp_path, ("int8",))
    assert cfg.float_layers == () and cfg.bias_correction is False and cfg.per_channel is False
    # the study's own fields win over whatever the options say
    assert (cfg.weights, cfg.precisions, cfg.formats, cfg.calib) == ("imagenet", ("int8",), ("tflite", "onnx"),
                                                                     str(tmp_path))
    default = P._export_config("default", recipes["default"], tmp_path, ("fp32", "int8"))
    assert default.float_layers is None and default.bias_correction is None and default.per_channel


@pytest.mark.parametrize("spec", ["no_equals", "bad name=--per-tensor"])
def test_a_malformed_recipe_is_one_line(spec):
    with pytest.raises(SystemExit, match="expected NAME='export options'"):
        P._recipes([spec])


def test_peer_driver_usage_line():
    out = subprocess.run([sys.executable, str(P.DRIVER), "no_such_recipe", "a", "b", "c"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.startswith("usage: peer_quantize.py {nncf_default|")
    assert set(P.PEER_RECIPES) == set(out.stderr.split("{")[1].split("}")[0].split("|"))
    assert all(P.PEER_RECIPES[r][0] in P.PEERS for r in P.PEER_RECIPES)
    assert Path(P.DRIVER).is_file()

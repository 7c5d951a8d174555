"""The accuracy budget on the real MobileNet V1 1.0/224 ImageNet model (needs `make assets`; slow tier).

`export --weights imagenet --quant fp32,int8 --formats tflite --min-agreement 0.95 --target pixel4`: the
artifact written meets the budget on the export's validation split (photos held out from calibration), the
manifest records the search, and on the 20 labelled ImageNet images (other real images, scored here with
plain LiteRT calls) the int8 file agrees with the fp32 file on at least 18.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

ASSETS = Path(os.environ.get("MOBILEDEPLOY_ASSETS") or Path.home() / ".cache" / "mobiledeploy" / "assets")
KERAS_FILE = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "models" / "mobilenet_1_0_224_tf.h5"
BUDGET = 0.95

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (KERAS_FILE.is_file() and (ASSETS / "imagenet20_224.npz").is_file()
                            and (ASSETS / "photos").is_dir()),
                       reason=f"real-model assets absent ({KERAS_FILE}, {ASSETS}/imagenet20_224.npz): run "
                              "`make assets`"),
]


def _top1(model: Path, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(model))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    top = []
    for img in x:
        interp.set_tensor(inp["index"], img[None])
        interp.invoke()
        top.append(int(np.argmax(interp.get_tensor(out["index"]))))
    return np.array(top)


def test_the_budget_on_the_real_model(tmp_path):
    from mobiledeploy.cli import cli

    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["export", "--weights", "imagenet", "--alpha", "1.0", "--res", "224",
                                      "--formats", "tflite", "--quant", "fp32,int8", "--min-agreement", str(BUDGET),
                                      "--target", "pixel4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    m = json.loads((out / "manifest.json").read_text())
    search = m["quantization"]["budget_search"]
    chosen = search["candidates"][search["chosen"]]
    assert chosen["meets"] and chosen["top1_agreement"]["tflite"] >= BUDGET
    assert search["candidates"][0]["float_layers"] == []
    assert m["quantization"]["float_layers"]["layers"] == chosen["float_layers"]
    assert search["cost_ms"] == pytest.approx(chosen["estimate_ms"] - search["full_int8_ms"], abs=1e-3)
    assert search["summary"] in " ".join(result.stdout.split())
    # other real images, measured here: the 20 labelled ImageNet images
    x = np.load(ASSETS / "imagenet20_224.npz")["x"].astype(np.float32) / 127.5 - 1.0
    files = {a["precision"]: out / a["file"] for a in m["artifacts"]}
    agree = int((_top1(files["int8"], x) == _top1(files["fp32"], x)).sum())
    assert agree >= 18, agree

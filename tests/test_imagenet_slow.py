"""The real MobileNet V1 1.0/224 ImageNet model end to end (needs `make assets`; slow tier).

Exports `--weights imagenet` to fp32 TFLite, evaluates it on the 20 labelled ImageNet
images, and recomputes the top-1 with plain LiteRT calls on images decoded here.
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

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (KERAS_FILE.is_file() and (ASSETS / "imagenet20").is_dir()
                            and (ASSETS / "imagenet_classes.txt").is_file() and (ASSETS / "photos").is_dir()),
                       reason=f"real-model assets absent ({KERAS_FILE}, {ASSETS}/imagenet20): run `make assets`"),
]


def _plain_top1(model: Path) -> tuple[int, int]:
    """(correct, total) with LiteRT alone: PIL bilinear 224x224, x/127.5 - 1, argmax vs the folder's class."""
    from ai_edge_litert.interpreter import Interpreter
    from PIL import Image

    names = [n.strip() for n in (ASSETS / "imagenet_classes.txt").read_text().splitlines() if n.strip()]
    interp = Interpreter(model_path=str(model))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    correct = total = 0
    for d in sorted(p for p in (ASSETS / "imagenet20").iterdir() if p.is_dir()):
        for f in sorted(d.iterdir()):
            with Image.open(f) as img:
                x = np.asarray(img.convert("RGB").resize((224, 224), Image.BILINEAR), np.float32) / 127.5 - 1.0
            interp.set_tensor(inp["index"], x[None])
            interp.invoke()
            correct += int(np.argmax(interp.get_tensor(out["index"])[0]) == names.index(d.name))
            total += 1
    return correct, total


def test_imagenet_weights_export_and_eval(tmp_path):
    from mobiledeploy.cli import cli

    out = tmp_path / "imagenet"
    r = CliRunner().invoke(cli, ["export", "--weights", "imagenet", "--alpha", "1.0", "--res", "224", "--quant", "fp32",
                                 "--formats", "tflite", "--out", str(out)])
    assert r.exit_code == 0, r.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["weights"]["name"] == "mobilenet_1_0_224_tf.h5" and manifest["model"]["trained"]
    cal = manifest["calibration"]
    assert cal["source"] == str(ASSETS / "photos") and cal["disjoint_from_validation"]  # real photos, not digits
    rep = tmp_path / "eval.json"
    r = CliRunner().invoke(cli, ["eval", str(out), "--data", str(ASSETS / "imagenet20"),
                                 "--labels", str(ASSETS / "imagenet_classes.txt"), "--json", str(rep)])
    assert r.exit_code == 0, r.stderr
    (res,) = json.loads(rep.read_text())["results"]
    correct, total = _plain_top1(out / manifest["artifacts"][0]["file"])
    assert total == 20 and res["samples"] == 20
    assert round(res["top1"] * total) == correct  # the tool agrees with plain runtime calls
    assert correct == 17  # what the published weights score on these 20 images

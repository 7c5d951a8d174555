"""Cross-layer equalization on the real MobileNet V1 1.0/224: what it does to fp32 and to int8 weights.

Needs ``make assets``. Run: ``nice python -m benchmarks run int8_real_cle`` (a few minutes).
Same evaluation set as the int8_real study (logits vs the original fp32 model).
``equalize_model(relu6="skip")`` (the default) finds no chain to equalize (all end in
ReLU6); ``relu6="relu"`` drops the caps and equalizes all 13 depthwise -> 1x1 chains.
Writes ``benchmarks/results/int8_real_cle.json``.
"""

from __future__ import annotations

import json

from benchmarks.common import int8_real as C
from benchmarks.common.int8_real import weight_quantized
from mobiledeploy.bench.core import machine_conditions
from mobiledeploy.export import equalize as E

KIND = "study"


def add_arguments(ap) -> None:
    pass


def run(args) -> dict:
    C.require_assets()
    model, x, y, ref = C.reference()
    pairs = E._cle_pairs(model)
    skip = E.equalize_model(model)
    relu = E.equalize_model(model, relu6="relu")
    uncapped = E.equalize_model(model, relu6="relu", min_scale=1.0, max_scale=1.0)  # caps dropped, no scaling
    result = {"machine": machine_conditions(), "chains": len(pairs),
              "relu6_chains": sum(E.relu_like(p[2]) == "relu6" for p in pairs),
              "skip_changes_weights": any((a != b).any() for a, b in zip(model.get_weights(), skip.get_weights())),
              "fp32_caps_dropped_vs_fp32": C.scores(ref, uncapped.predict(x, batch_size=16, verbose=0), y),
              "fp32_cle_relu_vs_fp32": C.scores(ref, relu.predict(x, batch_size=16, verbose=0), y),
              "weights_only_int8_per_channel_cle_relu": C.scores(
                  ref, weight_quantized(relu, qmax=127).predict(x, batch_size=16, verbose=0), y)}
    print(json.dumps(result, indent=1))
    return result

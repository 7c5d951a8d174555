"""Cross-layer equalization on the real MobileNet V1 1.0/224: what it does to fp32 and to int8 weights.

Needs ``make assets``. Run: ``nice python benchmarks/int8_real_cle.py`` (a few minutes).
Same evaluation set as benchmarks/int8_real.py (logits vs the original fp32 model).
``equalize_model(relu6="skip")`` (the default) finds no chain to equalize (all end in
ReLU6); ``relu6="relu"`` drops the caps and equalizes all 13 depthwise -> 1x1 chains.
Writes ``benchmarks/results/int8_real_cle.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import int8_real_common as C  # noqa: E402
from int8_real import weight_quantized  # noqa: E402

from mobiledeploy.export import equalize as E  # noqa: E402
from mobiledeploy.bench.core import machine_conditions  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "int8_real_cle.json"


def main() -> int:
    C.require_assets()
    model, x, y, ref = C.reference()
    pairs = E._cle_pairs(model)
    skip = E.equalize_model(model)
    relu = E.equalize_model(model, relu6="relu")
    uncapped = E.equalize_model(model, relu6="relu", min_scale=1.0, max_scale=1.0)  # caps dropped, no scaling
    result = {"machine": machine_conditions(), "chains": len(pairs),
              "relu6_chains": sum(E._relu_like(p[2]) == "relu6" for p in pairs),
              "skip_changes_weights": any((a != b).any() for a, b in zip(model.get_weights(), skip.get_weights())),
              "fp32_caps_dropped_vs_fp32": C.scores(ref, uncapped.predict(x, batch_size=16, verbose=0), y),
              "fp32_cle_relu_vs_fp32": C.scores(ref, relu.predict(x, batch_size=16, verbose=0), y),
              "weights_only_int8_per_channel_cle_relu": C.scores(
                  ref, weight_quantized(relu, qmax=127).predict(x, batch_size=16, verbose=0), y)}
    print(json.dumps(result, indent=1))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

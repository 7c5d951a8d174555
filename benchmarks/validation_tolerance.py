"""How far float exports (fp32, fp16; TFLite and ONNX) land from Keras, relative to the logits' range.

The export's float tolerances are ``atol + rtol x max|reference|`` (fp16: x100). This
script exports a few models at fp32 and fp16 without failing on the tolerance
(``strict=False``) and records, per artifact, the max absolute difference of the logits,
the largest |reference logit|, their ratio and the tolerance that applied, plus how much
the reference logits vary across the validation inputs. Cases: the random-init demo
model (seeded batch norm), bigger random-init models of each family, the trained digits
reference model, and MobileNet V1 1.0/224 with ImageNet weights when
``mobilenet_1_0_224_tf.h5`` is in the Keras cache (``KERAS_HOME``, default ``~/.keras``).
Writes benchmarks/results/validation_tolerance.json.

    python -m benchmarks run validation_tolerance [--only NAME ...]
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from benchmarks.harness import ROOT

KIND = "study"
KERAS_CACHE = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"

CASES = {
    "demo mobilenet_v1 0.25/128 random": dict(alpha=0.25, resolution=128),
    "mobilenet_v1 1.0/224 random": dict(alpha=1.0, resolution=224),
    "mobilenet_v2 1.0/128 random": dict(arch="mobilenet_v2", alpha=1.0, resolution=128),
    "mobilenet_v3_small 1.0/224 random": dict(arch="mobilenet_v3_small", alpha=1.0, resolution=224),
    "digits reference mobilenet_v1 0.25/32 trained": dict(
        model_path=str(ROOT / "models" / "mobilenet_v1_0.25_32_digits.keras")),
    "mobilenet_v1 1.0/224 imagenet": dict(alpha=1.0, resolution=224,
                                          weights=str(KERAS_CACHE / "mobilenet_1_0_224_tf.h5")),
}


def run_case(name: str, kw: dict) -> dict:
    from mobiledeploy.export.pipeline import ExportConfig, export_model

    with tempfile.TemporaryDirectory() as out:
        cfg = ExportConfig(**kw, formats=("tflite", "onnx"), precisions=("fp32", "fp16"), calib_samples=10,
                           validate_samples=32, strict=False, out=out)
        res = export_model(cfg)
    rows = []
    for a in res.artifacts:
        v = a.validation
        scale = res.reference["max_abs"]
        rows.append({"format": a.format, "precision": a.precision, "compared": v.compared,
                     "max_abs_diff": v.max_abs_diff, "relative_to_max_abs_reference": v.max_abs_diff / scale,
                     "tolerance": v.tolerance, "status": v.status, "top1_agreement": v.top1_agreement})
        print(f"{name:48s} {a.format:6s} {a.precision:4s} {v.compared}: max|diff| {v.max_abs_diff:.2e} "
              f"= {v.max_abs_diff / scale:.2e} x max|ref| ({scale:.3g}); tol {v.tolerance:.2e} {v.status}",
              file=sys.stderr)
    return {"config": kw, "reference": res.reference, "artifacts": rows}


def add_arguments(ap) -> None:
    ap.add_argument("--only", nargs="*", help="case names (substrings) to run")


def run(args) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from mobiledeploy.bench.core import machine_conditions

    before = machine_conditions()
    cases = {}
    for name, kw in CASES.items():
        if args.only and not any(s in name for s in args.only):
            continue
        if "weights" in kw and not Path(kw["weights"]).exists():
            cases[name] = {"skipped": f"{kw['weights']} not present"}
            continue
        cases[name] = run_case(name, kw)
    result = {"machine_before": before, "machine_after": machine_conditions(), "cases": cases}
    return result

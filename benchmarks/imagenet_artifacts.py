"""The real MobileNet V1 1.0/224 ImageNet model through `export`, per format and precision.

Needs ``make assets``. Run: ``nice python -m benchmarks run imagenet_artifacts`` (about 10 min
on a 2-vCPU VM). Writes ``benchmarks/results/imagenet_artifacts.json`` and prints a
Markdown table.

Four exports with the project's own pipeline (``export_model``, ``--weights imagenet``,
TFLite + ONNX, ONNX types chosen for this CPU):

- ``fp32, fp16, dynamic, int8`` with the default int8 recipe (per-channel weights, bias
  correction, the stem ``conv1/conv_dw_1/conv_pw_1`` kept in float);
- ``int8`` with ``--per-tensor`` weights (everything else the default);
- ``int8`` with ``--float-layers none`` (every layer int8, bias-corrected);
- ``int8`` with ``--float-layers none --no-bias-correction`` (the plain recipe: before).

Calibration: a folder holding the 7 calibration photos of
``benchmarks/common/int8_real.py`` (the export's own split and augmentation, as a user
would run it). Evaluation: the 20 labelled ImageNet images plus 100 crops/flips of 5
other photos (disjoint from calibration). Per artifact: file size, host latency (p50 of
50 runs, 1 thread, LiteRT / ONNX Runtime in the bench child process), top-1 on the
labelled 20, and against the fp32 Keras model on all 120: top-1 agreement and logit SQNR
(the artifact's pre-softmax tensor, read from a tapped copy of the file).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import int8_real as C
from benchmarks.harness import BUILD

KIND = "study"
OUT = BUILD / "imagenet_artifacts"


def export(calib_dir: Path, tag: str, **kw):
    from mobiledeploy.export.pipeline import ExportConfig, export_model

    cfg = ExportConfig(weights="imagenet", alpha=1.0, resolution=224, formats=("tflite", "onnx"),
                       calib=str(calib_dir), out=str(OUT / tag), **kw)
    t = time.perf_counter()
    res = export_model(cfg)
    return res, time.perf_counter() - t


def add_arguments(ap) -> None:
    pass


def run(args) -> dict:
    C.require_assets()
    from mobiledeploy.bench.core import BenchSettings, bench_model, machine_conditions
    from mobiledeploy.export.logits import artifact_logits

    shutil.rmtree(OUT, ignore_errors=True)
    _, x, y, ref = C.reference()
    rows, exports = [], {}
    with tempfile.TemporaryDirectory() as d:
        calib_dir = Path(d) / "calibration_photos"
        calib_dir.mkdir()
        for p in C.CALIB_PHOTOS:
            shutil.copy(C.ASSETS / "photos" / p, calib_dir / p)
        runs = (("default", dict(precisions=("fp32", "fp16", "dynamic", "int8"))),
                ("per_tensor", dict(precisions=("int8",), per_channel=False)),
                ("all_layers_int8", dict(precisions=("int8",), float_layers=())),
                ("plain", dict(precisions=("int8",), float_layers=(), bias_correction=False)))
        for tag, kw in runs:
            res, secs = export(calib_dir, tag, **kw)
            exports[tag] = {"seconds": round(secs, 1), "calibration": res.calibration,
                            "quantization": res.quantization, "warnings": list(res.warnings)}
            print(f"export {tag}: {secs:.0f} s", flush=True)
            for a in res.artifacts:
                path = res.out_dir / a.file
                logits = artifact_logits(path, a.format, x)
                b = bench_model(path, BenchSettings(threads=1, runs=50), precision=a.precision)
                s = C.scores(ref, logits, y)
                q = res.quantization
                recipe = "" if a.precision in ("fp32", "fp16") else (
                    "per-channel" if a.precision == "dynamic" else
                    ", ".join(["per-channel" if q["tflite"]["per_channel"] else "per-tensor"]
                              + (["bias-corrected"] if q["bias_correction"]["enabled"] else [])
                              + ([f"{'/'.join(q['float_layers']['layers'])} float"]
                                 if q["float_layers"]["layers"] else [])))
                rows.append({"export": tag, "format": a.format, "precision": a.precision, "recipe": recipe,
                             "size_mb": round(a.size_bytes / 2**20, 2),
                             "host_p50_ms_1thread": round(b.latency_ms["p50"], 2) if b.ok else None,
                             "top1_labelled": f"{s['top1_labelled']}/{s['labelled']}",
                             "agree_n": s["agree_n"], "agree": round(s["agree"], 4),
                             "agree_or_tie": round(s["agree_or_tie"], 4), "sqnr_db": round(s["sqnr_db"], 1),
                             "validation": a.validation.status})
                print(json.dumps(rows[-1]), flush=True)
    result = {"what": "MobileNet V1 1.0/224 ImageNet weights through mobiledeploy export; host latency on "
                      "this machine, not a phone",
              "machine": machine_conditions(),
              "set_up": {"eval_samples": len(x), "labelled": int((y >= 0).sum()),
                         "fp32_keras_top1_labelled": int(np.sum(ref[y >= 0].argmax(1) == y[y >= 0])),
                         "calib_photos": list(C.CALIB_PHOTOS), "eval_photos": list(C.EVAL_PHOTOS)},
              "exports": exports, "rows": rows}
    print("| format | precision | int8 recipe | size | host p50, 1 thread | top-1 (20 labelled) | agreement (120) | "
          "logit SQNR |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['format']} | {r['precision']} | {r['recipe']} | {r['size_mb']} MB | "
              f"{r['host_p50_ms_1thread']} ms | {r['top1_labelled']} | {r['agree_n']} | {r['sqnr_db']} dB |")
    return result

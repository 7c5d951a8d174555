"""Top-1 of the committed reference model per format and precision (the README's accuracy row).

    python -m benchmarks run reference_accuracy

Exports models/mobilenet_v1_0.25_32_digits.keras to every format and precision the
exporter makes (build/reference_accuracy/), evaluates each artifact on the 360-image
digits test split with `mobiledeploy eval`, and writes
benchmarks/results/reference_accuracy.json. The figures should match
models/mobilenet_v1_0.25_32_digits.numerics.toml.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.harness import BUILD, ROOT

KIND = "study"
BIN = Path(sys.executable).parent / "mobiledeploy"
OUT = BUILD / "reference_accuracy"


def add_arguments(ap) -> None:
    pass


def run(args) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    shutil.rmtree(OUT, ignore_errors=True)
    t0 = time.perf_counter()
    subprocess.run([str(BIN), "export", "--model", str(ROOT / "models/mobilenet_v1_0.25_32_digits.keras"),
                    "--calib", "digits", "--quant", "fp32,fp16,dynamic,int8", "--formats", "tflite,onnx,keras",
                    "--out", str(OUT)], check=True, env=env, stdout=subprocess.DEVNULL)
    eval_json = OUT / "eval.json"
    subprocess.run([str(BIN), "eval", str(OUT), "--data", "digits", "--split", "test", "--json", str(eval_json)],
                   check=True, env=env)
    report = json.loads(eval_json.read_text())
    rows = [{k: r.get(k) for k in ("model", "format", "precision", "status", "top1", "samples")}
            | {"sqnr_db": (r.get("agreement") or {}).get("sqnr_db")} for r in report["results"]]
    result = {"what": "reference model top-1 on the digits test split, per exported artifact",
              "seconds": round(time.perf_counter() - t0, 1), "load_avg_1m": round(os.getloadavg()[0], 2),
              "results": rows}
    for r in rows:
        top1 = f"{100 * r['top1']:.2f}%" if r["top1"] is not None else "-"
        print(f"{Path(r['model']).name:40s} {r['format']:7s} {r['precision']:8s} {r['status']:6s} top-1 {top1}")
    return result

"""MobileNet V1 .tflite/.onnx files for the timing studies (harness_overhead, startup): built
once with TensorFlow in a child process (the measuring process never imports it), cached in
build/bench-models/."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from benchmarks.harness import BUILD, ROOT

MODELS_DIR = BUILD / "bench-models"
SIZES = ((0.25, 128), (0.5, 128))


def model_paths(alpha: float, res: int) -> dict[str, Path]:
    stem = f"mobilenet_v1_{alpha}_{res}_fp32"
    return {"tflite": MODELS_DIR / f"{stem}.tflite", "onnx": MODELS_DIR / f"{stem}.onnx"}


def build_models(sizes=SIZES) -> None:
    """Build the missing .tflite/.onnx files, in a child process that imports TensorFlow."""
    if all(p.exists() for a, r in sizes for p in model_paths(a, r).values()):
        return
    code = f"""
import os, sys, contextlib, io
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf, tf2onnx
from mobiledeploy.models.archs import build_model
from benchmarks.common.bench_models import model_paths
for alpha, res in {list(sizes)!r}:
    paths = model_paths(alpha, res)
    paths["tflite"].parent.mkdir(parents=True, exist_ok=True)
    m = build_model("mobilenet_v1", alpha=alpha, resolution=res, classes=1000)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        paths["tflite"].write_bytes(tf.lite.TFLiteConverter.from_keras_model(m).convert())
        spec = (tf.TensorSpec((None, res, res, 3), tf.float32, name="input"),)
        tf2onnx.convert.from_keras(m, input_signature=spec, opset=17, output_path=str(paths["onnx"]))
"""
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT,
                   env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                                                 os.environ.get("PYTHONPATH")]))})


def conditions() -> dict:
    from mobiledeploy.bench.core import machine_conditions

    return machine_conditions()

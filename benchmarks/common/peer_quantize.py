"""Run one peer quantizer on an fp32 file: the child process of ``benchmarks/int8_peers.py``.

Runs with the Python of the peer's own virtual environment (never the project's), so it
imports nothing from ``mobiledeploy`` or ``benchmarks``. Usage::

    python peer_quantize.py RECIPE FP32_MODEL CALIB.npy OUT_FILE

``CALIB.npy``: float32 (N, H, W, 3) preprocessed calibration samples, fed one at a time.
Prints one JSON line on stdout: the recipe, its parameters, the peer's version and the
seconds the quantization took (the output file is written only when it succeeded).
"""

from __future__ import annotations

import json
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np


def _nncf(fp32: Path, calib: np.ndarray, out: Path, *, mixed_full_bc: bool) -> dict:
    import nncf
    import onnx

    model = onnx.load(str(fp32))
    name = model.graph.input[0].name
    dataset = nncf.Dataset([calib[i:i + 1] for i in range(len(calib))], lambda x: {name: x})
    kw, said = dict(subset_size=len(calib)), f"subset_size={len(calib)}"
    if mixed_full_bc:  # symmetric weights, asymmetric activations; BiasCorrection instead of FastBiasCorrection
        kw.update(preset=nncf.QuantizationPreset.MIXED, fast_bias_correction=False)
        said += ", preset=nncf.QuantizationPreset.MIXED, fast_bias_correction=False"
    q = nncf.quantize(model, dataset, **kw)
    onnx.save(q, str(out))
    return {"peer": "nncf", "version": metadata.version("nncf"), "input": "onnx",
            "call": f"nncf.quantize(onnx_model, nncf.Dataset(samples), {said})"}


def _aeq(fp32: Path, calib: np.ndarray, out: Path) -> dict:
    from ai_edge_quantizer import quantizer, recipe

    qt = quantizer.Quantizer(str(fp32))
    qt.load_quantization_recipe(recipe.static_wi8_ai8())
    signature = "serving_default"
    runner_inputs = _signature_input(fp32, signature)
    data = {signature: [{runner_inputs: calib[i:i + 1]} for i in range(len(calib))]}
    result = qt.quantize(qt.calibrate(data))
    out.write_bytes(bytes(result.quantized_model))
    return {"peer": "ai-edge-quantizer", "version": metadata.version("ai-edge-quantizer"), "input": "tflite",
            "call": f"Quantizer(fp32).load_quantization_recipe(recipe.static_wi8_ai8()); "
                    f"calibrate({{'{signature}': [{{'{runner_inputs}': sample}}, ...]}}); quantize"}


def _signature_input(fp32: Path, key: str) -> str:
    """The one input name of signature ``key`` (LiteRT, as installed beside the quantizer)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # older stacks ship the interpreter in TensorFlow
        from tensorflow.lite.python.interpreter import Interpreter

    sigs = Interpreter(model_path=str(fp32)).get_signature_list()
    if key not in sigs:
        raise SystemExit(f"error: {fp32.name} has no {key!r} signature (has {sorted(sigs)})")
    (name,) = sigs[key]["inputs"]
    return name


RECIPES = {"nncf_default": lambda f, c, o: _nncf(f, c, o, mixed_full_bc=False),
           "nncf_mixed_full_bc": lambda f, c, o: _nncf(f, c, o, mixed_full_bc=True),
           "aeq_static_wi8_ai8": _aeq}


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[0] not in RECIPES:
        print(f"usage: peer_quantize.py {{{'|'.join(RECIPES)}}} FP32_MODEL CALIB.npy OUT_FILE", file=sys.stderr)
        return 2
    recipe, fp32, calib_path, out = argv[0], Path(argv[1]), Path(argv[2]), Path(argv[3])
    calib = np.load(calib_path).astype(np.float32)
    t = time.perf_counter()
    info = RECIPES[recipe](fp32, calib, out)
    print(json.dumps({"recipe": recipe, **info, "calibration_samples": int(len(calib)),
                      "seconds": round(time.perf_counter() - t, 1), "python": sys.version.split()[0]}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

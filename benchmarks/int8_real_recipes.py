"""Full int8 (no layer in float) on the real MobileNet V1 1.0/224: the int8 recipes side by side.

Needs ``make assets``. Run: ``nice python -m benchmarks run int8_real_recipes [--quick]`` (about
40 min on a 2-vCPU VM, most of it learned rounding: once per weight grid). Writes
``benchmarks/results/int8_real_recipes.json`` (rewritten after every row) and prints the rows
of the docs table.

Set-up as in the int8_real study (benchmarks/common/int8_real.py): 168 calibration crops of 7
photos; 120 real evaluation images disjoint from them (the 20 labelled ImageNet images + 100
crops of 5 other photos); logits against the fp32 Keras model: top-1 agreement, SQNR, top-1 on
the labelled 20. Every artifact comes from the project's converters
(``mobiledeploy.export.formats``) with a ``QuantRecipe`` and no float layer:

- ``plain``: round to nearest;
- ``bias_correction``: the empirical bias correction (``--bias-correction``);
- ``adaround``: learned rounding with bias correction along the quantized path
  (``--weight-rounding adaround``);
- ``bias_correction`` with ONNX Runtime's percentile and entropy calibration
  (``--onnx-calibration``; ONNX only).

ONNX Runtime runs with U8S8 + reduce_range (this CPU's choice without VNNI) and, for the last
two recipes, S8S8 (the choice on CPUs with VNNI and on ARM; on an AVX2 CPU without VNNI its u8 x
s8 kernel can saturate, so the S8S8 figures measured here are a floor, not what a VNNI CPU gives).
``--quick``: plain and bias correction only (no learned rounding).
``--tflite-calibration percentile|mse`` (with ``--tag``): instead, bias correction and learned rounding with
the TFLite activation ranges of that method (``export --tflite-calibration``; TFLite only).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks import harness
from benchmarks.common import int8_real as C

KIND = "study"


def add_arguments(ap) -> None:
    ap.add_argument("--quick", action="store_true", help="skip learned rounding (the slow recipe)")
    ap.add_argument("--tflite-calibration", choices=("percentile", "mse"), default=None,
                    help="instead of the default rows: TFLite only, with these activation ranges")


def _row(ref, out, y, secs) -> dict:
    s = C.scores(ref, out, y)
    return {**s, "seconds": round(secs)}


def run(args) -> dict:
    C.require_assets()
    from mobiledeploy.bench.core import machine_conditions
    from mobiledeploy.export.formats import onnx as O
    from mobiledeploy.export.formats import tflite as T
    from mobiledeploy.export.recipes import Calibration, OnnxQuant, OnnxQuantTypes, QuantRecipe, TfliteQuant

    model, x, y, ref = C.reference()
    cal = Calibration(C.calib_set())
    types = {"u8s8": OnnxQuantTypes("u8s8", True, "x86-64 host without VNNI"),
             "s8s8": OnnxQuantTypes("s8s8", False, "CPUs with VNNI, ARM")}
    recipes = [("plain", QuantRecipe(), "minmax", ("u8s8",)),
               ("bias_correction", QuantRecipe(bias_correction=True), "minmax", ("u8s8", "s8s8"))]
    if not args.quick:
        recipes.append(("adaround", QuantRecipe(bias_correction=True, rounding="adaround"), "minmax", ("u8s8", "s8s8")))
    recipes += [("bias_correction", QuantRecipe(bias_correction=True), "percentile", ("u8s8",)),
                ("bias_correction", QuantRecipe(bias_correction=True), "entropy", ("u8s8",))]
    if args.tflite_calibration:
        ranges = TfliteQuant(calibration=args.tflite_calibration)
        recipes = [("bias_correction", QuantRecipe(bias_correction=True, tflite=ranges), "minmax", ())]
        if not args.quick:
            recipes.append(("adaround", QuantRecipe(bias_correction=True, rounding="adaround", tflite=ranges),
                            "minmax", ()))
    result = {"machine": machine_conditions(),
              "set_up": {"eval_samples": len(x), "labelled": int((y >= 0).sum()), "calib_samples": cal.samples,
                         "calib_photos": list(C.CALIB_PHOTOS), "eval_photos": list(C.EVAL_PHOTOS),
                         "fp32_top1_labelled": int(np.sum(ref[y >= 0].argmax(1) == y[y >= 0])), "float_layers": []},
              "rows": []}
    for name, recipe, method, onnx_types in recipes:
        row = {"recipe": name, "onnx_calibration": method, "tflite_calibration": recipe.tflite.calibration}
        if method == "minmax":
            t = time.time()
            with tempfile.TemporaryDirectory() as d:  # the export's own path (ranges other than min/max included)
                data = T.convert(model, "int8", recipe, cal, Path(d), "m").read_bytes()
            row["tflite"] = _row(ref, C.run_tflite(data, x), y, time.time() - t)
            src = cal.quant_source(model, recipe, "int8")
            if src is not model:  # how far the recipe moved the float model itself
                row["fp32_source_vs_fp32"] = C.scores(ref, src.predict(x, batch_size=16, verbose=0), y)
        for kind in onnx_types:
            r = replace(recipe, onnx=OnnxQuant(types[kind], method))
            with tempfile.TemporaryDirectory() as d:
                t = time.time()
                path = O.convert(model, "int8", r, cal, Path(d), "m")
                row[f"onnx_{kind}"] = _row(ref, C.run_onnx(path, x), y, time.time() - t)
        result["rows"].append(row)
        print(_line(row), flush=True)
        harness.write_result("int8_real_recipes", result, tag=args.tag)
    return result


def _cell(s: dict | None) -> str:
    if not s:
        return ""
    return f"{s['agree_n']} ({100 * s['agree']:.1f} %), {s['sqnr_db']:.1f} dB, {s['top1_labelled']}/{s['labelled']}"


def _line(row: dict) -> str:
    name = row["recipe"] + ("" if row["onnx_calibration"] == "minmax" else f", ORT {row['onnx_calibration']}")
    if row.get("tflite_calibration", "minmax") != "minmax":
        name += f", TFLite {row['tflite_calibration']}"
    return f"| {name} | {_cell(row.get('tflite'))} | {_cell(row.get('onnx_u8s8'))} | {_cell(row.get('onnx_s8s8'))} |"

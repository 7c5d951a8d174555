"""int8 on the real MobileNet V1 1.0/224 ImageNet model: where the error comes from, and bias correction.

Needs ``make assets``. Run: ``nice python -m benchmarks run int8_real [--quick]`` (about 15 min
on a 2-vCPU VM; ``--quick`` skips the per-layer study). Writes
``benchmarks/results/int8_real.json``.

Set-up (benchmarks/common/int8_real.py): the Keras model with the softmax removed (logits
compared); evaluation = the 20 labelled ImageNet images + 100 random crops/flips of 5
photos; calibration = 168 crops/flips (24 per photo, the full photo included) of 7 other
photos (disjoint from evaluation). Metrics against fp32 Keras: top-1 agreement, logit
SQNR, top-1 on the labelled 20.

Parts:
1. ``weights_only``: fp32 activations, weights fake-quantized the way TFLite / ONNX Runtime
   do (symmetric max-abs per output channel of the batch-norm-folded kernel, [-127, 127];
   [-64, 64] for ORT's reduce_range) -- with and without bias correction.
2. ``per_layer`` (last; the file is rewritten after every layer): the same, one layer at a time (logit SQNR when only that layer's weights
   are quantized), before and after that layer's bias correction, plus the layer's batch-norm
   |moving_mean| / sqrt(moving_variance + eps) (how much a shift of the conv output's mean
   is amplified, in units of the channel's standard deviation).
3. ``runtimes``: real int8 artifacts from the project's converters (``mobiledeploy.export.formats``):
   TFLite full int8 and ONNX Runtime QDQ int8 (U8S8 + reduce_range, the choice on x86-64
   without VNNI), each from the original and from the bias-corrected Keras model.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import harness
from benchmarks.common import int8_real as C
from benchmarks.common.int8_real import weight_quantized
from mobiledeploy.export import equalize as E

KIND = "study"


def one_layer_corrected(model, corrected, name: str):
    """``model`` with only layer ``name``'s bias correction (its batch-norm or bias) taken from ``corrected``."""
    q = E.clone(model)
    for layer, bn in E.conv_targets(q):
        if layer.name == name:
            target = bn if bn is not None else layer
            target.set_weights(corrected.get_layer(target.name).get_weights())
    return q


def mean_over_std(model) -> dict[str, float]:
    """Per conv layer: max over channels of |moving_mean| / sqrt(moving_variance + eps) of its batch-norm."""
    out = {}
    for layer, bn in E.conv_targets(model):
        if bn is None:
            continue
        w = {v.path.split("/")[-1]: np.asarray(v) for v in bn.weights}
        out[layer.name] = float(np.max(np.abs(w["moving_mean"]) / np.sqrt(w["moving_variance"] + bn.epsilon)))
    return out


def runtimes(model, bc_tflite, bc_ort, cal, x, y, ref) -> dict:
    from mobiledeploy.export.formats import onnx as O
    from mobiledeploy.export.formats import tflite as T
    from mobiledeploy.export.recipes import Calibration, OnnxQuant, OnnxQuantTypes, QuantRecipe

    u8s8 = OnnxQuantTypes("u8s8", True, "x86-64 host without VNNI")
    out = {}
    for tag, m_tfl, m_ort in (("plain", model, model), ("bias_corrected", bc_tflite, bc_ort)):
        t = time.time()
        data = T.converter_for(m_tfl, "int8", QuantRecipe(), Calibration(cal)).convert()
        out[f"tflite_int8_{tag}"] = {**C.scores(ref, C.run_tflite(data, x), y), "convert_s": round(time.time() - t)}
        print(f"  tflite int8 {tag}: {out[f'tflite_int8_{tag}']}", flush=True)
        with tempfile.TemporaryDirectory() as d:
            t = time.time()
            p = O.convert(m_ort, "int8", QuantRecipe(onnx=OnnxQuant(u8s8)), Calibration(cal), Path(d), "m")
            out[f"onnx_u8s8_int8_{tag}"] = {**C.scores(ref, C.run_onnx(p, x), y), "convert_s": round(time.time() - t)}
        print(f"  onnx u8s8 int8 {tag}: {out[f'onnx_u8s8_int8_{tag}']}", flush=True)
    return out


def add_arguments(ap) -> None:
    ap.add_argument("--quick", action="store_true", help="skip the per-layer study")


def run(args) -> dict:
    def save(result: dict) -> None:  # partial results, rewritten as the study goes
        harness.write_result("int8_real", result, tag=args.tag)

    C.require_assets()
    from mobiledeploy.bench.core import machine_conditions

    model, x, y, ref = C.reference()
    cal = C.calib_set()
    print(f"eval {len(x)} samples ({int((y >= 0).sum())} labelled), calibration {len(cal)} samples", flush=True)
    t = time.time()
    bc = E.correct_bias(model, cal)
    bc_rr = E.correct_bias(model, cal, weights="int8_reduce_range")
    bc_s = time.time() - t
    result = {"machine": machine_conditions(),
              "set_up": {"eval_samples": len(x), "labelled": int((y >= 0).sum()), "calib_samples": len(cal),
                         "calib_photos": list(C.CALIB_PHOTOS), "eval_photos": list(C.EVAL_PHOTOS),
                         "fp32_top1_labelled": int(np.sum(ref[y >= 0].argmax(1) == y[y >= 0])),
                         "bias_correction_s_for_two_grids": round(bc_s, 1)}}
    result["fp32_bias_corrected_vs_fp32"] = C.scores(ref, bc.predict(x, batch_size=16, verbose=0), y)
    wo = {}
    for grid, qmax, corrected in (("int8", 127, bc), ("int8_reduce_range", 64, bc_rr)):
        wo[f"{grid}_plain"] = C.scores(ref, weight_quantized(model, qmax=qmax).predict(x, batch_size=16, verbose=0), y)
        wo[f"{grid}_bias_corrected"] = C.scores(
            ref, weight_quantized(corrected, qmax=qmax).predict(x, batch_size=16, verbose=0), y)
        print(f"  weights only {grid}: {wo[f'{grid}_plain']} -> {wo[f'{grid}_bias_corrected']}", flush=True)
    result["weights_only"] = wo
    save(result)
    result["runtimes"] = runtimes(model, bc, bc_rr, cal, x, y, ref)
    save(result)
    if not args.quick:  # slow (two predictions per layer): written after every layer
        ratio = mean_over_std(model)
        result["per_layer_weights_only"] = rows = []
        for layer, _ in E.conv_targets(model):
            before = C.scores(ref, weight_quantized(model, qmax=127, only=layer.name).predict(x, batch_size=16,
                                                                                               verbose=0), y)
            fixed = one_layer_corrected(model, bc, layer.name)
            after = C.scores(ref, weight_quantized(fixed, qmax=127, only=layer.name).predict(x, batch_size=16,
                                                                                            verbose=0), y)
            rows.append({"layer": layer.name, "mean_over_std_max": ratio.get(layer.name),
                         "sqnr_db_plain": round(before["sqnr_db"], 1), "agree_plain": before["agree_n"],
                         "sqnr_db_bias_corrected": round(after["sqnr_db"], 1), "agree_bias_corrected": after["agree_n"]})
            print(f"  {rows[-1]}", flush=True)
            save(result)
    return result

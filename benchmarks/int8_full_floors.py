"""Full int8 on the real MobileNet V1 1.0/224: the top-1 agreement that int8 logits and 8-bit ReLU6 outputs alone allow.

Needs ``make assets``. Run: ``nice python -m benchmarks run int8_full_floors`` (a few minutes
on a 2-vCPU VM: Keras forward passes on the 120 evaluation images and the 168 calibration crops,
plus two TFLite conversions whose output grid is read; ``--no-artifacts`` skips those). Writes
``benchmarks/results/int8_full_floors.json``.

Same set-up as ``int8_real_recipes`` (benchmarks/common/int8_real.py): 168 calibration crops of
7 photos, 120 real evaluation images disjoint from them, scored against the fp32 Keras logits by
``scores`` (strict top-1 agreement, exact ties at the top, agreement counting a tie for the top
class, logit SQNR, labelled top-1). No weight is quantized here; each row rounds one thing to the
grid a full-int8 artifact puts it on, with numpy / Keras:

1. ``int8_logits``: the fp32 logits on the int8 output grid the converters calibrate (min/max of
   the calibration logits, range widened to hold 0, scale (max - min) / 255, zero point
   round(-128 - min / scale), as TFLite does), and on the output grid read from TFLite full-int8
   artifacts of the project's converter (plain and bias-corrected); for comparison, a range from 0
   to the calibration maximum (a finer step, every negative logit clipped to 0);
2. ``relu6_grid``: float weights, every ReLU6 output rounded to the converters' [0, 6] / 255 grid
   (float logits, int8 logits; and with the input on TFLite's int8 grid as well);
3. ``per_channel_grid``: float weights, each ReLU6 output channel on its own grid max_c / 255
   (max_c its calibration maximum, at most 6): the ideal activation grid, an upper bound for any
   activation range choice or cap-respecting equalization;

plus the distribution of the top-2 fp32 logit gap on the 120 images (how many are closer than
0.05, 0.1, one output grid step).
"""

from __future__ import annotations

import numpy as np

from benchmarks.common import int8_real as C

KIND = "study"


def add_arguments(ap) -> None:
    ap.add_argument("--no-artifacts", action="store_true",
                    help="do not convert TFLite artifacts to read their output grid (numpy / Keras only)")


def output_grid(lo: float, hi: float) -> tuple[float, int]:
    """(scale, int8 zero point) of an asymmetric int8 tensor calibrated to [lo, hi], as TFLite computes it."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = (hi - lo) / 255
    return scale, int(np.clip(np.round(-128 - lo / scale), -128, 127))


def on_grid(v: np.ndarray, scale: float, zero: int) -> np.ndarray:
    """``v`` quantized to int8 with (scale, zero point) and back."""
    return ((np.clip(np.round(v / scale) + zero, -128, 127) - zero) * scale).astype(np.float32)


def _score(ref, out, y) -> dict:
    s = C.scores(ref, out, y)
    n = len(ref)
    return {"agree_n": s["agree_n"], "agree_strict": int(round(s["agree"] * n)), "ties_on_top": s["ties_on_top"],
            "agree_or_tie": int(round(s["agree_or_tie"] * n)), "sqnr_db": round(s["sqnr_db"], 2),
            "top1_labelled": f"{s['top1_labelled']}/{s['labelled']}"}


def _pair(ref, out, y, grid) -> dict:
    """Scores with the float logits and with the same logits on the int8 output grid."""
    return {"float_logits": _score(ref, out, y), "int8_logits": _score(ref, on_grid(out, *grid), y)}


def _channel_grid_model(model, steps: dict):
    """A copy of ``model`` whose ReLU6 layers named in ``steps`` round each channel to its own step (clip at 6)."""
    import keras

    class ChannelGridReLU6(keras.layers.Layer):
        def __init__(self, step, **kw):
            super().__init__(**kw)
            self.step = np.asarray(step, np.float32)

        def call(self, x):
            return keras.ops.round(keras.ops.clip(x, 0.0, 6.0) / self.step) * self.step

    def clone_layer(layer):
        if layer.name in steps:
            return ChannelGridReLU6(steps[layer.name], name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    q = keras.models.clone_model(model, clone_function=clone_layer)
    q.set_weights(model.get_weights())
    return q


def _artifact_grids(model, cal) -> dict:
    """The output grid (scale, zero point) of the full-int8 TFLite artifacts, read from the converted files."""
    from ai_edge_litert.interpreter import Interpreter

    from mobiledeploy.export.formats import tflite as T
    from mobiledeploy.export.recipes import QuantRecipe

    out = {}
    for name, recipe in (("plain", QuantRecipe()), ("bias_correction", QuantRecipe(bias_correction=True))):
        it = Interpreter(model_content=T.converter_for(model, "int8", recipe, cal).convert())
        classes = model.outputs[0].shape[-1]
        grids = {(float(t["quantization"][0]), int(t["quantization"][1])) for t in it.get_tensor_details()
                 if t["dtype"] == np.int8 and len(t["shape"]) and t["shape"][-1] == classes}
        if len(grids) != 1:
            raise SystemExit(f"expected one int8 grid on the {classes}-class tensors of the {name} artifact, got {grids}")
        out[name] = grids.pop()
    return out


def run(args) -> dict:
    C.require_assets()
    import keras

    from mobiledeploy.export import equalize as E
    from mobiledeploy.export.adaround import _path_model
    from mobiledeploy.export.recipes import Calibration

    model, x, y, ref = C.reference()
    cal = C.calib_set()
    relus = [layer for layer in model.layers if isinstance(layer, keras.layers.ReLU) and E.relu_like(layer) == "relu6"]
    probe = keras.Model(model.inputs, [model.outputs[0], *[layer.output for layer in relus]])
    cal_logits, ch_max = [], None
    for i in range(0, len(cal), 8):
        outs = [np.asarray(o) for o in probe(cal[i:i + 8], training=False)]
        cal_logits.append(outs[0])
        cur = [o.reshape(-1, o.shape[-1]).max(0) for o in outs[1:]]
        ch_max = cur if ch_max is None else [np.maximum(a, b) for a, b in zip(ch_max, cur)]
    cal_logits = np.concatenate(cal_logits)
    lo, hi = float(cal_logits.min()), float(cal_logits.max())
    grid = output_grid(lo, hi)
    # a finer step (0.09 instead of 0.13) at the price of clipping every negative logit to 0
    grids = {"calibrated": grid, "calibrated_top_bottom_at_0": output_grid(0.0, hi)}
    if not args.no_artifacts:
        grids.update({f"tflite_{k}": v for k, v in _artifact_grids(model, Calibration(cal)).items()})
    result = {"set_up": {"eval_samples": len(x), "labelled": int((y >= 0).sum()), "calib_samples": len(cal),
                         "calib_photos": list(C.CALIB_PHOTOS), "eval_photos": list(C.EVAL_PHOTOS),
                         "fp32_top1_labelled": int(np.sum(ref[y >= 0].argmax(1) == y[y >= 0]))},
              "calibration_logit_range": [round(lo, 4), round(hi, 4)],
              "output_grids": {k: {"scale": round(s, 6), "zero_point": z} for k, (s, z) in grids.items()}}
    if "tflite_plain" in grids:  # the plain artifact is calibrated on the same logits: the same grid, or the rule is wrong
        result["calibrated_grid_is_tflite_plain"] = bool(np.isclose(grids["tflite_plain"][0], grid[0], rtol=1e-5)
                                                         and grids["tflite_plain"][1] == grid[1])

    # 1. the int8 logits alone
    result["int8_logits"] = {k: _score(ref, on_grid(ref, *g), y) for k, g in grids.items()}
    top2 = np.sort(ref, 1)[:, -2:]
    gap = top2[:, 1] - top2[:, 0]
    result["top2_gap"] = {"below_0.05": int(np.sum(gap < 0.05)), "below_0.1": int(np.sum(gap < 0.1)),
                          "below_one_step": int(np.sum(gap < grid[0])), "step": round(grid[0], 4),
                          "below_0.3": int(np.sum(gap < 0.3)), "below_0.5": int(np.sum(gap < 0.5)),
                          "smallest": [round(float(g), 4) for g in np.sort(gap)[:8]]}
    print("int8 logits:", {k: v["agree_n"] for k, v in result["int8_logits"].items()}, flush=True)

    # 2. the ReLU6 outputs on the [0, 6] / 255 grid, float weights
    q = _path_model(model)
    s_in, z_in = output_grid(-1.0, 1.0)  # TFLite's input grid for [-1, 1]
    result["relu6_grid"] = _pair(ref, q.predict(x, batch_size=16, verbose=0), y, grid)
    result["relu6_grid_and_input_grid"] = _pair(ref, q.predict(on_grid(x, s_in, z_in), batch_size=16, verbose=0),
                                                y, grid)
    print("ReLU6 grid:", result["relu6_grid"], flush=True)

    # 3. each ReLU6 channel on its own grid (ideal per-channel activation quantization), float weights
    steps = {layer.name: np.maximum(np.minimum(m, 6.0), 1e-3) / 255 for layer, m in zip(relus, ch_max)}
    at_cap = [float(np.mean(m >= 6.0 - 1e-3)) for m in ch_max]
    result["relu6_channels_at_cap"] = {"layers": len(relus), "min": round(min(at_cap), 3),
                                       "median": round(float(np.median(at_cap)), 3), "max": round(max(at_cap), 3)}
    qc = _channel_grid_model(model, steps)
    result["per_channel_grid"] = _pair(ref, qc.predict(x, batch_size=16, verbose=0), y, grid)
    print("per-channel grid:", result["per_channel_grid"], flush=True)
    return result

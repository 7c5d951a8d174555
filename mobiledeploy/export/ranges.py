"""TFLite int8 activation ranges other than min/max (``export --tflite-calibration``).

TFLite's converter calibrates in two steps: it runs the representative dataset through the
float model and writes each activation tensor's min and max into the file (the "calibrated"
model, ``_experimental_calibrate_only``), then its quantizer (``mlir_quantize``) derives every
scale and zero point from those statistics. ``narrow_ranges`` sits between the two: it
replaces the recorded [min, max] of activation tensors by a narrower range and leaves the
rest to the quantizer, which keeps the quantized graph valid as it does for min/max (bias
scale = input scale x weight scale with the int32 biases requantized, equal input and output
scales where an operator requires them, ReLU6 and other fused activations clamped on the new
grid).

- ``percentile``: [the 0.01th, the 99.99th] percentile of the tensor's values over the
  calibration samples (``PERCENTILE``), as ONNX Runtime's percentile calibrator does.
- ``mse``: the range, shrunk from [min, max] towards zero by one factor, whose 8-bit grid
  gives the least expected squared error on the tensor's values: rounding (step^2 / 12 per
  value inside the range; none for exact zeros, which the grid holds exactly, e.g. a ReLU's
  zeros) plus clipping (the squared distance to the range for values outside).

Both work on a histogram per tensor (``BINS`` bins over its recorded [min, max], one pass of
the calibrated float model over the samples), and never widen a range or move zero out of it.
The model's input and the path to its outputs (the logits, through reshapes and the softmax)
keep min/max: clipping the top logits turns a clear top-1 into a tie. TensorFlow is never imported.
"""

from __future__ import annotations

import numpy as np

BINS = 2048
PERCENTILE = 99.99  # and 100 - PERCENTILE at the bottom
MSE_FACTORS = np.linspace(0.2, 1.0, 81)  # candidate ranges: [min, max] scaled towards zero
LEVELS = 255  # int8 steps
# operators whose output is their input re-laid out (or the softmax of the logits): the output path keeps min/max
PASS_THROUGH = ("RESHAPE", "SQUEEZE", "EXPAND_DIMS", "SOFTMAX", "QUANTIZE", "DEQUANTIZE", "IDENTITY")


def describe(method: str) -> str:
    """The manifest's line for ``method`` (not min/max)."""
    what = (f"the {100 - PERCENTILE:.2f}th to {PERCENTILE:g}th percentile" if method == "percentile" else
            f"the range of least expected 8-bit error ([min, max] scaled by {MSE_FACTORS[0]:g} to 1)")
    return (f"{what} of each activation tensor over the calibration samples ({BINS}-bin histograms); the input "
            "and the path to the outputs keep min/max")


def narrow_ranges(calibrated: bytes, x: np.ndarray, method: str) -> bytes:
    """``calibrated`` (a calibrate-only TFLite model) with the activation ranges of ``method`` on ``x`` (the
    calibration samples)."""
    from ai_edge_litert import schema_py_generated as schema

    from mobiledeploy.export.signature import aligned_bytes

    if method == "minmax":
        return calibrated
    model = schema.ModelT.InitFromPackedBuf(bytearray(calibrated), 0)
    graph = model.subgraphs[0]
    tensors = _activations(model, graph, schema)
    hists = _histograms(calibrated, x, {i: (float(graph.tensors[i].quantization.min[0]),
                                            float(graph.tensors[i].quantization.max[0])) for i in tensors})
    changed = False
    for i, (lo, hi, counts, zeros) in hists.items():
        new = _percentile(lo, hi, counts) if method == "percentile" else _mse(lo, hi, counts, zeros)
        if new == (lo, hi):
            continue
        q = graph.tensors[i].quantization
        q.min, q.max = np.array([new[0]], np.float32), np.array([new[1]], np.float32)
        changed = True
    return aligned_bytes(model, len(calibrated)) if changed else calibrated


def _activations(model, graph, schema) -> list[int]:
    """Indices of the tensors whose range is chosen: per-tensor statistics, not constants, not the input and
    not on the path to an output."""
    codes = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    producer = {o: op for op in graph.operators or () for o in (op.outputs if op.outputs is not None else ())}
    keep = set(int(i) for i in graph.inputs) | set(int(i) for i in graph.outputs)
    todo = list(graph.outputs)
    while todo:  # back from the outputs through operators that pass values through
        op = producer.get(int(todo.pop()))
        code = op is not None and model.operatorCodes[op.opcodeIndex]
        name = code and codes.get(max(code.builtinCode, code.deprecatedBuiltinCode), "")
        if name in PASS_THROUGH and op.inputs is not None and len(op.inputs) and int(op.inputs[0]) not in keep:
            keep.add(int(op.inputs[0]))
            todo.append(op.inputs[0])
    out = []
    for i, t in enumerate(graph.tensors):
        q, buf = t.quantization, model.buffers[t.buffer] if t.buffer < len(model.buffers) else None
        if (i in keep or q is None or q.min is None or q.max is None or len(q.min) != 1
                or (buf is not None and buf.data is not None and len(buf.data))):
            continue
        if float(q.max[0]) > float(q.min[0]):
            out.append(i)
    return out


def _histograms(calibrated: bytes, x: np.ndarray, ranges: dict) -> dict:
    """{tensor: (min, max, counts, zeros)}: each tensor's values over ``x`` in BINS bins over its recorded range,
    and how many are exactly zero."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=calibrated, experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    counts = {i: np.zeros(BINS, np.int64) for i in ranges}
    zeros = dict.fromkeys(ranges, 0)
    for k in range(len(x)):
        it.set_tensor(inp["index"], x[k:k + 1].astype(inp["dtype"]))
        it.invoke()
        for i, (lo, hi) in ranges.items():
            v = np.clip(it.get_tensor(i).ravel(), lo, hi)
            zeros[i] += int(np.count_nonzero(v == 0))
            counts[i] += np.bincount(np.minimum(((v - lo) * (BINS / (hi - lo))).astype(np.int64), BINS - 1),
                                     minlength=BINS)
    return {i: (*ranges[i], counts[i], zeros[i]) for i in ranges}


def _edges(lo: float, hi: float) -> np.ndarray:
    return lo + (hi - lo) * np.arange(BINS + 1) / BINS


def _percentile(lo: float, hi: float, counts: np.ndarray) -> tuple[float, float]:
    cdf = np.cumsum(counts) / max(1, counts.sum())
    edges = _edges(lo, hi)
    top = float(edges[min(BINS, int(np.searchsorted(cdf, PERCENTILE / 100)) + 1)])
    bottom = float(edges[int(np.searchsorted(cdf, 1 - PERCENTILE / 100, side="right"))])
    return _within(lo, hi, bottom, top)


def _mse(lo: float, hi: float, counts: np.ndarray, zeros: int = 0) -> tuple[float, float]:
    edges = _edges(lo, hi)
    centers = (edges[:-1] + edges[1:]) / 2
    rounded = counts.astype(np.float64)
    if zeros and lo <= 0 <= hi:  # exact zeros stay exact on every candidate grid
        k = min(BINS - 1, int((0 - lo) * BINS / (hi - lo)))
        rounded[k] = max(0.0, rounded[k] - zeros)
    best, best_err = (lo, hi), np.inf
    for f in MSE_FACTORS:
        a, b = min(lo, 0.0) * f, max(hi, 0.0) * f
        step = (b - a) / LEVELS
        outside = np.where(centers > b, centers - b, np.where(centers < a, a - centers, 0.0))
        err = float(np.sum(np.where(outside > 0, counts * outside ** 2, rounded * step ** 2 / 12)))
        if err < best_err:
            best, best_err = (a, b), err
    return _within(lo, hi, *best)


def _within(lo: float, hi: float, a: float, b: float) -> tuple[float, float]:
    """[a, b] never wider than [lo, hi] and holding zero where [lo, hi] does."""
    a, b = max(lo, min(a, 0.0) if lo <= 0 else a), min(hi, max(b, 0.0) if hi >= 0 else b)
    return (lo, hi) if b <= a else (float(a), float(b))

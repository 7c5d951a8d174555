"""Numerical comparison of model outputs: the few metrics every command shares.

All functions take a reference array (usually the Keras / float model's outputs) and
another model's outputs of the same shape, as anything ``numpy.asarray`` accepts.
They never import TensorFlow. Shape mismatches raise ``ValidationError``.
"""

from __future__ import annotations

import math

import numpy as np

from mobiledeploy.errors import UsageError, ValidationError

__all__ = ["max_abs_diff", "mean_abs_diff", "top1_agreement", "sqnr_db", "topk_accuracy"]


def _pair(ref, out) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(ref, dtype=np.float64)
    o = np.asarray(out, dtype=np.float64)
    if r.shape != o.shape:
        raise ValidationError(f"output shape {tuple(o.shape)} differs from the reference shape {tuple(r.shape)}")
    return r, o


def max_abs_diff(ref, out) -> float:
    """Largest absolute elementwise difference (0.0 for empty arrays)."""
    r, o = _pair(ref, out)
    if r.size == 0:
        return 0.0
    return float(np.max(np.abs(r - o)))


def mean_abs_diff(ref, out) -> float:
    """Mean absolute elementwise difference (0.0 for empty arrays)."""
    r, o = _pair(ref, out)
    if r.size == 0:
        return 0.0
    return float(np.mean(np.abs(r - o)))


def _as_rows(a: np.ndarray) -> np.ndarray:
    """(N, C) scores; a 1-D array is one sample."""
    if a.ndim == 0:
        raise ValidationError("expected class scores with at least one dimension, got a scalar")
    return a.reshape(1, -1) if a.ndim == 1 else a.reshape(a.shape[0], int(np.prod(a.shape[1:])))


def top1_agreement(ref, out) -> float:
    """Fraction of samples whose arg-max class is the same in ``ref`` and ``out``.

    Inputs are (N, C) scores (or (C,) for one sample). NaN when there are no samples.
    """
    r, o = _pair(ref, out)
    r, o = _as_rows(r), _as_rows(o)
    if r.shape[0] == 0:
        return float("nan")
    return float(np.mean(np.argmax(r, axis=1) == np.argmax(o, axis=1)))


def sqnr_db(ref, out) -> float:
    """Signal-to-quantization-noise ratio in dB: 10*log10(sum ref^2 / sum (ref-out)^2).

    ``inf`` when ``out`` equals ``ref`` exactly; ``-inf`` when the reference is all zeros
    but the output is not; NaN for empty arrays.
    """
    r, o = _pair(ref, out)
    if r.size == 0:
        return float("nan")
    noise = float(np.sum((r - o) ** 2))
    signal = float(np.sum(r ** 2))
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def topk_accuracy(scores, labels, k: int = 1) -> float:
    """Fraction of samples whose true label is among the ``k`` highest scores.

    ``scores`` is (N, C), ``labels`` (N,) integer class ids. Ties at the k-th score are
    broken by class index (stable sort), as in the usual arg-sort definition.
    NaN when there are no samples.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise UsageError(f"k must be an integer >= 1, received k={k!r}")
    s = _as_rows(np.asarray(scores, dtype=np.float64))
    y = np.asarray(labels).reshape(-1)
    if s.shape[0] != y.shape[0]:
        raise ValidationError(f"{s.shape[0]} score rows but {y.shape[0]} labels")
    if s.shape[0] == 0:
        return float("nan")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValidationError(f"labels must be integer class ids, got dtype {y.dtype}")
    if y.min() < 0 or y.max() >= s.shape[1]:
        raise ValidationError(f"labels must be in [0, {s.shape[1] - 1}], got range [{y.min()}, {y.max()}]")
    k = min(int(k), s.shape[1])
    top = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == y[:, None], axis=1)))

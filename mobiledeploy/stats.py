"""Paired latency ratios with a bootstrap confidence interval, and the decision rule.

A latency comparison is a series of *rounds*; in each round the candidate and the
baseline are each measured once (in their own child processes, order alternating
A B, B A, A B, ...), and each measurement is summarised by its median. The per-round
ratio ``candidate / baseline`` cancels whatever slowed the machine down during that
round (another job, a thermal or frequency change), which is what makes the gate hold
on a shared CI runner.

The estimate is a trimmed geometric mean of the paired ratios: the 20 % trimmed mean
of the log ratios (``scipy.stats.trim_mean``; ``trim=0`` gives the plain geometric mean).
Ratios are multiplicative, so log space makes 0.8x and 1.25x symmetric; trimming drops
the rounds in which one of the two children ran entirely on a disturbed CPU (on a
2-vCPU VM, a busy SMT sibling slows a whole process by ~1.3x), which otherwise widen
the interval for nothing. Its confidence interval is a BCa bootstrap over the rounds
(``scipy.stats.bootstrap``), falling back to the percentile bootstrap when BCa is
undefined (e.g. all rounds equal).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

REGRESSION, PASS, INCONCLUSIVE = "regression", "pass", "inconclusive"


@dataclass(frozen=True)
class RatioEstimate:
    """Geometric-mean ratio candidate/baseline over paired rounds, with its interval."""

    ratio: float
    low: float
    high: float
    rounds: int
    confidence: float
    ratios: tuple[float, ...]

    def to_json(self) -> dict:
        return {"ratio": self.ratio, "low": self.low, "high": self.high, "rounds": self.rounds,
                "confidence": self.confidence, "ratios": list(self.ratios)}


DEFAULT_TRIM = 0.2


def paired_ratio(candidate: Sequence[float], baseline: Sequence[float], *, confidence: float = 0.95,
                 trim: float = DEFAULT_TRIM, resamples: int = 4000, seed: int = 0) -> RatioEstimate:
    """Ratio of paired per-round latencies with a bootstrap confidence interval.

    ``candidate[i]`` and ``baseline[i]`` are the two measurements of round ``i``
    (e.g. medians in ms). Needs at least two rounds for an interval; with one the
    interval is unbounded (nothing can be decided from one pair).
    """
    c = np.asarray(candidate, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    if c.shape != b.shape or c.ndim != 1 or c.size == 0:
        raise ValueError("candidate and baseline need the same, non-zero number of rounds")
    if np.any(c <= 0) or np.any(b <= 0):
        raise ValueError("latencies must be positive")
    from scipy.stats import trim_mean

    logs = np.log(c / b)
    ratios = tuple(float(r) for r in np.exp(logs))
    centre = float(np.exp(trim_mean(logs, trim)))
    if logs.size < 2:
        return RatioEstimate(centre, 0.0, math.inf, 1, confidence, ratios)
    if np.ptp(logs) == 0.0:
        return RatioEstimate(centre, centre, centre, int(logs.size), confidence, ratios)
    low, high = _bootstrap_ci(logs, lambda x, axis=-1: trim_mean(x, trim, axis=axis), confidence=confidence,
                              resamples=resamples, seed=seed)
    return RatioEstimate(centre, float(np.exp(low)), float(np.exp(high)), int(logs.size), confidence, ratios)


def _bootstrap_ci(x: np.ndarray, statistic, *, confidence: float, resamples: int, seed: int) -> tuple[float, float]:
    import warnings

    from scipy import stats

    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # BCa warns (and returns nan) on degenerate samples
            res = stats.bootstrap((x,), statistic, confidence_level=confidence, n_resamples=resamples,
                                  method=method, vectorized=True, rng=np.random.default_rng(seed))
        low, high = res.confidence_interval
        if np.isfinite(low) and np.isfinite(high):
            return float(low), float(high)
    return float(x.min()), float(x.max())  # pragma: no cover - both methods failed


def decide(est: RatioEstimate, limit: float) -> str:
    """``regression`` only when the whole interval lies above ``limit``; ``pass`` when it
    lies at or below it; otherwise ``inconclusive`` (take more rounds, or report it)."""
    if est.low > limit:
        return REGRESSION
    if est.high <= limit:
        return PASS
    return INCONCLUSIVE

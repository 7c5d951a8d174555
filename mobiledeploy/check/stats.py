"""Latency ratios over interleaved rounds, with a bootstrap confidence interval.

In each round the candidate and the baseline are measured once each, each in its own
child process, in alternating order (A B, B A, ...), so slow phases of the machine fall on
both alike. One measurement is the minimum of its runs (``check.latency``), which other
processes can only make slower; what remains is a whole child that runs slow at every run
(a busy SMT sibling, a contended core), an outlier on one side only. So the estimate is
the ratio of a low quantile (default the 25th percentile) of the two models' figures: it
holds while fewer than three quarters of either model's children were disturbed, where a
mean moves with every one (measurements: docs/check.md). The interval is a percentile
bootstrap over whole rounds (``scipy.stats.bootstrap(..., paired=True)``).
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


DEFAULT_QUANTILE = 25.0


def paired_ratio(candidate: Sequence[float], baseline: Sequence[float], *, confidence: float = 0.95,
                 quantile: float = DEFAULT_QUANTILE, resamples: int = 4000, seed: int = 0) -> RatioEstimate:
    """Ratio of the ``quantile``-th percentiles of two series of per-round figures.

    ``candidate[i]`` and ``baseline[i]`` are round ``i``'s figures (ms). Needs at least
    two rounds for an interval; with one, the interval is unbounded (nothing can be
    decided from one pair). ``ratios`` keeps each round's own ratio for reports.
    """
    c = np.asarray(candidate, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    if c.shape != b.shape or c.ndim != 1 or c.size == 0:
        raise ValueError("candidate and baseline need the same, non-zero number of rounds")
    if np.any(c <= 0) or np.any(b <= 0):
        raise ValueError("latencies must be positive")
    if not 0 < quantile <= 100:
        raise ValueError("quantile must be in (0, 100]")

    def log_ratio(x, y, axis=-1):
        return np.log(np.percentile(x, quantile, axis=axis) / np.percentile(y, quantile, axis=axis))

    ratios = tuple(float(r) for r in c / b)
    centre = float(np.exp(log_ratio(c, b)))
    if c.size < 2:
        return RatioEstimate(centre, 0.0, math.inf, 1, confidence, ratios)
    if np.ptp(np.log(c / b)) == 0.0 and np.ptp(c) == 0.0:
        return RatioEstimate(centre, centre, centre, int(c.size), confidence, ratios)
    low, high = _bootstrap_ci((c, b), log_ratio, confidence=confidence, resamples=resamples, seed=seed)
    return RatioEstimate(centre, float(np.exp(low)), float(np.exp(high)), int(c.size), confidence, ratios)


def _bootstrap_ci(data: tuple, statistic, *, confidence: float, resamples: int, seed: int) -> tuple[float, float]:
    import warnings

    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate resamples warn
        res = stats.bootstrap(data, statistic, paired=True, confidence_level=confidence, n_resamples=resamples,
                              method="percentile", vectorized=True, rng=np.random.default_rng(seed))
    low, high = res.confidence_interval
    return float(low), float(high)


def decide(est: RatioEstimate, limit: float) -> str:
    """``regression`` only when the whole interval lies above ``limit``; ``pass`` when it
    lies at or below it; otherwise ``inconclusive`` (take more rounds, or report it)."""
    if est.low > limit:
        return REGRESSION
    if est.high <= limit:
        return PASS
    return INCONCLUSIVE

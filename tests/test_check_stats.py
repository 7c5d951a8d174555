"""The decision rule and the round loop, on synthetic latencies (the real runtimes are
exercised end to end in test_check.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from mobiledeploy.check import stats
from mobiledeploy.check.budgets import LatencySpec


def noisy_pairs(true_ratio, n, *, disturbed=0.0, noise=0.02, seed=0):
    """Per-round figures: small own noise, and a share of child processes that ran
    disturbed from start to end (1.1-1.7x slower), as on a busy shared machine."""
    rng = np.random.default_rng(seed)

    def children(scale):
        x = scale * np.exp(rng.normal(0, noise, n))
        return x * np.where(rng.random(n) < disturbed, rng.uniform(1.1, 1.7, n), 1.0)

    return children(true_ratio * 10), children(10.0)


def test_disturbed_children_do_not_move_the_estimate():
    c, b = noisy_pairs(1.25, 10, disturbed=0.3, seed=1)
    est = stats.paired_ratio(c, b)
    plain = float(np.exp(np.mean(np.log(c / b))))  # what a mean of paired ratios would say
    assert abs(math.log(est.ratio / 1.25)) < 0.05
    assert est.low <= est.ratio <= est.high and est.high / est.low < 1.2
    assert abs(math.log(est.ratio / 1.25)) < abs(math.log(plain / 1.25))
    assert stats.decide(est, 1.10) == stats.REGRESSION
    assert stats.decide(est, 1.60) == stats.PASS
    assert stats.decide(est, est.ratio) == stats.INCONCLUSIVE


def test_interval_is_symmetric_in_log_space():
    c, b = noisy_pairs(2.0, 10, seed=3)
    up, down = stats.paired_ratio(c, b, quantile=50), stats.paired_ratio(b, c, quantile=50)
    assert math.isclose(up.ratio * down.ratio, 1.0, rel_tol=1e-9)
    assert math.isclose(up.low * down.high, 1.0, rel_tol=1e-3)


def test_degenerate_inputs():
    one = stats.paired_ratio([2.0], [1.0])
    assert one.ratio == 2.0 and one.high == math.inf
    assert stats.decide(one, 1.5) == stats.INCONCLUSIVE  # nothing is decided from one pair
    same = stats.paired_ratio([1.0, 1.0, 1.0], [1.0, 1.0, 1.0])
    assert (same.low, same.ratio, same.high) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError):
        stats.paired_ratio([1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        stats.paired_ratio([0.0, 1.0], [1.0, 1.0])


def test_identical_models_never_flagged_on_synthetic_noise():
    flagged = 0
    for seed in range(100):
        c, b = noisy_pairs(1.0, 6, noise=0.05, disturbed=0.3, seed=seed)
        flagged += stats.decide(stats.paired_ratio(c, b, resamples=1000), 1.10) == stats.REGRESSION
    assert flagged <= 1  # 5 % own noise, 30 % disturbed children, a 10 % margin


# ---------------------------------------------------------------- the round loop


@dataclass
class FakeResult:
    status: str
    samples_ms: tuple
    error: str | None = None


class FakeBench:
    """Latency by file name; records the order of calls."""

    def __init__(self, ms: dict[str, float], *, fail: str | None = None, jitter=0.0):
        self.ms, self.fail, self.calls = ms, fail, []
        self.rng = np.random.default_rng(0)
        self.jitter = jitter

    def __call__(self, path, settings):
        name = Path(path).name
        self.calls.append(name)
        if name == self.fail:
            return FakeResult("error", (), "crashed with signal SIGSEGV")
        base = self.ms[name] * np.exp(self.rng.normal(0, self.jitter))
        return FakeResult("ok", tuple(base * (1 + 0.01 * k) for k in range(5)))


def meter(bench, **spec):
    from mobiledeploy.check.latency import LatencyMeter
    from mobiledeploy.targets import load_target

    return LatencyMeter(load_target("host"), LatencySpec(**spec), bench=bench)


def test_rounds_alternate_and_stop_when_decided():
    fb = FakeBench({"a.onnx": 2.0, "b.onnx": 1.0})
    m = meter(fb, rounds=4)
    out = m.ratio_check("x", Path("a.onnx"), Path("b.onnx"), 1.1)
    assert fb.calls == ["a.onnx", "b.onnx", "b.onnx", "a.onnx"] * 2  # A B B A A B B A
    assert out.verdict == "fail" and out.extra["rounds"] == 4
    assert math.isclose(out.measured, 2.0) and out.low <= 2.0 <= out.high


def test_undecided_takes_more_rounds_then_reports_inconclusive():
    fb = FakeBench({"a.onnx": 1.1, "b.onnx": 1.0}, jitter=0.05)
    m = meter(fb, rounds=4, max_rounds=10)
    out = m.ratio_check("x", Path("a.onnx"), Path("b.onnx"), 1.1)  # true ratio sits on the limit
    assert out.verdict == "inconclusive"
    assert out.extra["rounds"] == 10 and len(fb.calls) == 20


def test_time_limit_stops_the_rounds():
    import time

    class Slow(FakeBench):
        def __call__(self, path, settings):
            time.sleep(0.05)
            return super().__call__(path, settings)

    fb = Slow({"a.onnx": 1.1, "b.onnx": 1.0}, jitter=0.05)
    out = meter(fb, rounds=4, max_rounds=40, max_time_s=0.5).ratio_check("x", Path("a.onnx"), Path("b.onnx"), 1.1)
    assert out.verdict == "inconclusive" and out.extra["rounds"] < 10


def test_a_crashing_model_is_an_error_row_not_an_exception():
    fb = FakeBench({"a.onnx": 1.0, "b.onnx": 1.0}, fail="a.onnx")
    out = meter(fb, rounds=4).ratio_check("x", Path("a.onnx"), Path("b.onnx"), 1.1)
    assert out.verdict == "error" and "SIGSEGV" in out.detail

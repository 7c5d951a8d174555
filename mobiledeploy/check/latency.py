"""Latency checks that hold on a noisy machine: interleaved, paired, decided on an interval.

``LatencyMeter.compare(candidate, baseline, limit)`` runs *rounds*. Each round measures
both models once, each in its own child process (``mobiledeploy.bench.core.bench_model``),
in alternating order (A B, B A, A B, ...) so that neither always runs first. A
measurement is summarised by one figure (``[latency] statistic``, default the minimum of
its runs); the ratio is estimated from all rounds' figures (``mobiledeploy.check.stats``).
After ``rounds`` rounds, and after every further two, the bootstrap interval of the
ratio is compared with the limit: ``fail`` when the whole
interval is above it, ``pass`` when it is at or below it, otherwise more rounds until
``max_rounds`` or ``max_time_s``, then ``inconclusive``.

Absolute budgets (``max_latency_ms``) are the same comparison against the yardstick
(``mobiledeploy.check.yardstick``): ``candidate / yardstick <= max_latency_ms /
reference_ms``, i.e. the budget scaled by this machine's yardstick time.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable

from mobiledeploy.bench.core import bench_model, settings_for_target
from mobiledeploy.check import stats
from mobiledeploy.check.budgets import LatencySpec
from mobiledeploy.check.outcome import ERROR, FAIL, INCONCLUSIVE, PASS, CheckOutcome
from mobiledeploy.check.yardstick import YARDSTICK_VERSION, write_yardstick
from mobiledeploy.progress import OnProgress, emit
from mobiledeploy.targets import load_target


def resolve_target(name: str | None, file=None):
    return load_target(name, file=file)


class MeasureError(Exception):
    pass


class LatencyMeter:
    """Runs paired latency comparisons under one target profile."""

    def __init__(self, target, spec: LatencySpec, *, progress: OnProgress | None = None,
                 bench: Callable | None = None):
        self.target, self.spec = target, spec
        self.settings = settings_for_target(target, threads=spec.threads, warmup=spec.warmup,
                                            min_time_s=spec.min_time_s, runs=spec.min_runs, timeout_s=spec.timeout_s)
        self.say = lambda msg: emit(progress, "check", msg)  # a line per measurement step
        self._bench = bench
        self._yard_dir: Path | None = None
        self._yard_ms: list[float] = []

    # -- measuring

    def measure(self, path: Path) -> float:
        """One child-process measurement of ``path``, summarised by ``spec.statistic`` (ms)."""
        if self._bench is None:
            self._bench = bench_model
        r = self._bench(path, self.settings)
        if r.status == "error" or not r.samples_ms:
            raise MeasureError(f"{Path(path).name}: {r.error or 'no samples'}")
        return summarise(r.samples_ms, self.spec.statistic)

    def compare(self, candidate: Path, baseline: Path, limit: float, *, label: str) -> dict:
        """Paired rounds until decided or out of rounds/time. Returns the evidence."""
        spec = self.spec
        c, b = [], []
        t0 = time.monotonic()
        est, verdict = None, INCONCLUSIVE
        for i in range(spec.max_rounds):
            order = ((candidate, c), (baseline, b)) if i % 2 == 0 else ((baseline, b), (candidate, c))
            for path, acc in order:
                acc.append(self.measure(path))
            n = i + 1
            if n < spec.rounds or (n - spec.rounds) % 2:
                continue
            est = stats.paired_ratio(c, b, confidence=spec.confidence, quantile=spec.quantile)
            d = stats.decide(est, limit)
            verdict = {stats.REGRESSION: FAIL, stats.PASS: PASS}.get(d, INCONCLUSIVE)
            elapsed = time.monotonic() - t0
            self.say(f"{label}: {n} rounds, ratio {est.ratio:.3f} [{est.low:.3f}, {est.high:.3f}] "
                     f"vs. {limit:.3f}: {verdict}")
            if verdict != INCONCLUSIVE:
                break
            if elapsed + 2 * elapsed / n > spec.max_time_s:
                break
        return {"estimate": est, "verdict": verdict, "candidate_ms": c, "baseline_ms": b,
                "seconds": round(time.monotonic() - t0, 2)}

    def typical(self, figures) -> float:
        """The figure the estimate uses for one model: the ``quantile``-th percentile."""
        import numpy as np

        return float(np.percentile(np.asarray(figures, dtype=np.float64), self.spec.quantile))

    # -- the two checks

    def ratio_check(self, name: str, candidate: Path, baseline: Path, limit: float) -> CheckOutcome:
        self.say(f"{name}: latency ratio vs. {baseline.name}")
        try:
            ev = self.compare(candidate, baseline, limit, label=f"{name}: latency ratio")
        except MeasureError as e:
            return CheckOutcome(name, "latency_ratio", float(limit), "<=", "x", ERROR, detail=str(e))
        est = ev["estimate"]
        return CheckOutcome(
            name, "latency_ratio", float(limit), "<=", "x", ev["verdict"], measured=est.ratio, low=est.low,
            high=est.high, detail=_detail(ev, f"vs. {baseline.name}"),
            extra={"baseline": str(baseline), "rounds": est.rounds, "confidence": est.confidence,
                   "ratios": list(est.ratios), "candidate_ms": ev["candidate_ms"],
                   "baseline_ms": ev["baseline_ms"], "seconds": ev["seconds"]})

    def absolute_check(self, name: str, candidate: Path, max_ms: float, reference_ms: float) -> CheckOutcome:
        self.say(f"{name}: latency vs. {max_ms} ms (normalised by the yardstick)")
        limit_ratio = max_ms / reference_ms
        try:
            ev = self.compare(candidate, self.yardstick_path(), limit_ratio, label=f"{name}: latency ms")
        except MeasureError as e:
            return CheckOutcome(name, "latency_ms", float(max_ms), "<=", "ms", ERROR, detail=str(e))
        est = ev["estimate"]
        self._yard_ms += ev["baseline_ms"]
        here = self.typical(ev["baseline_ms"])
        scale = here / reference_ms
        return CheckOutcome(
            name, "latency_ms", round(max_ms * scale, 4), "<=", "ms", ev["verdict"], measured=est.ratio * here,
            low=est.low * here, high=est.high * here,
            detail=_detail(ev, f"budget {max_ms} ms x yardstick {here:.3f}/{reference_ms} ms"),
            extra={"max_latency_ms": max_ms, "yardstick_ms": here, "yardstick_reference_ms": reference_ms,
                   "scale": scale, "rounds": est.rounds, "confidence": est.confidence,
                   "ratios": list(est.ratios), "candidate_ms": ev["candidate_ms"],
                   "baseline_ms": ev["baseline_ms"], "seconds": ev["seconds"]})

    # -- the yardstick

    def yardstick_path(self) -> Path:
        if self._yard_dir is None:
            import tempfile

            self._yard_dir = Path(tempfile.mkdtemp(prefix="mobiledeploy-check-"))
        p = self._yard_dir / "yardstick.onnx"
        return p if p.exists() else write_yardstick(self._yard_dir)

    def yardstick_info(self, machine: str | None = None) -> dict:
        here = self.typical(self._yard_ms) if self._yard_ms else None
        return {"version": YARDSTICK_VERSION, "measured_ms": here, "reference_machine": machine}

    def describe(self) -> dict:
        """How latency was measured, for reports."""
        import dataclasses

        return {**dataclasses.asdict(self.spec), "threads": self.settings.threads,
                "label": f"host latency, {self.target.name} settings, {self.settings.threads} thread(s)"}

    def close(self) -> None:
        if self._yard_dir is not None:
            shutil.rmtree(self._yard_dir, ignore_errors=True)
            self._yard_dir = None


def summarise(samples_ms, statistic: str) -> float:
    """One measurement's figure. ``min`` (default) is the run least disturbed by other
    processes: contention only ever adds time, so on a shared machine the minimum of a
    few hundred runs is far steadier than the median (docs/check.md has the figures)."""
    import numpy as np

    a = np.asarray(samples_ms, dtype=np.float64)
    return float({"min": np.min, "median": np.median, "p10": lambda x: np.percentile(x, 10)}[statistic](a))


def _detail(ev: dict, what: str) -> str:
    est = ev["estimate"]
    pct = round(100 * est.confidence)
    return f"{what}; {est.rounds} paired rounds in {ev['seconds']:.0f} s, {pct}% interval"


def measure_yardstick(target, spec: LatencySpec, *, rounds: int = 5,
                      progress: OnProgress | None = None) -> dict:
    """The yardstick's latency here: the figure to write as ``[yardstick] reference_ms``."""
    meter = LatencyMeter(target, spec, progress=progress)
    try:
        path = meter.yardstick_path()
        figures = []
        for i in range(rounds):
            figures.append(meter.measure(path))
            meter.say(f"yardstick round {i + 1}/{rounds}: {figures[-1]:.4f} ms ({spec.statistic})")
    except MeasureError as e:
        from mobiledeploy.errors import RuntimeFailure

        raise RuntimeFailure(f"cannot measure the yardstick: {e}") from None
    finally:
        meter.close()

    return {"target": target.name, "version": YARDSTICK_VERSION, "rounds": rounds, "statistic": spec.statistic,
            "threads": meter.settings.threads, "quantile": spec.quantile, "reference_ms": meter.typical(figures),
            "figures_ms": figures}

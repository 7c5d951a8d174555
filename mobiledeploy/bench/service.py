"""``run_bench(BenchRequest) -> BenchRun``: everything ``mobiledeploy bench`` and ``sweep`` measure.

One call assembles the host latency of every model (``core.bench_models``), the cost
model's device estimates for a target other than the host, top-1 on labelled data,
per-operator profiles and what the emulated CPU was; ``BenchRun.to_json()`` is the
document ``bench --json`` writes. The command line only parses options, calls this and
renders the result (table, Markdown, JSON).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, ContextManager

from mobiledeploy import targets as tg
from mobiledeploy.accuracy.evaluate import accuracy_for
from mobiledeploy.bench.core import (BenchConfig, BenchReport, BenchResult, BenchSettings, bench_models,
                                     settings_for_target)
from mobiledeploy.bench.profile import profile_model
from mobiledeploy.bench.request import BenchRequest
from mobiledeploy.cost.estimate import estimates_for
from mobiledeploy.errors import UsageError
from mobiledeploy.options import check_fields
from mobiledeploy.progress import OnProgress, emit
from mobiledeploy.runtimes import emulate as emu


@dataclass(frozen=True)
class BenchRun:
    """The result of ``run_bench``: the bench report and what was measured beside it."""

    request: BenchRequest
    target: tg.Target
    settings: BenchSettings
    report: BenchReport
    estimates: dict = field(default_factory=dict)  # {model: cost/estimate.estimates_for row}
    accuracy: dict | None = None  # {model: accuracy_for row}, None without data
    profiles: dict = field(default_factory=dict)  # {model: bench/profile.profile_model}
    timings_s: dict = field(default_factory=dict)  # bench_wait, bench, eval (seconds)

    @property
    def results(self) -> tuple[BenchResult, ...]:
        return self.report.results

    @property
    def failed(self) -> tuple[BenchResult, ...]:
        return self.report.failed

    @property
    def emulation(self) -> dict | None:
        """The emulated CPU and the ISA features the runtime saw (None on the host), with the
        profile's note on how close that CPU is to its device when the CPU is the profile's."""
        e = self.report.emulation()
        if e and self.target.emulate == e["cpu"] and self.target.emulate_note:
            e["target_note"] = self.target.emulate_note
        return e

    def extras(self) -> dict[str, dict]:
        """{model: device estimate and accuracy figures}: the columns beside the latency."""
        acc = self.accuracy or {}
        return {m: {**self.estimates.get(m, {}), **acc.get(m, {})} for m in set(self.estimates) | set(acc)}

    def to_json(self) -> dict:
        d = self.report.to_json(samples=self.request.samples)
        d["emulation"] = self.emulation
        if self.target.name != "host" and self.request.estimates:
            d["device_estimates"] = self.estimates
        if self.accuracy is not None:
            d["accuracy"] = self.accuracy
        if self.profiles:
            d["profiles"] = self.profiles
        return d


def run_bench(request: BenchRequest, *, progress: OnProgress | None = None,
              lock: Callable[[], ContextManager] | None = None) -> BenchRun:
    """Bench, then estimate, evaluate and profile per ``request``; see the module docstring.

    Usage errors (a bad profile or emulated CPU, --profile with --emulate) raise before any
    model runs. ``lock``: held around the latency measurement only (sweep's one-at-a-time
    lock per machine). An error in evaluation carries ``stage`` ("eval") and ``bench_run`` (what was measured).
    """
    check_fields(request)  # the declared checks (--threads, --warmup, --runs, --min-time, --timeout, ...)
    if request.profile and request.emulate:
        raise UsageError("--profile times host operators; it cannot be combined with --emulate")
    target = tg.load_target(request.target, file=request.target_file)
    emulate = request.emulate
    if emulate:  # a bad name or a missing environment: one line, before any model runs

        emulate = emu.for_target(emulate, target)
        emu.find_env()
    settings = settings_for_target(target, threads=request.threads, affinity=request.affinity,
                                   xnnpack=request.xnnpack, ort_opt_level=request.ort_opt_level,
                                   warmup=request.warmup, runs=request.runs, min_time_s=request.min_time_s,
                                   timeout_s=request.timeout_s, shapes=dict(request.shapes), emulate=emulate)
    for note in settings.notes:
        emit(progress, "bench", f"note: {note}", "note")
    timings: dict[str, float] = {}
    t = time.perf_counter()
    with (lock or contextlib.nullcontext)():
        timings["bench_wait"] = time.perf_counter() - t
        t = time.perf_counter()
        report = bench_models(BenchConfig(models=tuple(request.models), settings=settings, target=target),
                              progress=progress)
    timings["bench"] = time.perf_counter() - t
    ok = [r.model for r in report.results if r.ok]
    estimates, accuracy, profiles = {}, None, {}
    if target.name != "host" and request.estimates:  # the cost model's estimate for the device

        estimates = estimates_for(ok, target, threads=request.threads, shapes=dict(request.shapes))
        for note in dict.fromkeys(n for x in estimates.values() for n in x.get("notes", ())):
            emit(progress, "bench", f"warning: {note}", "note")  # e.g. a target with priors only
    if request.data:
        t = time.perf_counter()
        try:
            accuracy = accuracy_for(ok, request.data, threads=request.threads, limit=request.eval_limit)
        except Exception as e:  # the caller may keep what was measured (sweep's error row)
            e.stage, e.bench_run = "eval", BenchRun(request=request, target=target, settings=settings,
                                                    report=report, estimates=estimates, timings_s=timings)
            raise
        timings["eval"] = time.perf_counter() - t
    if request.profile:
        for r in report.results:
            if r.ok:
                emit(progress, "profile", f"profile {r.model}", "start")
                profiles[r.model] = profile_model(r.model, settings)
                emit(progress, "profile", f"profile {r.model}: {profiles[r.model].get('status')}")
    return BenchRun(request=request, target=target, settings=settings, report=report, estimates=estimates,
                    accuracy=accuracy, profiles=profiles, timings_s=timings)

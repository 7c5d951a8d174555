"""The check kinds: one row per budget key, with how it is parsed and how it is run.

A row says which ``[[artifact]]`` key it reads (``key``), which ``--skip`` group it
belongs to, how the budget file's value is validated (``parse(ctx, entry, where,
default_target)``, with the budget parser's helpers) and how it is checked
(``run(checker, plan, value) -> CheckOutcome``). The ``checker`` gives the shared
machinery: ``checker.accuracy`` (top-1 on the budget's data, cached per artifact),
``checker.meter`` (paired latency measurements), ``checker.target``, ``checker.budget``
and ``checker.say`` (progress). Adding a check kind is one function and one row here.

This module never imports TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from mobiledeploy.check.outcome import FAIL, PASS, SKIPPED, CheckOutcome

GROUPS = ("size", "accuracy", "latency")


@dataclass(frozen=True)
class CheckKind:
    key: str  # the [[artifact]] key, e.g. "max_size_kb"
    group: str  # size | accuracy | latency (what --skip names)
    parse: Callable[..., Any]  # (ctx, entry, where, default_target) -> value or None
    run: Callable[..., CheckOutcome]  # (checker, plan, value) -> outcome


def holds(measured: float, op: str, limit: float) -> bool:
    """Exact comparison, forgiving only float rounding (1e-9): a limit that is met holds."""
    eps = 1e-9 * max(1.0, abs(limit))
    return measured <= limit + eps if op == "<=" else measured >= limit - eps


def number(**bounds) -> Callable[..., Any]:
    return lambda ctx, e, where, default_target, key: ctx.number(e, key, where, **bounds)


def _per_target(ctx, e, where, default_target, key):
    return ctx.per_target(e, key, where, default_target) or None


# ---------------------------------------------------------------- the kinds


def size(checker, plan, max_kb: float) -> CheckOutcome:
    """Exact: the file's size in KiB (1024 bytes) against ``max_size_kb``."""
    path = plan.artifact.path
    n = path.stat().st_size
    kb = n / 1024
    return CheckOutcome(plan.budget.name, "size", float(max_kb), "<=", "KiB",
                        PASS if holds(kb, "<=", max_kb) else FAIL, measured=kb, detail=f"{n} bytes",
                        extra={"size_bytes": n, "file": str(path)})


def min_top1(checker, plan, limit: float) -> CheckOutcome:
    checker.say(f"{plan.budget.name}: top-1 on {checker.budget.data.source}")
    return checker.accuracy.min_top1(plan.budget.name, plan.artifact, limit)


def int8_drop(checker, plan, limit: float) -> CheckOutcome:
    checker.say(f"{plan.budget.name}: top-1 drop vs. {plan.float_artifact.path.name}")
    return checker.accuracy.drop(plan.budget.name, plan.artifact, plan.float_artifact, limit)


def latency_ratio(checker, plan, limit: float) -> CheckOutcome:
    return checker.meter.ratio_check(plan.budget.name, plan.artifact.path, plan.baseline.path, limit)


def latency_ms(checker, plan, per_target: dict) -> CheckOutcome:
    name = checker.target.name
    if name not in per_target:
        return CheckOutcome(plan.budget.name, "latency_ms", min(per_target.values()), "<=", "ms", SKIPPED,
                            detail=f"no max_latency_ms for target {name!r} (has {', '.join(per_target)})")
    return checker.meter.absolute_check(plan.budget.name, plan.artifact.path, per_target[name],
                                        checker.budget.yardstick_ms[name])


KINDS: dict[str, CheckKind] = {k.key: k for k in [
    CheckKind("max_size_kb", "size", number(low=0, low_open=True), size),
    CheckKind("min_top1", "accuracy", number(low=0, high=1), min_top1),
    CheckKind("max_int8_top1_drop", "accuracy", number(low=-1, high=1), int8_drop),
    CheckKind("max_latency_ratio", "latency", number(low=0, low_open=True), latency_ratio),
    CheckKind("max_latency_ms", "latency", _per_target, latency_ms),
]}

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

from mobiledeploy.check.outcome import ERROR, FAIL, PASS, SKIPPED, CheckOutcome
from mobiledeploy.errors import UsageError
from mobiledeploy.options import ESTIMATE_METHODS

GROUPS = ("size", "accuracy", "latency", "estimate")


@dataclass(frozen=True)
class CheckKind:
    key: str  # the [[artifact]] key, e.g. "max_size_kb"
    group: str  # size | accuracy | latency | estimate (what --skip names)
    parse: Callable[..., Any]  # (ctx, entry, where, default_target) -> value or None
    run: Callable[..., CheckOutcome | list[CheckOutcome]]  # (checker, plan, value) -> outcome(s)
    keys: tuple[str, ...] = ()  # other [[artifact]] keys its parse reads (e.g. "estimate_method")


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


@dataclass(frozen=True)
class EstimateLimit:
    """``max_estimate_ms`` (target -> ms) and ``estimate_method`` of one ``[[artifact]]`` entry."""

    per_target: dict
    method: str = "cost"


def _estimate_limit(ctx, e, where, default_target, key):
    per = ctx.per_target(e, key, where, default_target)
    method = ctx.string(e, "estimate_method", where, choices=ESTIMATE_METHODS)
    if method is not None and not per:
        raise ctx.fail(where, f"estimate_method applies to {key}; give {key} too")
    return EstimateLimit(per, method or "cost") if per else None


def estimate_targets(limit: EstimateLimit, path, run_target, what: str) -> dict:
    """The targets ``limit`` names, loaded (``run_target``, the run's ``--target``/``--target-file``,
    under its own name), with what a kernels estimate needs checked before anything is measured:
    an unknown target, one without ``[kernels]``, LLVM 19 or the ARM environment missing is one
    ``UsageError`` (exit 2)."""
    from mobiledeploy.kernels.estimate import preflight
    from mobiledeploy.targets import load_target

    out = {}
    for name in limit.per_target:
        try:
            out[name] = run_target if name == run_target.name else load_target(name)
            if limit.method == "kernels":
                preflight(path, out[name])
        except UsageError as e:
            raise UsageError(f"{what}: max_estimate_ms on {name} ({limit.method}): {e}") from None
    return out


def estimate_ms(checker, plan, limit: EstimateLimit) -> list[CheckOutcome]:
    """The device estimate on each target ``max_estimate_ms`` names (the cost model, or the emulated
    kernels, cached per artifact, core and runtime version), exact against its limit. No phone is
    needed, so every named target is checked, whatever the run's target."""
    from mobiledeploy.cost.estimate import estimates_for
    from mobiledeploy.kernels.estimate import kernel_estimates_for

    how = kernel_estimates_for if limit.method == "kernels" else estimates_for
    path, out = plan.artifact.path, []
    for name, max_ms in limit.per_target.items():
        checker.say(f"{plan.budget.name}: device estimate on {name} ({limit.method})")
        e = how([path], plan.estimate_targets[name])[str(path)]
        check, extra = f"estimate_ms on {name}", {"target": name, "method": limit.method, "label": e.get("label"),
                                                   "cached": e.get("cached")}
        ms = e.get("estimate_ms")
        if ms is None:
            out.append(CheckOutcome(plan.budget.name, check, float(max_ms), "<=", "ms", ERROR,
                                    detail=e.get("estimate_error") or "no estimate", extra=extra))
            continue
        out.append(CheckOutcome(plan.budget.name, check, float(max_ms), "<=", "ms",
                                PASS if holds(ms, "<=", max_ms) else FAIL, measured=float(ms),
                                detail=f"{ms:.3f} ms [{e['label']}]" + (" (cached)" if e.get("cached") else ""),
                                extra=extra))
    return out


KINDS: dict[str, CheckKind] = {k.key: k for k in [
    CheckKind("max_size_kb", "size", number(low=0, low_open=True), size),
    CheckKind("min_top1", "accuracy", number(low=0, high=1), min_top1),
    CheckKind("max_int8_top1_drop", "accuracy", number(low=-1, high=1), int8_drop),
    CheckKind("max_latency_ratio", "latency", number(low=0, low_open=True), latency_ratio),
    CheckKind("max_latency_ms", "latency", _per_target, latency_ms),
    CheckKind("max_estimate_ms", "estimate", _estimate_limit, estimate_ms, keys=("estimate_method",)),
]}

"""``mobiledeploy check``: size, accuracy and latency budgets for CI.

``run_check(CheckConfig(...)) -> CheckReport``. Everything that can be wrong with the
configuration (budget file, missing artifacts, missing baselines, unknown target) is
found *before* anything is measured and raised as ``UsageError`` (exit 2). Then each
budget becomes one or more checks, each with a verdict:

- ``max_size_kb`` and ``min_top1`` / ``max_int8_top1_drop`` are exact: ``pass`` or
  ``fail`` against the limit (the limit itself holds).
- ``max_latency_ratio`` and ``max_latency_ms`` are decided on a paired ratio with a
  bootstrap interval (``mobiledeploy.check.latency``): ``fail`` only when the whole interval
  lies above the limit, ``pass`` when it lies at or below, otherwise ``inconclusive``
  after more rounds up to the time limit. Inconclusive passes with a warning unless
  ``strict`` (``--strict``) makes it fail.
- ``max_estimate_ms`` is exact against the device estimate on each target it names (the cost
  model, or with ``estimate_method = "kernels"`` the emulated kernels): an estimate, labelled
  as such, not a measurement.
- ``error``: the artifact could not be run (it always fails the check run).

This module never imports TensorFlow.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from mobiledeploy.check.budgets import ArtifactBudget, ArtifactRef, BudgetFile, Selector, load_budgets
from mobiledeploy.check.kinds import GROUPS, KINDS, estimate_targets, holds
from mobiledeploy.check.outcome import ERROR, FAIL, INCONCLUSIVE, PASS, VERDICTS, CheckOutcome
from mobiledeploy.errors import MobiledeployError, RuntimeFailure, UsageError
from mobiledeploy.options import Finite, Names, check_fields, option
from mobiledeploy.progress import OnProgress, emit

# models, data and accuracy (numpy, the runtimes) are imported inside the functions that use
# them: `mobiledeploy check --help` and a check's start load none of them.


@dataclass(frozen=True)
class CheckConfig:
    """What ``run_check`` does; fields declared with ``option`` are also its options (``mobiledeploy.options``)."""

    budget: str | os.PathLike = option(path="file", metavar="FILE", required=False,  # --measure-yardstick: none
                                       help="Budget file (TOML), e.g. models/budgets.toml.")
    artifacts: str | os.PathLike | None = option(  # where budget paths resolve
        None, path="dir", metavar="DIR",
        help="Export directory the budget's artifacts are looked up in (default: the file's `artifacts`, else the "
             "budget file's directory).")
    baseline: str | os.PathLike | None = option(  # for max_latency_ratio
        None, path="any", metavar="DIR|FILE",
        help="Baseline for max_latency_ratio: an export directory (e.g. main's) or one artifact.")
    data: str | os.PathLike | None = option(  # overrides the budget's [data] source
        None, metavar="SOURCE",
        help="Labelled data for accuracy budgets: digits, a folder of class sub-folders or a .npz (default: the "
             "budget's [data] source).")
    target: str | None = None  # --target (default: the budget file's, else host)
    target_file: str | os.PathLike | None = None
    max_time_s: float | None = option(  # overrides [latency] max_time_s
        None, flag="--max-time", check=Finite(0.0, low_open=True), metavar="S",
        help="Seconds per latency check before an undecided one is reported inconclusive (default: the budget's "
             "[latency] max_time_s, else 60).")
    strict: bool = option(False, help="Fail on inconclusive latency checks (default: pass with a warning).")
    skip: tuple[str, ...] = option((), check=Names(GROUPS, empty_ok=True), metavar="KINDS",
                                   help=f"Comma list of check kinds not to run: {', '.join(GROUPS)}.")
    progress: OnProgress | None = field(default=None, compare=False)  # a line per slow step


@dataclass(frozen=True)
class CheckReport:
    budget: str
    target: str
    strict: bool
    outcomes: tuple[CheckOutcome, ...]
    elapsed_s: float
    environment: dict = field(default_factory=dict)

    def broken(self) -> list[CheckOutcome]:
        bad = {FAIL, ERROR} | ({INCONCLUSIVE} if self.strict else set())
        return [o for o in self.outcomes if o.verdict in bad]

    @property
    def ok(self) -> bool:
        return not self.broken()

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def counts(self) -> dict[str, int]:
        return {v: sum(o.verdict == v for o in self.outcomes) for v in VERDICTS}

    def summary(self) -> str:
        c = self.counts()
        parts = [f"{c[v]} {v}" for v in VERDICTS if c[v]]
        head = "all budgets hold" if self.ok else f"{len(self.broken())} of {len(self.outcomes)} checks broken"
        return f"{head} ({', '.join(parts)})"

    def to_json(self) -> dict:
        return {"schema_version": 1, "budget": self.budget, "target": self.target, "strict": self.strict,
                "ok": self.ok, "exit_code": self.exit_code, "summary": self.summary(),
                "counts": self.counts(), "elapsed_s": self.elapsed_s, "environment": self.environment,
                "checks": [o.to_json() for o in self.outcomes]}


# ---------------------------------------------------------------- resolving artifacts


@dataclass(frozen=True)
class Resolved:
    """An artifact file, with what its export manifest says about it (if anything)."""

    path: Path
    format: str
    selector: Selector  # arch/alpha/resolution/format/precision (from the manifest when known)
    preprocessing: str | None = None
    degraded: dict | None = field(default=None, compare=False, hash=False)  # the export's mark (ModelRef.degraded)


def _rows(directory: Path) -> list[Resolved]:
    """The directory's tflite/onnx artifacts from its manifest, through the one artifact resolver."""
    from mobiledeploy.models.artifacts import export_refs

    return [Resolved(Path(r.path), r.format, Selector(arch=r.arch, alpha=r.alpha, resolution=r.resolution,
                                                      format=r.format, precision=r.precision), r.preprocessing,
                     r.degraded)
            for r in export_refs(directory, formats=("tflite", "onnx"))]


def _matches(row: Selector, want: Selector) -> bool:
    for k in ("arch", "alpha", "resolution", "format", "precision"):
        w = getattr(want, k)
        if w is None:
            continue
        have = getattr(row, k)
        if k == "alpha":
            if have is None or abs(have - w) > 1e-9:
                return False
        elif have != w:
            return False
    return True


class Resolver:
    """Turns budget references into files: paths under a root, or selectors over its manifest."""

    def __init__(self, root: Path, *, flag: str, budget_path: Path):
        self.root, self.flag, self.budget_path = root, flag, budget_path
        self._rows: list[Resolved] | None = None

    @property
    def manifest(self) -> bool:
        """Whether the root is an export directory (has a manifest.json)."""
        return self.root.is_dir() and (self.root / "manifest.json").is_file()

    def rows(self) -> list[Resolved]:
        if self._rows is None:
            self._rows = _rows(self.root) if self.manifest else []
        return self._rows

    def by_path(self, rel: str, *, what: str, given: bool = False) -> Resolved:
        """``rel`` from the budget file (kept inside the root), or a path the user ``given`` on the command line."""
        from mobiledeploy.models.artifacts import contained_path
        from mobiledeploy.models.inspect import detect_format

        p = Path(rel) if given else self.root / rel
        if not given:
            contained_path(self.root, rel, key=f"{what} path", source=self.budget_path, must_exist=False)
        if not p.is_file():
            raise UsageError(f"{what}: artifact not found: {str(p)!r} (paths in {self.budget_path.name} "
                             f"resolve under {str(self.root)!r}; set it with {self.flag})")
        fmt = detect_format(p)
        for row in self.rows():
            if row.path.resolve() == p.resolve():
                return row
        return Resolved(p, fmt, Selector(format=fmt))

    def by_selector(self, sel: Selector, *, what: str) -> Resolved:
        if not self.manifest:
            raise UsageError(f"{what}: [{sel.describe()}] is an export config, but {str(self.root)!r} has no "
                             f"manifest.json (give the export directory with {self.flag})")
        found = [r for r in self.rows() if _matches(r.selector, sel)]
        if not found:
            have = "; ".join(r.selector.describe() for r in self.rows()) or "no tflite/onnx artifacts"
            raise UsageError(f"{what}: no artifact matches [{sel.describe()}] in "
                             f"{str(self.root / 'manifest.json')!r} (it has: {have})")
        if len(found) > 1:
            names = ", ".join(r.path.name for r in found)
            raise UsageError(f"{what}: [{sel.describe()}] matches {len(found)} artifacts ({names}); "
                             f"add format/precision to pick one")
        if not found[0].path.is_file():
            raise UsageError(f"{what}: artifact listed in the manifest is missing: {str(found[0].path)!r}")
        return found[0]

    def resolve(self, ref: ArtifactRef, *, what: str, like: Resolved | None = None) -> Resolved:
        """A path, or a selector; a selector is merged over ``like`` (for float/baseline)."""
        if ref.path is not None:
            return self.by_path(ref.path, what=what)
        sel = like.selector.merged(ref.selector) if like is not None else ref.selector
        return self.by_selector(sel, what=what)


@dataclass(frozen=True)
class Checker:
    """What every check kind's ``run`` gets: the budget file and the shared measuring machinery."""

    budget: BudgetFile
    target: object
    accuracy: "_Accuracy"
    meter: object
    say: Callable[[str], None]


@dataclass(frozen=True)
class Plan:
    """One budget entry with every file it needs, resolved before anything is measured."""

    budget: ArtifactBudget
    artifact: Resolved
    float_artifact: Resolved | None = None
    baseline: Resolved | None = None
    estimate_targets: dict = field(default_factory=dict)  # max_estimate_ms: target name -> Target


def plan_checks(bf: BudgetFile, cfg: CheckConfig, *, target: str) -> list[Plan]:
    if cfg.artifacts is not None:  # typed on the command line: yours to choose
        root, flag = Path(cfg.artifacts), "--artifacts"
        if not root.is_dir():
            raise UsageError(f"artifacts directory not found: {str(cfg.artifacts)!r} (--artifacts)")
    else:  # named by the budget file: kept inside its directory or the working directory
        root, flag = artifacts_root(bf), "--artifacts, or artifacts = ... in the budget file"
    res = Resolver(root, flag=flag, budget_path=bf.path)
    base_file = base_res = None
    if cfg.baseline is not None:
        bp = Path(cfg.baseline)
        if bp.is_file():
            base_file = res.by_path(str(bp.resolve()), what="--baseline", given=True)
        elif bp.is_dir():
            base_res = Resolver(bp, flag="--baseline", budget_path=bf.path)
        else:
            raise UsageError(f"baseline not found: {str(bp)!r} (--baseline: an export directory or an artifact)")
    plans = []
    for b in bf.budgets:
        what = f"budget {b.name!r}"
        art = res.resolve(b.ref, what=what)
        flt = base = None
        lim = b.limits
        if "max_int8_top1_drop" in lim and "accuracy" not in cfg.skip:
            if b.float_ref is not None:
                flt = res.resolve(b.float_ref, what=f"{what} (float)", like=art)
            elif res.manifest and art.selector.precision is not None:
                flt = res.by_selector(art.selector.merged(Selector(precision="fp32")), what=f"{what} (float)")
            else:
                raise UsageError(f"{what}: max_int8_top1_drop needs the float artifact: set float = \"...\" "
                                 f"in the budget entry (or check an export directory with a manifest)")
        if "max_latency_ratio" in lim and "latency" not in cfg.skip:
            base = _resolve_baseline(b, art, res, base_file, base_res, what)
        if "latency" not in cfg.skip and target in lim.get("max_latency_ms", {}) \
                and target not in bf.yardstick_ms:
            raise UsageError(f"{bf.path}: budget {b.name!r} has max_latency_ms for target {target!r} but "
                             f"[yardstick] has no reference_ms for it; measure it on the machine the budget "
                             f"was written on with `mobiledeploy check --measure-yardstick --target {target}`")
        plans.append(Plan(b, art, flt, base))
    return plans


BUILTIN_SOURCES = ("digits", "random")  # data sources that are names, not paths


def artifacts_root(bf: BudgetFile) -> Path:
    """The budget's ``artifacts`` directory (default: the budget file's own), inside the allowed roots."""
    from mobiledeploy.models.artifacts import budget_path

    if bf.artifacts is None:
        return bf.base_dir
    return budget_path(bf.path, bf.artifacts, key="artifacts", flag="--artifacts DIR")


def data_source(bf: BudgetFile, override: str | os.PathLike | None) -> str:
    """``--data`` as typed, else the budget's ``[data] source``: a built-in name, or a path inside the
    budget file's directory or the working directory (relative to the budget file)."""
    from mobiledeploy.models.artifacts import budget_path

    if override is not None:
        return str(override)
    if bf.data.source in BUILTIN_SOURCES:
        return bf.data.source
    return str(budget_path(bf.path, bf.data.source, key="[data] source", flag="--data"))


def _resolve_baseline(b: ArtifactBudget, art: Resolved, res: Resolver, base_file: Resolved | None,
                      base_res: Resolver | None, what: str) -> Resolved:
    what = f"{what} (baseline)"
    if base_file is not None:
        return base_file
    if base_res is not None:
        if b.baseline is not None:
            return base_res.resolve(b.baseline, what=what, like=art)
        if (base_res.root / art.path.name).is_file() or not base_res.manifest:
            return base_res.by_path(art.path.name, what=what)
        return base_res.by_selector(art.selector, what=what)
    if b.baseline is not None:
        return res.resolve(b.baseline, what=what, like=art)
    raise UsageError(f"{what}: max_latency_ratio needs a baseline: pass --baseline DIR (e.g. the main "
                     f"branch's export) or set baseline = ... in the budget entry")


# ---------------------------------------------------------------- running


def run_check(cfg: CheckConfig) -> CheckReport:
    """Validate everything, then run every check. Raises UsageError on configuration errors."""
    import time

    from mobiledeploy.check import latency

    t0 = time.monotonic()
    check_fields(cfg)  # the declared checks (--skip's kinds, --max-time)
    bf = load_budgets(cfg.budget)
    bf = _replace(bf, data=_replace(bf.data, source=data_source(bf, cfg.data)))
    target = latency.resolve_target(cfg.target or bf.target, cfg.target_file)
    plans = plan_checks(bf, cfg, target=target.name)
    if "estimate" not in cfg.skip:  # the estimates' targets (and, for kernels, their tools) before measuring
        plans = [_replace(p, estimate_targets=estimate_targets(p.budget.limits["max_estimate_ms"], p.artifact.path,
                                                               target, f"budget {p.budget.name!r}"))
                 if "max_estimate_ms" in p.budget.limits else p for p in plans]
    def say(msg: str) -> None:
        emit(cfg.progress, "check", msg)

    spec = bf.latency if cfg.max_time_s is None else _replace(bf.latency, max_time_s=cfg.max_time_s)
    outcomes: list[CheckOutcome] = []
    meter = latency.LatencyMeter(target, spec, progress=cfg.progress)
    checker = Checker(budget=bf, target=target, accuracy=_Accuracy(bf), meter=meter, say=say)
    try:
        for p in plans:
            for key, value in p.budget.limits.items():
                if KINDS[key].group not in cfg.skip:
                    res = KINDS[key].run(checker, p, value)
                    for o in res if isinstance(res, list) else [res]:  # with the export's mark on its artifact
                        outcomes.append(_replace(o, extra={"degraded": p.artifact.degraded, **o.extra}))
    finally:
        meter.close()
    env = {"target": target.to_json() if hasattr(target, "to_json") else target.name,
           "latency": meter.describe(), "yardstick": meter.yardstick_info(bf.yardstick_machine),
           "data": {"source": bf.data.source, "split": bf.data.split, "limit": bf.data.limit}}
    return CheckReport(budget=str(bf.path), target=target.name, strict=cfg.strict, outcomes=tuple(outcomes),
                       elapsed_s=round(time.monotonic() - t0, 2), environment=env)


def _replace(obj, **kw):
    import dataclasses

    return dataclasses.replace(obj, **kw)


def _input_resolution(path: Path) -> int:
    """H of the model's NHWC input, read from the file without running it."""
    from mobiledeploy.models.inspect import inputs

    try:
        return int(inputs(path)[0].shape[1])
    except (UsageError, IndexError, TypeError) as e:  # an artifact that cannot be read: its row says so
        raise RuntimeFailure(f"cannot read the input shape of {path.name}: {e}") from None


class _Accuracy:
    """Top-1 of artifacts on the budget's data, each data set loaded once per resolution."""

    def __init__(self, bf: BudgetFile):
        self.bf = bf
        self._data: dict = {}
        self._top1: dict = {}

    def dataset(self, art: Resolved, resolution: int):
        from mobiledeploy.data.datasets import load_dataset

        pre = self.bf.data.preprocessing or art.preprocessing or "mobilenet"
        key = (resolution, pre)
        if key not in self._data:
            d = self.bf.data
            self._data[key] = load_dataset(d.source, resolution=resolution, preprocessing=pre, split=d.split,
                                           limit=d.limit, labelled=True)
        return self._data[key]

    def top1(self, art: Resolved) -> tuple[float, int]:
        """(top-1, samples) from ``mobiledeploy.accuracy.evaluate`` (the model runs in a child process)."""
        key = art.path.resolve()
        if key not in self._top1:
            from mobiledeploy.accuracy.evaluate import evaluate

            res = art.selector.resolution or _input_resolution(art.path)
            r = evaluate([str(art.path)], self.dataset(art, res)).results[0]
            if r.status != "ok" or r.top1 is None:
                raise RuntimeFailure(f"cannot evaluate {art.path.name}: {r.error or 'no result'}")
            self._top1[key] = (float(r.top1), int(r.samples))
        return self._top1[key]

    def min_top1(self, name: str, art: Resolved, limit: float) -> CheckOutcome:
        try:
            top1, n = self.top1(art)
        except MobiledeployError as e:
            if isinstance(e, UsageError):
                raise
            return CheckOutcome(name, "top1", float(limit), ">=", "", ERROR, detail=str(e))
        return CheckOutcome(name, "top1", float(limit), ">=", "", PASS if holds(top1, ">=", limit) else FAIL,
                            measured=top1, detail=f"{n} samples of {self.bf.data.source}/{self.bf.data.split}",
                            extra={"samples": n})

    def drop(self, name: str, art: Resolved, flt: Resolved, limit: float) -> CheckOutcome:
        try:
            q, n = self.top1(art)
            f, _ = self.top1(flt)
        except MobiledeployError as e:
            if isinstance(e, UsageError):
                raise
            return CheckOutcome(name, "int8_top1_drop", float(limit), "<=", "", ERROR, detail=str(e))
        drop = f - q
        return CheckOutcome(name, "int8_top1_drop", float(limit), "<=", "", PASS if holds(drop, "<=", limit) else FAIL,
                            measured=drop, detail=f"top-1 {q:.4f} vs. {f:.4f} ({flt.path.name}), {n} samples",
                            extra={"top1": q, "float_top1": f, "float_file": str(flt.path), "samples": n})

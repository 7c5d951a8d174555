"""Budget files: the TOML schema of ``mobiledeploy check`` and its parser.

A budget file names artifacts (by path, or by export config looked up in an export
directory's ``manifest.json``) and the limits each must hold; docs/check.md shows every
key. Unknown keys anywhere are a ``UsageError`` naming the key and the file: a typo in a
budget must never silently disable a gate. Parsing only reads the file; resolving
artifact paths against the file system is ``mobiledeploy.check.core``'s job.
"""

from __future__ import annotations

import math
import os
import reprlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mobiledeploy.check.kinds import KINDS
from mobiledeploy.errors import UsageError
from mobiledeploy.guards import regular_file

SCHEMA_VERSION = 1
MAX_BUDGET_BYTES = 256 * 2**10  # a budget file is a few KiB; this bounds the time to read any file to about a second
MAX_ARTIFACTS = 1000  # [[artifact]] entries in one file
MAX_TARGETS = 100  # targets in one per-target table (reference_ms, max_latency_ms)
MAX_NAME = 200  # characters in a name or a target name
_SHOW = reprlib.Repr()
_SHOW.maxstring = _SHOW.maxother = 60


def _show(v) -> str:
    """A value for an error message: its repr, cut to a line."""
    return _SHOW.repr(v)
FORMATS = ("tflite", "onnx")
PRECISIONS = ("fp32", "fp16", "dynamic", "int8")
SELECTOR_KEYS = ("arch", "alpha", "resolution", "format", "precision")


@dataclass(frozen=True)
class Selector:
    """Picks one artifact from an export manifest; None fields match anything."""

    arch: str | None = None
    alpha: float | None = None
    resolution: int | None = None
    format: str | None = None
    precision: str | None = None

    def is_empty(self) -> bool:
        return all(getattr(self, k) is None for k in SELECTOR_KEYS)

    def merged(self, overrides: "Selector") -> "Selector":
        return Selector(**{k: getattr(overrides, k) if getattr(overrides, k) is not None else getattr(self, k)
                           for k in SELECTOR_KEYS})

    def describe(self) -> str:
        return ", ".join(f"{k}={getattr(self, k)}" for k in SELECTOR_KEYS if getattr(self, k) is not None) or "any"

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in SELECTOR_KEYS if getattr(self, k) is not None}


@dataclass(frozen=True)
class ArtifactRef:
    """Where an artifact comes from: a path, or a selector over a manifest."""

    path: str | None = None
    selector: Selector = field(default_factory=Selector)

    def describe(self) -> str:
        return self.path if self.path is not None else f"[{self.selector.describe()}]"


@dataclass(frozen=True)
class ArtifactBudget:
    """One ``[[artifact]]`` entry: which artifact, and its limits (None = not checked)."""

    name: str
    ref: ArtifactRef
    limits: dict = field(default_factory=dict)  # check kind key (check/kinds.py) -> its parsed limit
    baseline: ArtifactRef | None = None  # for max_latency_ratio (path, or selector overrides)
    float_ref: ArtifactRef | None = None  # for max_int8_top1_drop (default: fp32 in the manifest)


@dataclass(frozen=True)
class DataSpec:
    source: str = "digits"
    split: str = "test"
    limit: int | None = None
    preprocessing: str | None = None  # None: the manifest's, else "mobilenet"


@dataclass(frozen=True)
class LatencySpec:
    """How a latency comparison is run and decided (see ``mobiledeploy.check.stats``)."""

    rounds: int = 6  # paired rounds before the first decision
    max_rounds: int = 40
    max_time_s: float = 60.0  # per check: stop taking rounds after this
    confidence: float = 0.95
    quantile: float = 25.0  # ratio of this percentile of each model's per-round figures (stats.py)
    threads: int | None = 1  # threads per measurement; None = the target profile's ("target")
    statistic: str = "min"  # what summarises one measurement: min | p10 | median
    warmup: int = 5
    min_runs: int = 20  # each child measurement times at least this many runs...
    min_time_s: float = 0.3  # ...and for at least this long
    timeout_s: float = 60.0  # per child measurement


@dataclass(frozen=True)
class BudgetFile:
    path: Path
    artifacts_dir: Path | None  # joined to the budget file's directory; check.core.artifacts_root keeps it inside
    target: str | None
    data: DataSpec
    latency: LatencySpec
    yardstick_ms: dict[str, float]  # target -> reference yardstick median (ms)
    yardstick_machine: str | None
    budgets: tuple[ArtifactBudget, ...]
    artifacts: str | None = None  # the ``artifacts`` value as written

    @property
    def base_dir(self) -> Path:
        return self.path.parent


# ---------------------------------------------------------------- parsing

_TOP_KEYS = {"schema_version", "artifacts", "target", "data", "latency", "yardstick", "artifact"}
_DATA_KEYS = {"source", "split", "limit", "preprocessing"}
_LATENCY_KEYS = {"rounds", "max_rounds", "max_time_s", "confidence", "quantile", "threads", "statistic", "warmup", "min_runs",
                 "min_time_s", "timeout_s"}
STATISTICS = ("min", "p10", "median")
_YARDSTICK_KEYS = {"reference_ms", "machine"}
_REF_KEYS = {"name", "path", "baseline", "float", *SELECTOR_KEYS}


class _Ctx:
    """Error messages that name the file and the key."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, where: str, msg: str) -> UsageError:
        return UsageError(f"{self.path}: {where}: {msg}")

    def check_keys(self, table: Any, allowed: set[str], where: str) -> dict:
        if not isinstance(table, dict):
            raise self.fail(where, f"expected a table, got {type(table).__name__}")
        unknown = sorted(set(table) - allowed)
        if unknown:
            raise self.fail(where, f"unknown key {_show(unknown[0])} (allowed: {', '.join(sorted(allowed))})")
        return table

    def number(self, table: dict, key: str, where: str, *, low: float | None = None, high: float | None = None,
               low_open: bool = False, integer: bool = False) -> float | int | None:
        if key not in table:
            return None
        v = table[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
            raise self.fail(where, f"{key} = {_show(v)}: expected {'an integer' if integer else 'a number'}")
        if isinstance(v, float) and not math.isfinite(v):
            raise self.fail(where, f"{key} = {_show(v)}: expected a finite number")
        if low is not None and (v <= low if low_open else v < low):
            raise self.fail(where, f"{key} = {_show(v)}: must be {'>' if low_open else '>='} {low}")
        if high is not None and v > high:
            raise self.fail(where, f"{key} = {_show(v)}: must be <= {high}")
        return v

    def string(self, table: dict, key: str, where: str, *, choices: tuple[str, ...] | None = None) -> str | None:
        if key not in table:
            return None
        v = table[key]
        if not isinstance(v, str) or not v:
            raise self.fail(where, f"{key} = {_show(v)}: expected a non-empty string")
        if choices is not None and v not in choices:
            raise self.fail(where, f"{key} = {_show(v)}: choose from {', '.join(choices)}")
        return v

    def per_target(self, table: dict, key: str, where: str, default_target: str) -> dict[str, float]:
        """A float (for the file's default target) or a table target -> positive float."""
        if key not in table:
            return {}
        v = table[key]
        if isinstance(v, dict):
            if len(v) > MAX_TARGETS:
                raise self.fail(where, f"{key} names {len(v):,} targets; at most {MAX_TARGETS} are supported")
            out = {}
            for tname in v:
                if len(tname) > MAX_NAME:
                    raise self.fail(where, f"{key}: target name {_show(tname)} is longer than {MAX_NAME} characters")
                out[tname] = self.number(v, tname, f"{where}.{key}", low=0, low_open=True)
            if not out:
                raise self.fail(where, f"{key} is an empty table; give target = milliseconds")
            return out
        return {default_target: self.number(table, key, where, low=0, low_open=True)}


def load_budgets(path: str | os.PathLike) -> BudgetFile:
    """Read and validate a budget file. Raises ``UsageError`` (exit 2) on any problem."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"budget file not found: {str(p)!r} (--budget)")
    if p.is_dir():
        raise UsageError(f"budget file {str(p)!r} is a directory (--budget)")

    regular_file(p, what="budget file", max_bytes=MAX_BUDGET_BYTES)  # no FIFO, device, empty or huge file
    try:
        with open(p, "rb") as f:
            doc = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{p}: not valid TOML: {e}") from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise UsageError(f"{p}: arrays or inline tables nested too deeply to be a budget file") from None
    except UnicodeDecodeError:
        raise UsageError(f"budget file {str(p)!r} (--budget) is not UTF-8 text") from None
    except OSError as e:
        raise UsageError(f"cannot read budget file {str(p)!r}: {e.strerror or e}") from None
    return parse_budgets(doc, path=p)


def parse_budgets(doc: dict, *, path: Path) -> BudgetFile:
    ctx = _Ctx(path)
    ctx.check_keys(doc, _TOP_KEYS, "top level")
    version = ctx.number(doc, "schema_version", "top level", integer=True)
    if version is not None and version != SCHEMA_VERSION:
        raise ctx.fail("top level", f"schema_version = {version}: this mobiledeploy reads version {SCHEMA_VERSION}")
    target = ctx.string(doc, "target", "top level")
    artifacts = ctx.string(doc, "artifacts", "top level")
    artifacts_dir = (path.parent / artifacts) if artifacts is not None else None

    d = ctx.check_keys(doc.get("data", {}), _DATA_KEYS, "[data]")
    data = DataSpec(source=ctx.string(d, "source", "[data]") or "digits",
                    split=ctx.string(d, "split", "[data]", choices=("train", "test", "all")) or "test",
                    limit=ctx.number(d, "limit", "[data]", low=1, integer=True),
                    preprocessing=ctx.string(d, "preprocessing", "[data]"))

    lt = ctx.check_keys(doc.get("latency", {}), _LATENCY_KEYS, "[latency]")
    defaults = LatencySpec()
    latency = LatencySpec(
        rounds=_or(ctx.number(lt, "rounds", "[latency]", low=3, integer=True), defaults.rounds),
        max_rounds=_or(ctx.number(lt, "max_rounds", "[latency]", low=3, integer=True), defaults.max_rounds),
        max_time_s=_or(ctx.number(lt, "max_time_s", "[latency]", low=0, low_open=True), defaults.max_time_s),
        confidence=_or(ctx.number(lt, "confidence", "[latency]", low=0.5, high=0.999), defaults.confidence),
        quantile=_or(ctx.number(lt, "quantile", "[latency]", low=0, low_open=True, high=100), defaults.quantile),
        threads=_threads(ctx, lt, defaults.threads),
        statistic=ctx.string(lt, "statistic", "[latency]", choices=STATISTICS) or defaults.statistic,
        warmup=_or(ctx.number(lt, "warmup", "[latency]", low=0, integer=True), defaults.warmup),
        min_runs=_or(ctx.number(lt, "min_runs", "[latency]", low=1, integer=True), defaults.min_runs),
        min_time_s=_or(ctx.number(lt, "min_time_s", "[latency]", low=0, low_open=True), defaults.min_time_s),
        timeout_s=_or(ctx.number(lt, "timeout_s", "[latency]", low=0, low_open=True), defaults.timeout_s),
    )
    if latency.max_rounds < latency.rounds:
        raise ctx.fail("[latency]", f"max_rounds = {latency.max_rounds} is below rounds = {latency.rounds}")

    default_target = target or "host"
    y = ctx.check_keys(doc.get("yardstick", {}), _YARDSTICK_KEYS, "[yardstick]")
    yardstick_ms = ctx.per_target(y, "reference_ms", "[yardstick]", default_target)
    machine = ctx.string(y, "machine", "[yardstick]")

    entries = doc.get("artifact", [])
    if isinstance(entries, dict) or not isinstance(entries, list):
        raise ctx.fail("top level", "artifact must be an array of tables: write [[artifact]]")
    if not entries:
        raise ctx.fail("top level", "no [[artifact]] entries: nothing to check")
    if len(entries) > MAX_ARTIFACTS:
        raise ctx.fail("top level", f"{len(entries):,} [[artifact]] entries; at most {MAX_ARTIFACTS:,} are "
                                    "supported in one budget file")
    budgets = []
    names: set[str] = set()
    for i, e in enumerate(entries):
        b = _parse_artifact(ctx, e, i, default_target)
        if b.name in names:
            raise ctx.fail(f"[[artifact]] #{i + 1}", f"duplicate name {_show(b.name)}; give each entry its own name")
        names.add(b.name)
        budgets.append(b)
    return BudgetFile(path=path, artifacts_dir=artifacts_dir, target=target, data=data, latency=latency,
                      yardstick_ms=yardstick_ms, yardstick_machine=machine, budgets=tuple(budgets),
                      artifacts=artifacts)


def _threads(ctx: _Ctx, lt: dict, default: int | None) -> int | None:
    if lt.get("threads") == "target":
        return None
    if isinstance(lt.get("threads"), str):
        raise ctx.fail("[latency]", f"threads = {_show(lt['threads'])}: expected an integer or \"target\"")
    return _or(ctx.number(lt, "threads", "[latency]", low=1, integer=True), default)


def _or(v, default):
    return default if v is None else v


def _parse_selector(ctx: _Ctx, t: dict, where: str) -> Selector:
    alpha = ctx.number(t, "alpha", where, low=0, low_open=True)
    return Selector(arch=ctx.string(t, "arch", where),
                    alpha=float(alpha) if alpha is not None else None,
                    resolution=ctx.number(t, "resolution", where, low=1, integer=True),
                    format=ctx.string(t, "format", where, choices=FORMATS),
                    precision=ctx.string(t, "precision", where, choices=PRECISIONS))


def _parse_ref(ctx: _Ctx, t: dict, key: str, where: str) -> ArtifactRef | None:
    """``key = "path"`` or ``key = {precision = "fp32", ...}`` (selector overrides)."""
    if key not in t:
        return None
    v = t[key]
    if isinstance(v, str) and v:
        return ArtifactRef(path=v)
    if isinstance(v, dict):
        sub = f"{where}.{key}"
        ctx.check_keys(v, set(SELECTOR_KEYS), sub)
        sel = _parse_selector(ctx, v, sub)
        if sel.is_empty():
            raise ctx.fail(sub, "empty table; give a path or some of " + ", ".join(SELECTOR_KEYS))
        return ArtifactRef(selector=sel)
    raise ctx.fail(where, f"{key} = {_show(v)}: expected a path or a table of {', '.join(SELECTOR_KEYS)}")


def _parse_artifact(ctx: _Ctx, e: Any, i: int, default_target: str) -> ArtifactBudget:
    where = f"[[artifact]] #{i + 1}"

    ctx.check_keys(e, _REF_KEYS | set(KINDS) | {k for kind in KINDS.values() for k in kind.keys}, where)
    path = ctx.string(e, "path", where)
    sel = _parse_selector(ctx, e, where)
    if path is not None and not sel.is_empty():
        raise ctx.fail(where, "give either path or an export config (arch/alpha/resolution/format/precision), "
                              "not both")
    if path is None and sel.is_empty():
        raise ctx.fail(where, "name the artifact: path = \"...\" or an export config "
                              "(arch/alpha/resolution/format/precision)")
    ref = ArtifactRef(path=path, selector=sel)
    name = ctx.string(e, "name", where) or ref.describe()
    if len(name) > MAX_NAME:
        raise ctx.fail(where, f"name {_show(name)} is longer than {MAX_NAME} characters")
    limits = {k: kind.parse(ctx, e, where, default_target, k) for k, kind in KINDS.items()}
    b = ArtifactBudget(name=name, ref=ref, limits={k: v for k, v in limits.items() if v is not None},
                       baseline=_parse_ref(ctx, e, "baseline", where), float_ref=_parse_ref(ctx, e, "float", where))
    if not b.limits:
        raise ctx.fail(where, f"{_show(name)} has no limits; give at least one of {', '.join(KINDS)}")
    return b

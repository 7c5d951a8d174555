"""Options declared once: a config field states its flag, help and check beside its default.

``option(default, help=..., check=...)`` is a dataclass field. The config's ``check()``
runs the declared checks (``check_fields``) and the command line builds its
``@click.option`` from the same field (``cli/common.click_options``), so a default, a help
line or a range is written in one place. No Click here: the library does not need it.

A check is a callable ``check(value, flag)`` that raises ``UsageError``; the CLI turns the
known ones into the matching Click type (``AtLeast`` -> an integer range, ``OneOf`` -> a
choice, ``Names`` -> a checked comma list, ``Seconds`` -> a duration).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from mobiledeploy.errors import UsageError


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class AtLeast:
    """An integer >= ``low``."""

    low: int

    def __call__(self, v, flag: str) -> None:
        if not isinstance(v, int) or isinstance(v, bool) or v < self.low:
            raise UsageError(f"{flag} must be an integer >= {self.low}, received {v!r}")


@dataclass(frozen=True)
class Finite:
    """A finite number in [low, high] (``low_open``: > low, ``high_open``: < high)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def describe(self) -> str:
        if self.high is None:
            return "" if self.low is None else f" {'>' if self.low_open else '>='} {self.low:g}"
        lo = "-inf" if self.low is None else f"{self.low:g}"
        return (f" in {'(' if self.low_open or self.low is None else '['}{lo}, {self.high:g}"
                f"{')' if self.high_open else ']'}")

    def __call__(self, v, flag: str) -> None:
        ok = _number(v) and math.isfinite(v)
        if ok and self.low is not None:
            ok = v > self.low if self.low_open else v >= self.low
        if ok and self.high is not None:
            ok = v < self.high if self.high_open else v <= self.high
        if not ok:
            raise UsageError(f"{flag} must be a finite number{self.describe()}, received {v!r}")


@dataclass(frozen=True)
class Seconds(Finite):
    """A duration: a finite number of seconds > 0 and at most a day."""

    low: float | None = 0.0
    high: float | None = 86400.0
    low_open: bool = True


@dataclass(frozen=True)
class OneOf:
    """One of ``choices`` (a tuple, or a mapping read when checked: a registry that grows)."""

    choices: tuple[str, ...] | Mapping
    what: str = "value"

    def __call__(self, v, flag: str) -> None:
        allowed = tuple(self.choices)
        if v not in allowed:
            raise UsageError(f"unknown {self.what} {v!r} ({flag}); choose from {', '.join(allowed)}")


@dataclass(frozen=True)
class Names:
    """A tuple of names from ``choices`` (a comma list on the command line), non-empty unless ``empty_ok``."""

    choices: tuple[str, ...] | Mapping
    empty_ok: bool = False

    def __call__(self, v, flag: str) -> None:
        allowed = tuple(self.choices)
        if not v and not self.empty_ok:
            raise UsageError(f"{flag} is empty; choose from {', '.join(allowed)}")
        bad = [x for x in v if x not in allowed]
        if bad:
            raise UsageError(f"unknown value {bad[0]!r} for {flag}; choose from {', '.join(allowed)}")


def option(default: Any = MISSING, *, help: str | None, flag: str | None = None, check: Callable | None = None,
           type: type | None = None, metavar: str | None = None, path: str | None = None, exists: bool = False,
           flag_value: Any = MISSING, cli_default: Any = MISSING, parse: Callable[[Any], Any] | None = None,
           show_default: bool | None = None, required: bool | None = None, multiple: bool = False, **kw) -> Any:
    """A config field with its command-line option.

    ``flag`` (default ``--field-name``; ``--x/--no-x`` for a switch), ``help``, ``check``;
    ``type`` for an optional number (default None); ``path`` ("file", "dir" or "any", with
    ``exists``) for a path; ``flag_value`` for a flag that sets the field to that value
    (``--per-tensor`` sets ``per_channel`` False); ``cli_default`` and ``parse`` when the
    command line spells the value as text (``--float-layers auto`` -> None): ``parse(cli_default)``
    must equal ``default``. ``required`` (default: when there is no default) is the option's; ``multiple``:
    the flag may be repeated (``parse`` then gets the tuple of values).
    """
    meta = {"help": help, "flag": flag, "check": check, "type": type, "metavar": metavar, "path": path,
            "exists": exists, "flag_value": flag_value, "cli_default": cli_default, "parse": parse,
            "show_default": show_default, "required": required, "multiple": multiple}
    return field(default=default, metadata={"option": meta}, **kw)


def declared(config_cls) -> dict[str, Any]:
    """The fields of ``config_cls`` declared with ``option``, by name (in declaration order)."""
    return {f.name: f for f in fields(config_cls) if "option" in f.metadata}


def flag_of(f) -> str:
    """The field's long flag, as errors name it (``--strict`` for ``--strict/--no-strict``)."""
    spec = f.metadata["option"]["flag"] if "option" in f.metadata else None
    return (spec or "--" + f.name.replace("_", "-")).split("/")[0]


def default_of(f) -> Any:
    return f.default_factory() if f.default is MISSING and f.default_factory is not MISSING else f.default


def check_fields(config) -> None:
    """Run every declared check on ``config`` (None passes where None is the default). Raises UsageError."""
    for f in declared(type(config)).values():
        check = f.metadata["option"]["check"]
        value = getattr(config, f.name)
        if check is None or (value is None and default_of(f) is None):
            continue
        check(value, flag_of(f))


ESTIMATE_METHODS = ("cost", "kernels")  # how a device latency is estimated (docs/estimate.md, docs/kernels.md)


def estimate_method(flag: str | None = None) -> Any:
    """The device-estimate method option (``estimate --method``, ``sweep --estimate-method``),
    declared here once: cost (the per-layer cost model, the default) or kernels (the runtime's
    aarch64 kernels counted under qemu and scheduled with llvm-mca)."""
    return option("cost", flag=flag, check=OneOf(ESTIMATE_METHODS, "estimate method"),
                  help="Device estimate: cost (the per-layer cost model) or kernels (count the runtime's aarch64 "
                       "kernels under qemu on the target's [kernels] core and schedule them with llvm-mca; "
                       ".tflite/.onnx files only; needs `make arm-env`; docs/kernels.md).")


EQUALIZE_METHODS = ("none", "cle", "cle-relu")  # cross-layer equalization before int8 (docs/export.md)
TFLITE_CALIBRATION = ("minmax", "percentile", "mse")  # TFLite activation ranges (docs/export.md)
ONNX_CALIBRATION = ("minmax", "entropy", "percentile")  # onnxruntime.quantization.CalibrationMethod
ROUNDING = ("nearest", "adaround")  # int8 weight rounding: to nearest (the converters), or learned (export.adaround)


def weight_rounding() -> Any:
    """``export --weight-rounding`` (and sweep's), declared here once."""
    return option("nearest", check=OneOf(ROUNDING, "int8 weight rounding"),
                  help="int8 weights rounded to nearest, or adaround: learned rounding per layer on the calibration "
                       "samples, with bias correction along the quantized path (slower: minutes per layer on large "
                       "models; per-channel only; see docs/export.md).")


def judge_on_emulated_cpu() -> Any:
    """``export --emulate`` (and sweep's), declared here once: the ARM CPU model the dynamic and int8 artifacts
    are judged on (export.emulated)."""
    return option(None, flag="--emulate", metavar="CPU",
                  help="Judge the dynamic and int8 artifacts (and export's accuracy budget candidates) on the real "
                       "aarch64 runtimes under qemu on this ARM CPU model (cortex-a53, cortex-a55, cortex-a76, "
                       "neoverse-n1; needs `make arm-env`): the agreement a phone's runtime gives, not this host's; "
                       "the ONNX int8 types follow that CPU. Slower.")


def onnx_calibration() -> Any:
    """``export --onnx-calibration`` (and sweep's), declared here once."""
    return option("minmax", check=OneOf(ONNX_CALIBRATION, "ONNX calibration method"),
                  help="ONNX Runtime's activation calibration method for int8.")


def equalize() -> Any:
    """``export --equalize``, declared here once: cross-layer equalization of the model int8 is converted from."""
    return option("none", check=OneOf(EQUALIZE_METHODS, "equalization"),
                  help="Cross-layer equalization of depthwise -> batch-norm -> ReLU -> 1x1 chains before int8: none, "
                       "cle (ReLU chains only: the float function is kept; ReLU6 chains are left alone) or cle-relu "
                       "(ReLU6 replaced by ReLU in the chains first: changes the float function where activations "
                       "pass 6; the change is measured and recorded). int8 artifacts only; see docs/export.md.")


def tflite_calibration() -> Any:
    """``export --tflite-calibration``, declared here once: how TFLite int8 activation ranges are chosen."""
    return option("minmax", check=OneOf(TFLITE_CALIBRATION, "TFLite calibration method"),
                  help="TFLite int8 activation ranges: minmax (the converter's, over the calibration samples), "
                       "percentile (the 0.01th to 99.99th percentile of each tensor) or mse (the clipping range "
                       "of least quantization error per tensor); the input and the logits keep min/max.")

"""Check an exported artifact against the Keras model it came from, on the same inputs.

The rules (docs/export.md, "Validation rules"): a broken artifact (an input or output shape or
dtype other than the source model and precision imply, a non-finite output, a TFLite
``serving_default`` signature missing or disagreeing with the interpreter:
``export.signature``) raises ``ValidationError``. The pre-softmax logits are compared when
the model ends in a softmax (``export.logits``), else the outputs. Float precisions must
stay within ``atol + rtol * max|reference|``, scaled by the precision row's
``tolerance_factor`` (fp16), else ``ToleranceError`` (with ``strict=False``: kept,
``status="fail"``). ``dynamic`` and ``int8`` report top-1 agreement and SQNR; below the
agreement floor (``agreement_floor``) they are marked degraded, or fail with
``--min-agreement``. Exact equality is a pass like any other: some CPUs run the float
graphs bit-identically to Keras.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from mobiledeploy import metrics, runtimes
from mobiledeploy.errors import MobiledeployError, ToleranceError, UsageError, ValidationError
from mobiledeploy.export import logits
from mobiledeploy.export.formats import PRECISION_ROWS
from mobiledeploy.export.logits import LOGITS, OUTPUTS
from mobiledeploy.export.signature import check_signature

# precision -> factor on the tolerance; the others are reported only
TOLERANCE_RULES = {p.name: p.tolerance_factor for p in PRECISION_ROWS.values() if p.tolerance_factor is not None}
FP16_FACTOR = TOLERANCE_RULES["fp16"]
DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-4


@dataclass(frozen=True)
class Reference:
    """The Keras model's answers on the validation inputs."""

    outputs: np.ndarray
    logits: np.ndarray | None = None  # pre-softmax, None when the model does not end in a softmax

    @property
    def compared(self) -> str:
        return OUTPUTS if self.logits is None else LOGITS

    @property
    def values(self) -> np.ndarray:
        """What artifacts are compared on: the logits where there are, else the outputs."""
        return self.outputs if self.logits is None else self.logits

    def to_json(self) -> dict:
        """How much the compared tensor varies: validation means something only if it does."""
        v = self.values
        v = v.reshape(v.shape[0], -1) if v.ndim > 1 else v.reshape(-1, 1)
        return {"compared": self.compared, "samples": int(v.shape[0]),
                "max_abs": float(np.abs(v).max()) if v.size else 0.0,
                "std_across_inputs": float(v.std(axis=0).mean()) if v.size else 0.0,
                "distinct_top1": int(len(np.unique(v.argmax(axis=1)))) if v.size else 0}


def tolerance(precision: str, reference: np.ndarray, atol: float, rtol: float) -> float | None:
    """The absolute tolerance for ``precision`` on ``reference`` (None: quantized, reported only)."""
    factor = TOLERANCE_RULES.get(precision)
    if factor is None:
        return None
    scale = float(np.abs(reference).max()) if reference.size else 0.0
    return factor * (float(atol) + float(rtol) * scale)


@dataclass(frozen=True)
class Validation:
    reference: str
    compared: str  # "logits" | "outputs"
    runtime: str
    samples: int
    inputs: str  # where the validation samples came from
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    sqnr_db: float
    tolerance: float | None  # None: quantized, reported only
    status: str  # "pass" | "fail" | "reported"
    input_dtype: str
    output_dtype: str
    signature: dict | None = None  # TFLite: the serving_default signature, checked (export/signature.py)

    @property
    def summary(self) -> str:
        return validation_summary(self.to_json())

    def to_json(self) -> dict:
        return {"reference": self.reference, "compared": self.compared, "runtime": self.runtime,
                "samples": self.samples,
                "inputs": self.inputs, "max_abs_diff": self.max_abs_diff, "mean_abs_diff": self.mean_abs_diff,
                "top1_agreement": self.top1_agreement, "sqnr_db": self.sqnr_db,
                "tolerance": self.tolerance, "status": self.status,
                "input_dtype": self.input_dtype, "output_dtype": self.output_dtype,
                **({"signature": self.signature} if self.signature is not None else {})}


def validation_summary(v: dict) -> str:
    """One line for a validation record (``Validation.to_json()``, as the manifest holds it); values from an
    emulated CPU say where they were computed."""
    if v.get("tolerance") is None:  # float(): the manifest writes infinities as "inf"
        line = (f"{v['compared']}: top-1 agree {float(v['top1_agreement']):.1%}, "
                f"SQNR {_fmt_db(float(v['sqnr_db']))}")
    else:
        ok = v["status"] == "pass"
        line = (f"{'ok' if ok else 'FAIL'}: {v['compared']} max|diff| {float(v['max_abs_diff']):.1e} "
                f"{'<=' if ok else '>'} {float(v['tolerance']):.1e}")
    runtime = str(v.get("runtime") or "")
    return line + (f", on {runtime.split(' on ', 1)[1]}" if "(emulated" in runtime and " on " in runtime else "")


def expected_dtypes(fmt: str, precision: str, int8_io: bool) -> tuple[str, str]:
    if fmt == "tflite" and precision == "int8" and int8_io:
        return "int8", "int8"
    return "float32", "float32"


def validate_artifact(path: Path, *, fmt: str, precision: str, x: np.ndarray, reference: Reference,
                      atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL, strict: bool = True,
                      int8_io: bool = False, inputs: str = "", emulate: str | None = None) -> Validation:
    """Run ``path`` on ``x`` with its runtime and compare with ``reference`` (Keras, same inputs).
    ``emulate``: the values judged come from the aarch64 runtime under qemu on that ARM CPU model
    (``export.emulated``); the structure is still checked on the host."""
    name = Path(path).name
    try:
        sess = runtimes.open_session(path)
    except MobiledeployError as e:
        raise ValidationError(f"{name} does not load: {e}") from None
    if len(sess.inputs) != 1 or len(sess.outputs) != 1:
        raise ValidationError(f"{name} has {len(sess.inputs)} inputs and {len(sess.outputs)} outputs; "
                              "the source model has 1 and 1")
    want_in, want_out = expected_dtypes(fmt, precision, int8_io)
    got_in, got_out = np.dtype(sess.inputs[0].dtype).name, np.dtype(sess.outputs[0].dtype).name
    if (got_in, got_out) != (want_in, want_out):
        raise ValidationError(f"{name} has input/output dtypes {got_in}/{got_out}, expected {want_in}/{want_out}")
    want_shape = tuple(x.shape[1:])
    got_shape = tuple(sess.inputs[0].shape[1:])
    if got_shape != want_shape:
        raise ValidationError(f"{name} input shape {_fmt(got_shape)} differs from the source model's "
                              f"{_fmt(want_shape)}")
    try:
        out = runtimes.predict(sess, x)
    except UsageError as e:
        raise ValidationError(f"{name}: {e}") from None
    _check_values(name, "output", out, reference.outputs)
    signature = None
    if fmt == "tflite":  # its serving_default signature must give what the interpreter gives

        signature = check_signature(path, x, out)
    compared, ref, runtime = OUTPUTS, reference.outputs, sess.runtime
    got = None
    if emulate is not None:  # the phone's numerics: outputs (and logits) from the aarch64 runtime
        from mobiledeploy.export.emulated import emulated_values

        out, got, runtime = emulated_values(path, x, emulate, logits=reference.logits is not None)
        if out.size != reference.outputs.size:
            raise ValidationError(f"{name} gives {out.size // max(len(x), 1)} outputs per sample on {emulate}, "
                                  f"the source model {reference.outputs.size // max(len(x), 1)}")
        out = out.reshape(reference.outputs.shape)
        _check_values(name, "output", out, reference.outputs)
    elif reference.logits is not None:
        got = logits.artifact_logits(path, fmt, x)
    if got is not None:
        _check_values(name, "logits", got, reference.logits)
        compared, ref, out = LOGITS, reference.logits, got
    v = judge(name, precision=precision, reference=ref, out=out, atol=atol, rtol=rtol, strict=strict,
              runtime=runtime, inputs=inputs, dtypes=(got_in, got_out), compared=compared)
    return replace(v, signature=signature)


def _check_values(name: str, what: str, got: np.ndarray, want: np.ndarray) -> None:
    if got.shape != want.shape:
        raise ValidationError(f"{name} {what} shape {_fmt(got.shape[1:])} differs from the source model's "
                              f"{_fmt(want.shape[1:])}")
    if not np.all(np.isfinite(got)):
        raise ValidationError(f"{name} produces non-finite {what} (NaN or inf)")


def judge(name: str, *, precision: str, reference: np.ndarray, out: np.ndarray, strict: bool, runtime: str,
          inputs: str, atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL,
          dtypes: tuple[str, str] = ("float32", "float32"), compared: str = OUTPUTS) -> Validation:
    """Apply the precision's rule to ``out`` against ``reference`` (see module doc)."""
    mad = metrics.max_abs_diff(reference, out)
    tol = tolerance(precision, reference, atol, rtol)
    status = "reported" if tol is None else ("pass" if mad <= tol else "fail")
    v = Validation(reference="keras", compared=compared, runtime=runtime, samples=int(out.shape[0]), inputs=inputs,
                   max_abs_diff=mad, mean_abs_diff=metrics.mean_abs_diff(reference, out),
                   top1_agreement=metrics.top1_agreement(reference, out), sqnr_db=metrics.sqnr_db(reference, out),
                   tolerance=tol, status=status, input_dtype=dtypes[0], output_dtype=dtypes[1])
    if status == "fail" and strict:
        raise ToleranceError(f"{name} {compared} differ from the Keras model's by up to {mad:.3g} (tolerance "
                             f"{tol:.3g} for {precision}: {_rule(precision, atol, rtol)}); raise --rtol/--atol "
                             "or pass --no-strict to keep it anyway")
    return v


def _rule(precision: str, atol: float, rtol: float) -> str:
    factor = TOLERANCE_RULES[precision]
    return f"{factor * atol:g} + {factor * rtol:g} x max|reference|"


def _fmt(shape) -> str:
    return "x".join("?" if d is None else str(d) for d in shape)


def _fmt_db(v: float) -> str:
    return "inf dB" if math.isinf(v) and v > 0 else f"{v:.1f} dB"


# ------------------------------------------------------------------ the agreement floor

DEFAULT_MIN_AGREEMENT = 0.90  # top-1 agreement below which a quantized artifact is marked degraded
ADVICE = {  # precision -> what to do about a degraded artifact
    "dynamic": "use static int8 (--quant int8) instead of dynamic range",
    "int8": "keep layers in float (--float-layers NAMES), review the recipe (--bias-correction, per-channel weights) "
            "or calibrate on data like the inputs (--calib)",
}


@dataclass(frozen=True)
class AgreementFloor:
    """A quantized artifact's top-1 agreement with the float model against the floor it must meet."""

    floor: float | None  # None: not judged (random weights and no --min-agreement)
    set_by: str  # "default" | "--min-agreement" | "none"
    top1_agreement: float
    samples: int
    inputs: str  # what the agreement was measured on: the export's validation samples
    reason: str = ""

    @property
    def degraded(self) -> bool:
        return self.floor is not None and self.top1_agreement < self.floor - 1e-9

    def message(self, name: str, precision: str) -> str:
        return (f"{name} is degraded: top-1 agreement with the float model {self.top1_agreement:.1%} is below "
                f"the {self.floor:.0%} floor{' (--min-agreement)' if self.set_by == '--min-agreement' else ''} "
                f"(measured on {self.inputs or f'{self.samples} validation samples'}); "
                f"{ADVICE.get(precision, 'use another recipe')}")

    def to_json(self) -> dict:
        d = {"floor": self.floor, "set_by": self.set_by, "top1_agreement": self.top1_agreement,
             "samples": self.samples, "inputs": self.inputs, "degraded": self.degraded}
        if self.reason:
            d["reason"] = self.reason
        return d


def agreement_floor(v: Validation, precision: str, *, min_agreement: float | None,
                    trained: bool) -> AgreementFloor | None:
    """The floor ``v``'s top-1 agreement is held to (None for float precisions, which have tolerances):
    ``min_agreement`` when given, else ``DEFAULT_MIN_AGREEMENT`` for trained weights; a random-init
    model's agreement measures no accuracy, so it is recorded and not judged."""
    if TOLERANCE_RULES.get(precision) is not None or v.tolerance is not None:
        return None
    common = dict(top1_agreement=v.top1_agreement, samples=v.samples, inputs=v.inputs)
    if min_agreement is not None:
        return AgreementFloor(float(min_agreement), "--min-agreement", **common)
    if trained:
        return AgreementFloor(DEFAULT_MIN_AGREEMENT, "default", **common)
    return AgreementFloor(None, "none", reason="random weights: agreement measures no accuracy to keep; "
                                               "--min-agreement sets a floor anyway", **common)

"""Check an exported artifact against the Keras model it came from, on the same inputs.

Rules (documented in docs/export.md):

- Broken is always fatal: an input or output whose shape or dtype is not what the
  source model and the requested precision imply raises ``ValidationError``.
- ``fp32`` is an exact float graph: it must match Keras within ``atol`` (max absolute
  difference of the outputs), else ``ToleranceError`` (``status="fail"`` and a warning
  with ``strict=False``).
- ``fp16`` stores weights in half precision (about 3 significant digits) and computes
  in float: it must match within ``FP16_ATOL_FACTOR * atol`` (1e-2 at the default
  1e-4), same strictness. Its agreement and SQNR are reported too.
- ``dynamic`` and ``int8`` are quantized: top-1 agreement and SQNR (dB) are reported
  (``status="reported"``); they never fail the export, since what is acceptable depends
  on the model and the data (budgets belong to ``mobiledeploy check``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mobiledeploy import runtimes

from mobiledeploy.accuracy import metrics
from mobiledeploy.errors import MobiledeployError, ToleranceError, UsageError, ValidationError

FP16_ATOL_FACTOR = 100.0
TOLERANCE_RULES = {"fp32": 1.0, "fp16": FP16_ATOL_FACTOR}  # precision -> factor on atol; others: reported


@dataclass(frozen=True)
class Validation:
    reference: str
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

    @property
    def summary(self) -> str:
        if self.tolerance is None:
            return f"top-1 agree {self.top1_agreement:.1%}, SQNR {_fmt_db(self.sqnr_db)}"
        ok = self.status == "pass"
        return f"{'ok' if ok else 'FAIL'}: max|diff| {self.max_abs_diff:.1e} {'<=' if ok else '>'} {self.tolerance:g}"

    def to_json(self) -> dict:
        return {"reference": self.reference, "runtime": self.runtime, "samples": self.samples,
                "inputs": self.inputs, "max_abs_diff": self.max_abs_diff, "mean_abs_diff": self.mean_abs_diff,
                "top1_agreement": self.top1_agreement, "sqnr_db": self.sqnr_db,
                "tolerance": self.tolerance, "status": self.status,
                "input_dtype": self.input_dtype, "output_dtype": self.output_dtype}


def expected_dtypes(fmt: str, precision: str, int8_io: bool) -> tuple[str, str]:
    if fmt == "tflite" and precision == "int8" and int8_io:
        return "int8", "int8"
    return "float32", "float32"


def validate_artifact(path: Path, *, fmt: str, precision: str, x: np.ndarray, reference: np.ndarray,
                      atol: float, strict: bool, int8_io: bool = False, inputs: str = "") -> Validation:
    """Run ``path`` on ``x`` with its runtime and compare with ``reference`` (Keras outputs)."""
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
    if out.shape != reference.shape:
        raise ValidationError(f"{name} output shape {_fmt(out.shape[1:])} differs from the source model's "
                              f"{_fmt(reference.shape[1:])}")
    if not np.all(np.isfinite(out)):
        raise ValidationError(f"{name} produces non-finite outputs (NaN or inf)")
    return judge(name, precision=precision, reference=reference, out=out, atol=atol, strict=strict,
                 runtime=sess.runtime, inputs=inputs, dtypes=(got_in, got_out))


def judge(name: str, *, precision: str, reference: np.ndarray, out: np.ndarray, atol: float, strict: bool,
          runtime: str, inputs: str, dtypes: tuple[str, str] = ("float32", "float32")) -> Validation:
    """Apply the precision's rule to outputs ``out`` against ``reference`` (see module doc)."""
    mad = metrics.max_abs_diff(reference, out)
    factor = TOLERANCE_RULES.get(precision)
    tol = None if factor is None else float(atol) * factor
    status = "reported" if tol is None else ("pass" if mad <= tol else "fail")
    v = Validation(reference="keras", runtime=runtime, samples=int(out.shape[0]), inputs=inputs,
                   max_abs_diff=mad, mean_abs_diff=metrics.mean_abs_diff(reference, out),
                   top1_agreement=metrics.top1_agreement(reference, out), sqnr_db=metrics.sqnr_db(reference, out),
                   tolerance=tol, status=status, input_dtype=dtypes[0], output_dtype=dtypes[1])
    if status == "fail" and strict:
        raise ToleranceError(f"{name} differs from the Keras model by up to {mad:.3g} (tolerance {tol:g} for "
                             f"{precision}); raise --atol or pass --no-strict to keep it anyway")
    return v


def _fmt(shape) -> str:
    return "x".join("?" if d is None else str(d) for d in shape)


def _fmt_db(v: float) -> str:
    return "inf dB" if math.isinf(v) and v > 0 else f"{v:.1f} dB"

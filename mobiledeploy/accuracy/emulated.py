"""``eval --emulate CPU``: each TFLite/ONNX artifact on the real aarch64 runtimes under qemu.

``emulated_eval(refs, dataset, cpu)`` runs every artifact on the evaluation samples twice
through the same worker (``runtimes/emulate.compare_emulated``): on the host and on the
emulated CPU model. Per artifact it reports the top-1 of the emulated outputs against the
labels and their agreement with the host run: top-1 agreement, max absolute difference of
the (dequantized) outputs, and whether the raw outputs are bit-identical (meaningful for
int8 outputs; float outputs may differ in the last bits from a different summation order).

Keras models are not run (there is no Keras in the aarch64 environment): their row says so.
A model that crashes or times out under emulation is its own error row; timeouts scale
(``emulate.scale_timeout``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from mobiledeploy import metrics
from mobiledeploy.data.datasets import Dataset
from mobiledeploy.progress import OnProgress, emit
from mobiledeploy.runtimes import emulate as emu
from mobiledeploy.runtimes.emulate import EMULATED_LABEL

KERAS_NOTE = "skipped: Keras models are not run under emulation (export to .tflite/.onnx)"


@dataclass(frozen=True)
class EmulatedEval:
    """One artifact on an emulated CPU: its top-1 and its agreement with the host run."""

    model: str
    cpu: str
    status: str  # "ok" | "error" | "skipped"
    note: str | None = None  # why it was skipped, or the error
    top1: float | None = None  # emulated outputs vs. the labels
    top1_agreement: float | None = None  # emulated vs. host argmax, per sample
    max_abs_diff: float | None = None  # of the float (dequantized) outputs
    bit_exact: bool | None = None  # raw outputs identical
    integer_outputs: bool | None = None
    emulated_seconds: float | None = None  # emulated, not a latency

    def to_json(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        return d | {"emulated_seconds_label": EMULATED_LABEL}


def emulated_eval(refs: Sequence, ds: Dataset, cpu_name: str, *, threads: int | None = None,
                  timeout_s: float = 600.0,
                  progress: OnProgress | None = None) -> tuple[EmulatedEval, ...]:
    """Every model of ``refs`` (``ModelRef``s) on ``ds`` on ``cpu_name``; ``timeout_s`` is the
    host's per-model timeout (scaled for emulation)."""
    env = emu.find_env()  # UsageError naming make arm-env, before any work
    out = []
    for r in refs:
        if r.format not in ("tflite", "onnx"):
            out.append(EmulatedEval(model=r.path, cpu=cpu_name, status="skipped", note=KERAS_NOTE))
            continue
        emit(progress, "eval", f"eval {r.path} on {cpu_name} (emulated)", "start")
        c = emu.compare_emulated(r.path, ds.x, cpu_name, timeout=emu.scale_timeout(timeout_s),
                                 threads=threads or 1, env=env)
        if c.error:
            out.append(EmulatedEval(model=r.path, cpu=cpu_name, status="error", note=c.error))
            emit(progress, "eval", f"eval {r.path} on {cpu_name}: error", failed=True)
            continue
        scores = c.outputs.reshape(len(c.outputs), -1)
        top1 = metrics.topk_accuracy(scores, ds.y, 1) if ds.labelled else None
        out.append(EmulatedEval(model=r.path, cpu=cpu_name, status="ok", top1=top1,
                                top1_agreement=c.top1_agreement, max_abs_diff=c.max_abs_diff,
                                bit_exact=c.bit_exact, integer_outputs=c.integer_outputs,
                                emulated_seconds=c.emulated_seconds))
        emit(progress, "eval", f"eval {r.path} on {cpu_name}: {c.emulated_seconds:.1f} s emulated")
    return tuple(out)


def vs_host(e: EmulatedEval | None) -> str:
    """One cell: '=' (bit-identical to the host), else the max abs difference; '-' otherwise."""
    if e is None or e.status != "ok":
        return "-" if e is None or e.status == "skipped" else "error"
    return "=" if e.bit_exact else f"{e.max_abs_diff:.1e}"

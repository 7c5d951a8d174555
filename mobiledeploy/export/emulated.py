"""``export --emulate CPU``: a quantized artifact's outputs (and logits) from the aarch64 runtimes under qemu.

Quantized arithmetic depends on the CPU that runs it: ONNX Runtime on an x86-64 CPU without VNNI
saturates S8S8 products that its ARM kernels compute exactly, and LiteRT's built-in int8 kernels
differ between ARM and x86 as well (docs/emulate.md). With ``--emulate CPU`` the export judges its
dynamic and int8 artifacts on what a phone's runtime gives: the file is run by the emulation worker
(``runtimes.emulate.run_worker``: the real aarch64 LiteRT or ONNX Runtime under qemu on that ARM
CPU model). With a softmax, the run is of the tapped copy (``export.logits``: the softmax's input
is also an output), so one run gives the outputs and the logits. The file's structure (shapes,
dtypes, the TFLite signature) is still checked on the host. Emulated runs give results, never a
latency.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from mobiledeploy.errors import RuntimeFailure, ValidationError
from mobiledeploy.export.logits import TAPS
from mobiledeploy.runtimes import detect_format, emulate as emu

TIMEOUT_S = 3600.0  # one artifact on the validation samples under qemu (a 1.0/224 model: about 20 s per 32)


def emulated_values(path: Path, x: np.ndarray, cpu: str, *, logits: bool,
                    timeout_s: float = TIMEOUT_S) -> tuple[np.ndarray, np.ndarray | None, str]:
    """``(outputs, logits or None, runtime)`` of the artifact at ``path`` on ``x`` (float samples), run on
    the aarch64 runtime under qemu on ``cpu``; ``logits`` asks for the softmax's input too. A crash or
    timeout under emulation is a ``ValidationError`` naming the file."""
    path = Path(path)
    tapped = TAPS[detect_format(path)](path.read_bytes()) if logits else None
    try:
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            run = path
            if tapped is not None:
                run = Path(tmp) / path.name
                run.write_bytes(tapped)
            got = emu.run_worker(run, x, cpu_name=cpu, timeout_s=timeout_s)
    except RuntimeFailure as e:
        raise ValidationError(f"{path.name} could not be validated on {cpu} (emulated): {e}") from None
    n = len(x)  # the worker stacks one run per sample: (n, 1, ...) for a batch-1 model
    outs = sorted((k for k in got if k.startswith("float_")), key=lambda k: int(k.split("_")[1]))
    first = got[outs[0]].reshape(n, -1).astype(np.float32)
    tap = got[outs[-1]].reshape(n, -1).astype(np.float32) if tapped is not None and len(outs) > 1 else None
    return first, tap, f"{got['meta']['runtime']} on {cpu} (emulated aarch64)"


def check_cpu(cpu: str) -> None:
    """A known ARM CPU model and ``make arm-env``'s environment; ``UsageError`` (one line) otherwise."""
    emu.cpu(cpu)
    emu.find_env()

"""Run a TFLite/ONNX model over a batch in a child process (a crash is an error, not a dead CLI).

The parent runs ``python -m mobiledeploy.runtimes.eval_worker TMPDIR``: the samples go to the
child as ``TMPDIR/x.npy`` (memory-mapped there), the outputs come back as
``TMPDIR/out.npy`` and the status as ``TMPDIR/result.json``, so large data sets are
never pickled through a pipe and runtime prints cannot corrupt anything. This module
never imports TensorFlow.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mobiledeploy.errors import MobiledeployError, RuntimeFailure, UsageError


def predict_in_child(path: str | os.PathLike, x: np.ndarray, *, threads: int | None = None,
                     timeout_s: float = 600.0) -> tuple[np.ndarray, float]:
    """(float outputs of ``runtimes.predict``, seconds spent predicting) from a child process.

    Raises ``UsageError`` for what the user must fix (e.g. an input shape mismatch) and
    ``RuntimeFailure`` when the model fails to load or run, crashes or times out.
    """
    name = Path(path).name
    with tempfile.TemporaryDirectory(prefix="mobiledeploy-eval-") as tmp:
        np.save(os.path.join(tmp, "x.npy"), np.ascontiguousarray(x, dtype=np.float32))
        Path(tmp, "job.json").write_text(json.dumps({"path": str(Path(path).resolve()), "threads": threads}))
        debug = os.environ.get("MOBILEDEPLOY_DEBUG") == "1"
        try:
            proc = subprocess.run([sys.executable, "-m", "mobiledeploy.runtimes.eval_worker", tmp], timeout=timeout_s,
                                  stdin=subprocess.DEVNULL, stdout=None if debug else subprocess.DEVNULL,
                                  stderr=None if debug else subprocess.PIPE)
        except subprocess.TimeoutExpired:
            raise RuntimeFailure(f"{name}: no result after {timeout_s:.0f} s (timed out; raise --timeout)") from None
        result = Path(tmp, "result.json")
        if not result.is_file():
            if proc.returncode < 0:
                sig = signal.Signals(-proc.returncode).name if -proc.returncode in signal.valid_signals() else ""
                raise RuntimeFailure(f"{name}: the runtime crashed ({sig or 'signal ' + str(-proc.returncode)})")
            tail = (proc.stderr or b"").decode(errors="replace").strip().splitlines()[-1:] or [""]
            raise RuntimeFailure(f"{name}: the evaluation child failed (exit code {proc.returncode}) {tail[0][:200]}")
        status = json.loads(result.read_text())
        if status["status"] == "usage":
            raise UsageError(status["error"])
        if status["status"] != "ok":
            raise RuntimeFailure(status["error"])
        return np.load(os.path.join(tmp, "out.npy")), float(status["seconds"])


FAULT_ENV = "MOBILEDEPLOY_TEST_EVAL_FAULT"  # test hook: "segfault:<file name>" kills the child


def _main(tmp: str) -> None:
    job = json.loads(Path(tmp, "job.json").read_text())
    fault = os.environ.get(FAULT_ENV, "")
    if fault.startswith("segfault:") and Path(job["path"]).name == fault.split(":", 1)[1]:
        os.kill(os.getpid(), signal.SIGSEGV)
    try:
        from mobiledeploy import runtimes

        session = runtimes.open_session(job["path"], threads=job["threads"])
        x = np.load(os.path.join(tmp, "x.npy"), mmap_mode="r")
        t0 = time.perf_counter()
        out = runtimes.predict(session, np.asarray(x))
        seconds = time.perf_counter() - t0
        np.save(os.path.join(tmp, "out.npy"), out)
        status = {"status": "ok", "seconds": seconds}
    except UsageError as e:
        status = {"status": "usage", "error": str(e)}
    except MobiledeployError as e:
        status = {"status": "error", "error": str(e)}
    except Exception as e:  # noqa: BLE001 - reported to the parent as one line
        status = {"status": "error", "error": f"{Path(job['path']).name}: {type(e).__name__}: "
                                              f"{' '.join(str(e).split())[:300]}"}
    Path(tmp, "result.json").write_text(json.dumps(status))


if __name__ == "__main__":
    _main(sys.argv[1])

"""The one child process that runs models: ``bench`` timings and ``eval`` predictions.

The parent calls ``run_child(job, ...)``: it starts ``python -m mobiledeploy.runtimes.child``,
sends the job as one JSON object on stdin and reads the result as one JSON object from
the child's *original* stdout (the child points fd 1 at stderr, so anything a runtime
prints cannot corrupt it). Arrays travel as ``.npy`` files in a private temporary folder
(memory-mapped by the child), never through the pipe. The parent owns the timeout and
turns a signal death, a hang or a missing result into one error dict; a Ctrl-C, SIGTERM or
SIGHUP kills the child (its process group) before the parent exits. This module never
imports TensorFlow (the runtimes are LiteRT and ONNX Runtime).

Tasks are a registry (``TASKS``): ``bench`` (``measure``: load, warm up, time) and
``predict`` (float outputs over a batch), and ``profile`` (``bench --profile``). The
timing loop is ``runtimes.timing.timed_loop``.

``run_child(..., emulate="cortex-a76")`` runs the same child on the aarch64 Python of
``make arm-env`` under qemu (``runtimes/emulate.py``), with the timeout scaled. The child's
path imports only the standard library, numpy and the runtime, which is all the guest has.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from mobiledeploy import runtimes
from mobiledeploy.errors import MobiledeployError, UsageError, one_line
from mobiledeploy.machine import auxv_hwcaps, usable_cores
from mobiledeploy.runtimes import emulate as emu
from mobiledeploy.runtimes import profile as op_profile
from mobiledeploy.runtimes.timing import run_plan, timed_loop

FAULT_ENV = "MOBILEDEPLOY_TEST_CHILD_FAULT"  # test hook: segfault | sleep | raise [":" model file name]


def peak_rss_kb() -> int:
    """This process's peak resident set size (VmHWM) in KiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource

    peak = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS, KiB elsewhere


def pin(cores) -> None:
    """Pin this process to ``cores`` (a list of ids; empty or None = leave it), before the
    runtime starts its threads. Linux; elsewhere the thread count alone applies."""
    if cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores)


def measure(settings: dict) -> dict:
    """Load, warm up and time one model under ``settings``; return the raw figures."""
    pin(settings.get("cores"))
    _fault_hook(settings["model"])

    # import the runtime library first: peak_rss_mb is the memory the model adds, not the library
    runtimes.runtime_for(settings["model"]).load_library()
    rss0 = peak_rss_kb()
    shapes = {k: tuple(v) for k, v in (settings.get("shapes") or {}).items()}
    t0 = time.perf_counter_ns()
    try:
        session = runtimes.open_session(settings["model"], threads=settings.get("threads"),
                                        xnnpack=settings.get("xnnpack", True),
                                        ort_opt_level=settings.get("ort_opt_level", "all"), shapes=shapes)
    except Exception as e:  # the input's fault or the runtime's: the parent asks models.inspect (open_error)
        return {"status": "error", "error": one_line(e, None, typed=not isinstance(e, MobiledeployError)),
                "usage": getattr(e, "exit_code", 1) == 2, "open_error": one_line(e, None)}
    init_ns = time.perf_counter_ns() - t0
    session.set_inputs(runtimes.random_inputs(session, seed=settings.get("seed", 0)))
    t0 = time.perf_counter_ns()
    session.invoke()
    first_ns = time.perf_counter_ns() - t0
    for _ in range(int(settings.get("warmup", 10))):
        session.invoke()
    min_runs, min_time_s, max_runs = run_plan(settings.get("runs"), settings.get("min_time_s"))
    samples = timed_loop(session.invoke, min_runs=min_runs, min_time_s=min_time_s, max_runs=max_runs)
    rss1 = peak_rss_kb()
    return {"status": "ok", "runtime": session.runtime, "precision": settings.get("precision") or "unknown", "hwcaps": auxv_hwcaps(),
            "init_ms": init_ns / 1e6, "first_ms": first_ns / 1e6, "samples_ms": [s / 1e6 for s in samples],
            "peak_rss_mb": (rss1 - rss0) / 1024.0, "process_peak_rss_mb": rss1 / 1024.0,
            "inputs": [s.to_json() | {"shape": list(runtimes.input_shape(session, s))} for s in session.inputs],
            "outputs": [s.to_json() for s in session.outputs],
            "cores": usable_cores(),
            "tensorflow_imported": "tensorflow" in sys.modules}


def _fault_hook(model: str) -> None:
    """Deliberate failures for the isolation tests (never set in normal use)."""
    fault, _, only = os.environ.get(FAULT_ENV, "").partition(":")
    if only and Path(model).name != only:
        return
    if fault == "segfault":
        import signal

        os.kill(os.getpid(), signal.SIGSEGV)
    elif fault == "sleep":
        time.sleep(3600)
    elif fault == "raise":
        raise RuntimeError("deliberate failure from " + FAULT_ENV)


def predict_task(job: dict) -> dict:
    """Float outputs of ``runtimes.predict`` over ``DIR/x.npy``, written to ``DIR/out.npy``."""
    _fault_hook(job["model"])
    import numpy as np

    session = runtimes.open_session(job["model"], threads=job.get("threads"))
    x = np.load(os.path.join(job["dir"], "x.npy"), mmap_mode="r")
    t0 = time.perf_counter()
    out = runtimes.predict(session, np.asarray(x))
    seconds = time.perf_counter() - t0
    np.save(os.path.join(job["dir"], "out.npy"), out)
    return {"status": "ok", "seconds": seconds}


def profile_task(job: dict) -> dict:
    """Per-operator times (``bench --profile``; ``mobiledeploy.bench.profile``), on the
    cores ``bench`` pinned, so that their sum compares with its p50."""
    pin(job.get("cores"))
    _fault_hook(job["model"])

    return op_profile.profile_task(job)


TASKS = {"bench": measure, "predict": predict_task, "profile": profile_task}


def main() -> int:
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # runtime chatter on fd 1 goes to stderr, not into our JSON
    sys.stdout = sys.stderr
    try:
        job = json.loads(sys.stdin.read())
        result = TASKS[job.get("task", "bench")](job)
    except Exception as e:  # any failure of this one model becomes its error row
        result = {"status": "error", "error": one_line(e, None, typed=not isinstance(e, MobiledeployError)),
                  "usage": getattr(e, "exit_code", 1) == 2}
    out.write(json.dumps(result))
    out.flush()
    return 0


# ---------------------------------------------------------------- the parent side


def run_child(job: dict, *, timeout_s: float, arrays: dict | None = None, keep: tuple[str, ...] = (),
              emulate: str | None = None) -> dict:
    """Run ``job`` (``{"task": ..., "model": ...}``) in a child; never raises for the child's failure.

    ``emulate`` (a CPU model of ``runtimes.emulate``): the child runs on the aarch64 runtimes
    under qemu, and ``timeout_s`` (the host's) is scaled by ``emulate.scale_timeout``; a
    missing environment raises ``UsageError`` before anything starts.

    ``arrays`` ({name: ndarray}) are saved as ``DIR/name.npy`` for the child; the files named
    in ``keep`` (e.g. ``("out",)``) are loaded back into ``result["arrays"]``. Returns the
    child's result dict, or ``{"status": "error", "error": ..., "usage": False}`` for a
    timeout, a signal or a child that died without a result.
    """
    import numpy as np

    if not (isinstance(timeout_s, (int, float)) and 0 < timeout_s < float("inf")):  # nan fails too
        raise UsageError(f"--timeout must be a finite number of seconds > 0, received {timeout_s!r}")
    argv, env, what = [sys.executable, "-m", "mobiledeploy.runtimes.child"], None, ""
    if emulate:
        argv, env = emu.command(emulate, ["-m", "mobiledeploy.runtimes.child"])
        timeout_s, what = emu.scale_timeout(timeout_s), f" under emulation ({emulate})"
    with tempfile.TemporaryDirectory(prefix="mobiledeploy-child-") as tmp:
        for name, a in (arrays or {}).items():
            np.save(os.path.join(tmp, f"{name}.npy"), np.ascontiguousarray(a))
        result = _spawn({**job, "dir": tmp}, timeout_s, argv=argv, env=env, what=what)
        if result.get("status") == "ok" and keep:
            result["arrays"] = {k: np.load(os.path.join(tmp, f"{k}.npy")) for k in keep}
    return result


class _Stopped(BaseException):
    """SIGTERM or SIGHUP arrived while a child was running."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _stop_on_signals():
    """SIGTERM and SIGHUP behave like Ctrl-C while a child runs: the child is killed, temporary
    files are removed, and the process exits with 128 + the signal's number and one line.
    Signals the caller ignores or handles itself (``nohup``) are left as they are."""
    def stop(signum, frame):
        raise _Stopped(signum)

    old = {}
    if threading.current_thread() is threading.main_thread():
        for s in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(s) == signal.SIG_DFL:
                old[s] = signal.signal(s, stop)
    try:
        yield
    except _Stopped as e:
        print(f"error: terminated by {signal.Signals(e.signum).name}", file=sys.stderr, flush=True)
        raise SystemExit(128 + e.signum) from None
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _kill(proc: subprocess.Popen) -> None:
    """Kill the child and anything it started (its own process group), then reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.kill()
    proc.communicate()


def _spawn(job: dict, timeout_s: float, *, argv: list[str] | None = None, env: dict | None = None,
           what: str = "") -> dict:
    env = dict(os.environ if env is None else env, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"))
    with _stop_on_signals():
        # its own process group: the parent alone decides when it ends (Ctrl-C, SIGTERM, timeout)
        proc = subprocess.Popen(argv or [sys.executable, "-m", "mobiledeploy.runtimes.child"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, process_group=0)
        try:
            out, err = proc.communicate(json.dumps(job).encode(), timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill(proc)
            return {"status": "error", "error": f"timed out after {timeout_s:g} s{what} (raise it with --timeout)"}
        except BaseException:  # Ctrl-C, SIGTERM, SIGHUP: never leave the child behind
            _kill(proc)
            raise
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = str(-proc.returncode)
        return {"status": "error", "error": f"crashed with signal {name}{what}"}
    if what and "uncaught target signal" in err.decode(errors="replace"):  # qemu reports the guest's crash
        return {"status": "error", "error": f"crashed{what}: {_tail(err)}"}
    try:
        return json.loads(out.decode() or "null") or _no_result(proc.returncode, err)
    except ValueError:
        return _no_result(proc.returncode, err)


def _tail(err: bytes) -> str:
    lines = [ln.strip() for ln in err.decode(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def _no_result(code: int, err: bytes) -> dict:
    tail = f": {_tail(err)}" if _tail(err) else ""
    return {"status": "error", "error": f"child exited with status {code} without a result{tail}"}


if __name__ == "__main__":
    sys.exit(main())

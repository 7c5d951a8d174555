"""The one way this package imports TensorFlow and Keras, and silences converters.

TensorFlow prints start-up notices from C++ straight to file descriptor 2 while it is
imported: on CPUs where it turns oneDNN's custom operations on (AVX-512 VNNI/BF16, AMX,
or anywhere with ``TF_ENABLE_ONEDNN_OPTS=1``) "WARNING: All log messages before
absl::InitializeLog() ..." and "oneDNN custom operations are on ...", twice, whatever
``TF_CPP_MIN_LOG_LEVEL`` says (they are written before that setting is read).
``import_tensorflow()`` and ``import_keras()`` import with fd 2 pointed at a pipe and
pass every line through except those known notices, so real errors still show; oneDNN
stays as the user set it (numerics unchanged). After the import,
``TF_CPP_MIN_LOG_LEVEL=3`` (unless set) keeps later C++ info and warnings quiet.

``quiet_converter()`` silences everything a converter or runtime prints while it works
(Python logs, "Saved artifact at ...", C++ prints on fds 1 and 2); errors still surface
as exceptions, which the caller turns into one line.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import threading
import warnings

# Lines TensorFlow writes while it loads, none of which a user can act on.
_NOTICE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} [\d:.]+\s+\d+ (?:port|cpu_feature_guard|cuda_\w+|cudart_stub|computation_placer)\.cc:\d+\] .*"
    r"|To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler flags\."
    r"|.*(?:oneDNN custom operations are on|Unable to register cu\w+ factory|Could not find cuda drivers|"
    r"TF-TRT Warning: Could not find TensorRT).*")


def is_startup_notice(line: str) -> bool:
    """True for a line TensorFlow prints while it loads (the oneDNN, absl and CPU-feature notices)."""
    return _NOTICE.fullmatch(line.rstrip("\r\n")) is not None


def quiet_tensorflow() -> None:
    """Before TensorFlow is imported: C++ log lines below ERROR dropped unless
    ``TF_CPP_MIN_LOG_LEVEL`` is already set (``TF_ENABLE_ONEDNN_OPTS`` is left as it is);
    the Python-side absl and tensorflow loggers show errors only."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for name in ("absl", "tensorflow"):
        logging.getLogger(name).setLevel(logging.ERROR)


def import_tensorflow():
    """``import tensorflow`` without its start-up notices on stderr; returns the module."""
    if "tensorflow" not in sys.modules:
        quiet_tensorflow()
        with filtered_stderr():
            import tensorflow  # noqa: F401 - loaded here, returned below
    return sys.modules["tensorflow"]


def import_keras():
    """``import keras`` (which imports TensorFlow, its backend) without the start-up notices."""
    import_tensorflow()
    if "keras" not in sys.modules:
        with filtered_stderr():
            import keras  # noqa: F401
    return sys.modules["keras"]


@contextlib.contextmanager
def filtered_stderr():
    """Fd 2 through a filter that drops TensorFlow's start-up notices, for the duration.

    Everything written to fd 2 (C++ and Python alike) goes through a pipe that a thread
    copies to the real stderr at once, line by line, minus the notices. A partial line
    that cannot begin a notice (a progress display's redraw) is copied without waiting
    for its newline.
    """
    try:
        for stream in (sys.stderr, sys.__stderr__):
            with contextlib.suppress(Exception):
                stream.flush()
        saved = os.dup(2)
        r, w = os.pipe()
    except OSError:  # no real fd 2 (embedded interpreters): nothing to filter
        yield
        return
    reader = threading.Thread(target=_pass_through, args=(r, os.dup(saved)), daemon=True)
    reader.start()
    os.dup2(w, 2)
    os.close(w)
    try:
        yield
    finally:
        for stream in (sys.stderr, sys.__stderr__):
            with contextlib.suppress(Exception):
                stream.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end: the reader sees EOF
        os.close(saved)
        reader.join(timeout=5)


def _pass_through(r: int, dest: int) -> None:
    """Copy the pipe ``r`` to ``dest`` minus the start-up notices; close both."""
    buf = b""
    try:
        with open(r, "rb", buffering=0, closefd=True) as pipe:
            while chunk := pipe.read(65536):
                *lines, buf = (buf + chunk).split(b"\n")
                out = b"".join(ln + b"\n" for ln in lines if not is_startup_notice(ln.decode("utf-8", "replace")))
                if buf and buf[:1] not in b"WIT":  # cannot begin a notice: copy it now
                    out, buf = out + buf, b""
                _write(dest, out)
        if buf and not is_startup_notice(buf.decode("utf-8", "replace")):
            _write(dest, buf)
    finally:
        os.close(dest)


def _write(dest: int, data: bytes) -> None:
    with contextlib.suppress(OSError):
        while data:
            data = data[os.write(dest, data):]


@contextlib.contextmanager
def quiet_converter():
    """Silence TensorFlow's converter, tf2onnx and LiteRT (Python logs and C++ prints on fds 1/2)."""
    quiet_tensorflow()
    loggers = [logging.getLogger(n) for n in ("absl", "tensorflow", "tf2onnx", "root")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with _null_fds(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


@contextlib.contextmanager
def _null_fds():
    """Point fds 1 and 2 at /dev/null (C/C++ prints), restoring them afterwards."""
    saved = []
    try:
        for stream in (sys.__stdout__, sys.__stderr__):
            with contextlib.suppress(Exception):
                stream.flush()
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            for fd in (1, 2):
                saved.append((fd, os.dup(fd)))
                os.dup2(null, fd)
        finally:
            os.close(null)
    except OSError:  # no real fds (embedded interpreters): Python-level silence only
        pass
    try:
        yield
    finally:
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)

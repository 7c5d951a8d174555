"""Silence what converters and runtimes print while they work.

TensorFlow's converter, tf2onnx and LiteRT print from Python (absl logs, "Saved
artifact at ...") and from C++ straight to file descriptors 1 and 2 ("fully_quantize:
...", "Created TensorFlow Lite XNNPACK delegate"). Both levels are redirected for the
duration; errors still surface as exceptions, which the caller turns into one line.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings


@contextlib.contextmanager
def quiet_converter():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    loggers = [logging.getLogger(n) for n in ("absl", "tensorflow", "tf2onnx", "root")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with _quiet_fds(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


@contextlib.contextmanager
def _quiet_fds():
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

"""The fp32 sibling of a single model file: the float model of the same model, for agreement columns.

``eval model_int8.tflite`` compares with the float model of the same model when no manifest
names one. The sibling is found by name, never by listing the folder: the precision token of
the file name is replaced by ``fp32``/``float32`` or dropped (``mobilenet_int8.onnx`` ->
``mobilenet_fp32.onnx``, ``mobilenet_float32.onnx``, ``mobilenet.onnx``; ``model_int8.tflite``
-> ``model.tflite``, ``model_fp32.tflite``), in the same format first, then the other formats.
Only those names are looked at; other files beside the model are never opened. A candidate
is taken when it is a regular file whose precision, read from its bytes
(``models/inspect.py``), is fp32 and whose image input has the same shape.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from mobiledeploy.errors import UsageError
from mobiledeploy.models import inspect
from mobiledeploy.models.artifacts import ModelRef, file_ref, model_input

FLOAT = ("fp32", "float32")
_SUFFIXES = {"tflite": (".tflite",), "onnx": (".onnx",), "keras": (".keras",)}
# precision words as they appear in file names (mobilenet_int8, model-fp16, m.dynamic)
_TOKEN = re.compile(r"(?i)([_.-])(int8|uint8|int16|int4|fp16|float16|bf16|dynamic|dynamic_range|dyn|quant|"
                    r"quantized|qat|ptq|w8a8|fp32|float32)(?=$|[_.-])")


def candidate_names(path: str | os.PathLike, fmt: str) -> list[str]:
    """File names the float model of ``path`` may have, most likely first (no file is read)."""
    p = Path(path)
    stems = []
    for m in reversed(list(_TOKEN.finditer(p.stem))):  # the last precision word first
        head, tail = p.stem[:m.start()], p.stem[m.end():]
        for word in ("fp32", "float32"):
            stems.append(f"{head}{m.group(1)}{word}{tail}")
        if head:
            stems.append(head + tail)
    suffixes = _SUFFIXES.get(fmt, ()) + tuple(s for f, ss in _SUFFIXES.items() if f != fmt for s in ss)
    names = [s + x for x in suffixes for s in dict.fromkeys(stems)]
    return [n for n in dict.fromkeys(names) if n != p.name]


def _regular(p: Path) -> bool:
    try:
        return stat.S_ISREG(os.stat(p).st_mode)  # stat only: a FIFO or device is never opened
    except OSError:
        return False


def sibling_reference(refs: list[ModelRef]) -> ModelRef | None:
    """The fp32 sibling of the first non-float model among ``refs`` that has one (None otherwise)."""
    for r in refs:
        if r.precision in FLOAT:
            continue
        here = Path(r.path)
        try:
            shape = model_input(r)
        except UsageError:
            continue
        for name in candidate_names(here, r.format):
            f = here.parent / name
            if not _regular(f) or os.path.realpath(f) == os.path.realpath(here):
                continue
            try:
                if inspect.precision(f) not in FLOAT:
                    continue
                ref = file_ref(f)
                if model_input(ref) == shape:
                    return ref
            except UsageError:  # unreadable: not this model's float sibling
                continue
    return None

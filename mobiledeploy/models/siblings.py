"""The fp32 sibling of a single model file: the float model beside it, for agreement columns.

``eval model_int8.tflite`` compares with the float model of the same directory when no
manifest names one: a ``.tflite``/``.onnx``/``.keras`` file beside it whose precision is
fp32, the same format preferred, then the longest shared file-name prefix
(``mobilenet_int8.onnx`` -> ``mobilenet_fp32.onnx``). Precision is read from the bytes
(``models/inspect.py``), never guessed from the name.
"""

from __future__ import annotations

import os
from pathlib import Path

from mobiledeploy.models import inspect
from mobiledeploy.models.artifacts import MODEL_FORMATS, ModelRef, file_ref

FLOAT = ("fp32", "float32")


def sibling_reference(refs: list[ModelRef]) -> ModelRef | None:
    """The fp32 file beside the first non-float model among ``refs`` (None when there is none)."""
    for r in refs:
        if r.precision in FLOAT:
            continue
        here = Path(r.path)
        cands = []
        for f in sorted(here.parent.iterdir()):
            if not f.is_file() or os.path.realpath(f) == os.path.realpath(here):
                continue
            try:
                fmt = inspect.detect_format(f)
            except Exception:  # noqa: BLE001 - not a model file
                continue
            if fmt in MODEL_FORMATS and inspect.precision(f) in FLOAT:
                cands.append(f)
        if not cands:
            continue
        best = max(cands, key=lambda f: (inspect.detect_format(f) == r.format,
                                         len(os.path.commonprefix([f.stem, here.stem])), -len(f.name)))
        return file_ref(best)
    return None

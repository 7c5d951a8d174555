"""Which models an evaluation runs, and what is known about each one.

``resolve_models(["build/", "m.tflite"])`` expands export directories through their
``manifest.json`` (every artifact, the ``.keras`` source first) and reads a single file's
entry from a ``manifest.json`` beside it when there is one. The resulting ``ModelRef``
says the file's format, precision, runtime and, when a manifest recorded them, its
preprocessing, resolution and the float Keras source of its export.

Input shapes are read without running a runtime: ONNX through ``onnx`` (protobuf),
TFLite through the flatbuffer schema shipped with LiteRT, Keras by loading the model
(safe mode). No TensorFlow import except for ``.keras`` files.
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from mobiledeploy import io
from mobiledeploy.errors import UsageError, ValidationError, one_line
from mobiledeploy.guards import regular_file
from mobiledeploy.models import inspect
from mobiledeploy.models.archs import ARCHS, load_model
from mobiledeploy.models.preprocessing import (PREPROCESSING, get_preprocessing, image_dims, layout_of,
                                               metadata_preprocessing, onnx_metadata)
from mobiledeploy.runtimes import KERAS_SUFFIXES, RUNTIMES, format_runtime

MODEL_FORMATS = ("keras", "tflite", "onnx")  # what eval/bench/check read from an export



@dataclass(frozen=True)
class ModelRef:
    path: str
    format: str  # keras | tflite | onnx
    precision: str  # fp32 | fp16 | dynamic | int8 | unknown
    preprocessing: str | None = None  # from the manifest
    resolution: int | None = None  # from the manifest
    manifest: str | None = None  # the manifest.json that describes it
    source: str | None = field(default=None, compare=False)  # float .keras of the same export
    calibration: dict | None = field(default=None, compare=False, hash=False)
    quantization: dict | None = field(default=None, compare=False, hash=False)  # the export's recipe
    arch: str | None = None  # from the manifest
    alpha: float | None = None
    degraded: dict | None = field(default=None, compare=False, hash=False)  # {"top1_agreement", "floor"}: see below

    @property
    def degraded_note(self) -> str:
        return degraded_note(self.degraded)

    @property
    def runtime(self) -> str:
        return format_runtime().get(self.format, "keras")

    @property
    def name(self) -> str:
        return Path(self.path).name


def contained_path(base: Path, value, *, key: str, source: str | os.PathLike, must_exist: bool = True) -> Path:
    """A path read from a file (manifest, budget, target): relative, inside ``base``, a regular file.

    ``base`` is the directory the file came from; symlinks are resolved before the check,
    so neither ``..``, an absolute path nor a link can lead outside it. Anything else is a
    usage error naming the file and the key, never echoing what the path points at.
    """
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        raise UsageError(f"{str(source)!r}: {key} must be a non-empty relative path (without NUL bytes)")
    rel = Path(value)
    if rel.is_absolute():
        raise UsageError(f"{str(source)!r}: {key} = {value!r} is an absolute path; paths in it must be "
                         f"relative to {str(base)!r}")
    p = base / rel
    try:
        inside = p.resolve().is_relative_to(base.resolve())
    except (OSError, RuntimeError):  # a symlink loop
        inside = False
    if not inside:
        raise UsageError(f"{str(source)!r}: {key} = {value!r} points outside {str(base)!r}")
    if must_exist:
        if not p.exists():
            raise UsageError(f"{str(source)!r} lists {value!r} ({key}) but the file is missing")
        if not p.is_file():
            raise UsageError(f"{str(source)!r}: {key} = {value!r} is not a regular file")
    return p


def budget_path(budget: Path, value, *, key: str, flag: str, base: Path | None = None) -> Path:
    """A path a budget file names (``artifacts``, ``[data] source``), resolved.

    Relative to ``base`` (default: the budget file's directory). After symlinks are
    resolved it must lie inside the budget file's directory or the current working
    directory; anything else is a usage error naming the file, the key and the
    command-line option (``flag``) that gives such a path instead.
    """
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        raise UsageError(f"{str(budget)!r}: {key} must be a non-empty path (without NUL bytes)")
    p = (budget.parent if base is None else base) / value
    roots = [budget.parent]
    try:
        roots.append(Path.cwd())
    except OSError:  # the working directory was removed
        pass
    try:
        real = p.resolve()
        inside = any(real.is_relative_to(r.resolve()) for r in roots)
    except (OSError, RuntimeError):  # a symlink loop
        inside = False
    if not inside:
        raise UsageError(f"{str(budget)!r}: {key} = {value!r} points outside the budget file's directory and "
                         f"the working directory; give such a path on the command line ({flag})")
    return real


def read_manifest(path: Path) -> dict:
    regular_file(path, what="export manifest")  # no FIFO, device or empty file
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read export manifest {str(path)!r}: {one_line(e, 200)}") from None
    if not isinstance(m, dict) or not isinstance(m.get("artifacts"), list) \
            or not all(isinstance(a, dict) for a in m["artifacts"]):
        raise UsageError(f"{str(path)!r} is not a mobiledeploy export manifest (no 'artifacts' list)")
    return m


def recorded_file(mpath: Path, entry: dict, *, key: str = "artifacts[].file") -> Path:
    """The file a manifest entry names, inside the manifest's directory, holding the bytes the
    export recorded: its ``size_bytes``, then its ``sha256`` (hashed once per file and process).

    A file changed or replaced after export (an fp32 model copied over the int8 one) is a
    ``ValidationError`` (exit 1) naming it: what the manifest says about it (precision,
    recipe, resolution) would describe other bytes.
    """
    p = contained_path(mpath.parent, entry.get("file"), key=key, source=mpath)
    size, digest = entry.get("size_bytes"), entry.get("sha256")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise UsageError(f"{str(mpath)!r}: size_bytes of {p.name!r} must be a byte count, not {str(size)[:40]!r}")
    if digest is not None and not (isinstance(digest, str) and re.fullmatch(r"[0-9a-fA-F]{64}", digest)):
        raise UsageError(f"{str(mpath)!r}: sha256 of {p.name!r} must be 64 hex digits, not {str(digest)[:80]!r}")
    st = p.stat()
    what = None
    if size is not None and st.st_size != size:
        what = f"{st.st_size:,} bytes where the export wrote {size:,}"
    elif digest is not None and _sha256(str(p.resolve()), st.st_size, st.st_mtime_ns, st.st_ino) != digest.lower():
        what = "its sha256 differs from the one the export recorded"
    if what:
        raise ValidationError(f"{str(p)!r} is not the file {str(mpath)!r} describes ({what}): it was changed or "
                              "replaced after export; export again, or copy it out of the export directory to use "
                              "it on its own")
    return p


@functools.lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int, inode: int) -> str:
    """Once per file version (size, mtime and inode are part of the key)."""
    return io.sha256_file(path)


def _from_manifest(mpath: Path, m: dict, entry: dict) -> ModelRef:
    model = m.get("model") or {}
    p = recorded_file(mpath, entry)
    return ModelRef(path=str(p), format=entry.get("format") or inspect.detect_format(p),
                    precision=entry.get("precision") or inspect.precision(p),
                    preprocessing=model.get("preprocessing"), resolution=model.get("resolution"),
                    manifest=str(mpath), source=_float_source(mpath, m), calibration=m.get("calibration"),
                    quantization=m.get("quantization"),
                    arch=model.get("arch"), alpha=_float(model.get("alpha")), degraded=degraded_mark(entry))


def degraded_note(degraded: dict | None) -> str:
    """'' or what the export measured: ``degraded (agreement 53% < 90%)``."""
    if not degraded:
        return ""
    figures = _figures(degraded)
    return "degraded" + (f" (agreement {figures})" if figures else "")


# How every command shows the mark (bench, eval, sweep, check): a marker next to the artifact's
# name in tables, and one note under them with the figures.
DEGRADED_MARK = "[degraded]"


def marked(name: str, degraded: dict | None) -> str:
    """``name``, followed by the marker when the export marked the artifact degraded."""
    return f"{name} {DEGRADED_MARK}" if degraded else name


def degraded_notes(items) -> list[str]:
    """One line naming every marked artifact with its figures (``(name, degraded)`` pairs), or none."""
    named = [f"{name} {_figures(d)}".rstrip() for name, d in items if d]
    if not named:
        return []
    return [f"{DEGRADED_MARK}: the export measured top-1 agreement with the float model below its floor on its "
            f"validation samples (manifest: agreement_floor): {', '.join(named)}"]


def _figures(d: dict) -> str:
    a, f = d.get("top1_agreement"), d.get("floor")
    return f"{a:.0%} < {f:.0%}" if a is not None and f is not None else ""


def degraded_mark(entry: dict) -> dict | None:
    """From a manifest's artifact entry: the export's mark on a quantized artifact whose top-1 agreement with the float model fell below
    its floor (``degraded: true`` with ``agreement_floor``), as numbers; None when not marked."""
    if entry.get("degraded") is not True:
        return None
    rec = entry.get("agreement_floor") if isinstance(entry.get("agreement_floor"), dict) else {}
    return {"top1_agreement": _float(rec.get("top1_agreement")), "floor": _float(rec.get("floor"))}


def _float(v) -> float | None:
    try:
        return float(v) if v is not None else None
    except (TypeError, ValueError):
        return None


def _float_source(mpath: Path, m: dict) -> str | None:
    """The export's float Keras model, inside its directory: the ``.keras`` artifact, else the
    manifest's ``source_model.file``. Never ``model.source``: that is where export loaded it
    from, on another machine perhaps, and a path outside the directory (``--source-model``
    names one on purpose)."""
    keras_src = next((a for a in m["artifacts"] if a.get("format") == "keras" and a.get("file")), None)
    if keras_src:
        return str(recorded_file(mpath, keras_src))
    src = m.get("source_model")
    if isinstance(src, dict) and src.get("file") is not None:
        return str(recorded_file(mpath, src, key="source_model.file"))
    return None


def export_refs(directory: Path, *, formats=MODEL_FORMATS, flag: str = "MODEL") -> list[ModelRef]:
    """The artifacts of one directory, in ``formats``: its manifest's entries (the .keras source
    first), or, without a manifest, every model file in it."""
    mpath = directory / "manifest.json"
    if not (mpath.exists() or mpath.is_symlink()):  # a FIFO or a link is a manifest to refuse, not none

        suffixes = {"keras": KERAS_SUFFIXES, **{rt.format: rt.suffixes for rt in RUNTIMES.values()}}
        want = tuple(s for f in formats for s in suffixes[f])
        files = sorted(f for f in directory.iterdir() if f.is_file() and f.suffix.lower() in want)
        if not files:
            kinds = " or ".join("." + f for f in formats if f != "keras")
            raise UsageError(f"directory {str(directory)!r} ({flag}) holds no {kinds} models and has no "
                             "manifest.json; pass model files or a directory written by `mobiledeploy export`")
        return [ModelRef(path=str(f), format=inspect.detect_format(f), precision=inspect.precision(f))
                for f in files]
    m = read_manifest(mpath)
    entries = [a for a in m["artifacts"] if a.get("format") in formats]
    entries.sort(key=lambda a: a.get("format") != "keras")  # the float source first
    if not entries:
        raise UsageError(f"export manifest {str(mpath)!r} lists no {'/'.join('.' + f for f in formats)} artifacts")
    return [_from_manifest(mpath, m, a) for a in entries]


def resolve_models(paths, *, flag: str = "MODEL", formats=MODEL_FORMATS) -> list[ModelRef]:
    """Files and export directories -> ``ModelRef`` list, one row per file (usage error for anything else)."""
    out: list[ModelRef] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise UsageError(f"model not found ({flag}): {str(p)!r}")
        if p.is_dir():
            out += export_refs(p, formats=formats, flag=flag)
            continue
        out.append(file_ref(p))
    seen, unique = set(), []
    for r in out:
        key = os.path.realpath(r.path)
        if key not in seen:
            seen.add(key)
            unique.append(r)
    return unique


def file_ref(p: Path) -> ModelRef:
    """One model file, described by the manifest beside it when that manifest lists it."""
    fmt = inspect.detect_format(p)
    mpath = p.parent / "manifest.json"
    if mpath.is_file():
        try:
            m = read_manifest(mpath)
            entry = next((a for a in m["artifacts"] if a.get("file") == p.name), None)
            if entry is not None:
                return _from_manifest(mpath, m, entry)
        except UsageError:
            pass  # a broken manifest beside a file does not stop the file from being used
    return ModelRef(path=str(p), format=fmt, precision=inspect.precision(p))


def default_reference(refs: list[ModelRef]) -> ModelRef | None:
    """The float model of the first export among ``refs``: its .keras source, else fp32 TFLite/ONNX."""
    for r in refs:
        if r.manifest is None:
            continue
        m = read_manifest(Path(r.manifest))
        cands = [_from_manifest(Path(r.manifest), m, a) for a in m["artifacts"]
                 if a.get("format") in MODEL_FORMATS and a.get("file")
                 and (Path(r.manifest).parent / a["file"]).is_file()]
        for fmt in ("keras", "tflite", "onnx"):
            for c in cands:
                if c.format == fmt and c.precision in ("fp32", "float32"):
                    return c
        return None
    return None


# ---------------------------------------------------------------- shapes, without a runtime


def model_input(r: ModelRef, *, unsafe_load: bool = False, layout: str | None = None) -> tuple[int, int, int]:
    """(height, width, channels) of the model's single image input; resolution is height.

    NHWC or NCHW, as ``model_layout`` reads it (``layout`` overrides)."""
    return image_dims(_input_shape(r, unsafe_load), model_layout(r, layout, unsafe_load=unsafe_load), name=r.name)


def model_layout(r: ModelRef, override: str | None = None, *, unsafe_load: bool = False) -> str:
    """'nhwc' or 'nchw': Keras models are NHWC; files by their input shape (``models/preprocessing.py``)."""
    if r.format == "keras":
        return "nhwc"
    if not override:
        meta = onnx_metadata(r.path) if r.format == "onnx" else {}
        override = (meta.get("layout") or "").lower() or None
    return layout_of(_input_shape(r, unsafe_load), override, name=r.name)


def _input_shape(r: ModelRef, unsafe_load: bool) -> tuple:
    try:
        if r.format == "keras":
            shape = tuple(load_keras(r.path, unsafe_load).inputs[0].shape)
        else:
            ins = inspect.inputs(r.path)
            if len(ins) != 1:
                raise UsageError(f"{r.name} has {len(ins)} inputs; eval needs one image input")
            shape = ins[0].shape
    except UsageError:
        raise
    except Exception as e:
        raise UsageError(f"{r.name} is not a readable {r.format} model (cannot read its input shape: "
                         f"{one_line(e, 160)})") from None
    return tuple(shape)


@functools.lru_cache(maxsize=8)
def load_keras(path: str, unsafe: bool = False):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # no C++ INFO/WARNING lines from TensorFlow

    return load_model(path, unsafe=unsafe)


def preprocessing_for(r: ModelRef, *, override: str | None = None, unsafe_load: bool = False) -> str:
    """The flag, else the manifest, else the architecture of a Keras model; UsageError if unknown."""
    if override:
        return get_preprocessing(override).name
    if r.preprocessing:
        return get_preprocessing(r.preprocessing, flag=f"manifest of {r.name}").name
    meta = metadata_preprocessing(onnx_metadata(r.path)) if r.format == "onnx" else None
    if meta:
        return get_preprocessing(meta, flag=f"metadata of {r.name}").name
    if r.format == "keras":
        name = load_keras(r.path, unsafe_load).name or ""
        for a in ARCHS.values():
            if a.name_pattern and re.match(a.name_pattern, name):
                return a.preprocessing

    raise UsageError(f"preprocessing unknown for {r.name} (no manifest.json beside it or metadata records it); "
                     f"pass --preprocessing ({'|'.join(PREPROCESSING)}) or --mean/--std")

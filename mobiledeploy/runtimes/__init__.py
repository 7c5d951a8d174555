"""Runtimes as a small registry: LiteRT for .tflite, ONNX Runtime for .onnx.

This module never imports TensorFlow. A ``Session`` wraps one loaded model with
its input/output specs and two ways to run it:

- ``run(feeds)``: raw tensors in, raw tensors out (what a benchmark times, after
  ``set_inputs``/``invoke``);
- ``predict(session, x)``: float data in, float outputs out, quantizing int8/uint8
  inputs and dequantizing outputs with each tensor's scale and zero point.

Adding a runtime is one session class (``set_inputs``/``invoke``/``get_outputs`` and
its ``inputs``/``outputs`` specs) and one row in ``RUNTIMES``; the row's ``suffixes`` (and
``magic``) are how ``detect_format`` recognises its files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from mobiledeploy.errors import RuntimeFailure, UsageError, one_line
from mobiledeploy.guards import check_model_file

@dataclass(frozen=True)
class TensorSpec:
    """One model input or output. ``shape`` holds None for dynamic dimensions."""

    name: str
    shape: tuple[int | None, ...]
    dtype: np.dtype
    scale: float = 0.0  # quantization parameters (0.0 = not quantized)
    zero_point: int = 0

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0 and np.issubdtype(self.dtype, np.integer)

    def to_json(self) -> dict:
        return {"name": self.name, "shape": [d if d is not None else -1 for d in self.shape],
                "dtype": np.dtype(self.dtype).name,
                "quantization": {"scale": self.scale, "zero_point": self.zero_point} if self.quantized else None}


class Session(Protocol):
    runtime: str
    path: Path
    threads: int | None
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def input_shape(self, name: str) -> tuple[int, ...]: ...  # concrete, after --shape and batch 1
    def set_inputs(self, feeds: dict[str, np.ndarray]) -> None: ...
    def invoke(self) -> None: ...
    def get_outputs(self) -> list[np.ndarray]: ...


def run(session: Session, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session.set_inputs(feeds)
    session.invoke()
    return session.get_outputs()


# ---------------------------------------------------------------- LiteRT


class LiteRTSession:
    runtime = "litert"

    def __init__(self, path: Path, *, threads: int | None, xnnpack: bool = True,
                 shapes: dict[str, tuple[int, ...]] | None = None, **_ignored) -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        self.path, self.threads, self.xnnpack = path, threads, xnnpack
        resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            self._it = Interpreter(model_path=str(path), num_threads=threads,
                                   experimental_op_resolver_type=resolver)
            details = self._it.get_input_details()
            _check_shape_names(shapes, [d["name"] for d in details], path)
            _resolve_tflite_shapes(self._it, details, shapes or {})
            self._it.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise RuntimeFailure(f"LiteRT cannot load {path.name}: {one_line(e)}") from None
        self.inputs = [_tflite_spec(d) for d in self._it.get_input_details()]
        self.outputs = [_tflite_spec(d) for d in self._it.get_output_details()]
        self._in_idx = {d["name"]: d["index"] for d in self._it.get_input_details()}
        self._out_idx = [d["index"] for d in self._it.get_output_details()]

    def set_inputs(self, feeds: dict[str, np.ndarray]) -> None:
        for name, arr in feeds.items():
            self._it.set_tensor(self._in_idx[name], arr)

    def invoke(self) -> None:
        self._it.invoke()

    def get_outputs(self) -> list[np.ndarray]:
        return [self._it.get_tensor(i) for i in self._out_idx]

    @property
    def interpreter(self):
        return self._it

    def input_shape(self, name: str) -> tuple[int, ...]:
        return next(tuple(int(s) for s in d["shape"]) for d in self._it.get_input_details() if d["name"] == name)

def _tflite_spec(d: dict) -> TensorSpec:
    sig = d.get("shape_signature")
    shape = tuple(int(s) if s >= 0 else None for s in (sig if sig is not None and len(sig) else d["shape"]))
    scale, zp = d.get("quantization", (0.0, 0))
    return TensorSpec(d["name"], shape, np.dtype(d["dtype"]), float(scale), int(zp))


def _resolve_tflite_shapes(it, details, shapes: dict) -> bool:
    """Resize dynamic inputs: user shapes first, a dynamic batch defaults to 1."""
    resized = False
    for d in details:
        sig = d.get("shape_signature")
        sig = list(sig) if sig is not None and len(sig) else list(d["shape"])
        if d["name"] in shapes:
            want = list(shapes[d["name"]])
        elif any(s < 0 for s in sig):
            want = [1 if (i == 0 and s < 0) else s for i, s in enumerate(sig)]
            if any(s < 0 for s in want):
                raise UsageError(f"input {d['name']!r} has dynamic dimensions {_fmt_shape(sig)}; "
                                 f"give them with --shape {d['name']}=" + "x".join(
                                     "N" if s < 0 else str(s) for s in sig))
        else:
            continue
        if list(d["shape"]) != want:
            it.resize_tensor_input(d["index"], want, strict=False)
            resized = True
    return resized


# ---------------------------------------------------------------- ONNX Runtime

ORT_OPT_LEVELS = ("disable", "basic", "extended", "all")


class OrtSession:
    runtime = "onnxruntime"

    def __init__(self, path: Path, *, threads: int | None, ort_opt_level: str = "all",
                 shapes: dict[str, tuple[int, ...]] | None = None, profile: str | None = None,
                 **_ignored) -> None:
        import onnxruntime as ort

        self.path, self.threads = path, threads
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if ort_opt_level not in ORT_OPT_LEVELS:
            raise UsageError(f"unknown ONNX Runtime optimization level {ort_opt_level!r}; "
                             f"choose from {', '.join(ORT_OPT_LEVELS)}")
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[ort_opt_level]
        so.log_severity_level = 3
        if profile:  # ONNX Runtime's profiler writes <profile>_<date>.json (bench --profile)
            so.enable_profiling, so.profile_file_prefix = True, profile
        try:
            self._sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
            raise RuntimeFailure(f"ONNX Runtime cannot load {path.name}: {one_line(e)}") from None
        shapes = shapes or {}
        _check_shape_names(shapes, [i.name for i in self._sess.get_inputs()], path)
        self.inputs = []
        self._fixed_shapes: dict[str, tuple[int, ...]] = {}
        for i in self._sess.get_inputs():
            spec = TensorSpec(i.name, tuple(d if isinstance(d, int) and d >= 0 else None for d in i.shape),
                              _ort_dtype(i.type))
            self.inputs.append(spec)
            if i.name in shapes:
                self._fixed_shapes[i.name] = tuple(shapes[i.name])
            else:
                want = [1 if (k == 0 and d is None) else d for k, d in enumerate(spec.shape)]
                if any(d is None for d in want):
                    raise UsageError(f"input {i.name!r} has dynamic dimensions {_fmt_shape(i.shape)}; "
                                     f"give them with --shape {i.name}=" + "x".join(
                                         str(d) if d is not None else "N" for d in spec.shape))
                self._fixed_shapes[i.name] = tuple(want)
        self.outputs = [TensorSpec(o.name, tuple(d if isinstance(d, int) and d >= 0 else None for d in o.shape),
                                   _ort_dtype(o.type)) for o in self._sess.get_outputs()]
        self._out_names = [o.name for o in self.outputs]
        self._feeds: dict[str, np.ndarray] = {}
        self._result: list[np.ndarray] = []

    def input_shape(self, name: str) -> tuple[int, ...]:
        return self._fixed_shapes[name]

    def set_inputs(self, feeds: dict[str, np.ndarray]) -> None:
        self._feeds = dict(feeds)

    def invoke(self) -> None:
        self._result = self._sess.run(self._out_names, self._feeds)

    def get_outputs(self) -> list[np.ndarray]:
        return list(self._result)

    def end_profiling(self) -> str:
        """The profile JSON's path (a session opened with ``profile``)."""
        return self._sess.end_profiling()

def _ort_dtype(type_str: str) -> np.dtype:
    table = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
             "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(int16)": np.int16,
             "tensor(int32)": np.int32, "tensor(int64)": np.int64, "tensor(bool)": np.bool_}
    if type_str not in table:
        raise RuntimeFailure(f"unsupported ONNX tensor type {type_str}")
    return np.dtype(table[type_str])


# ---------------------------------------------------------------- registry


KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")  # Keras models: run by Keras itself (eval), never in a runtime


@dataclass(frozen=True)
class Runtime:
    name: str
    format: str  # the file format it runs
    module: str  # what to import to report its version
    session: type = field(repr=False)
    library: str = ""  # the module the session imports (preloaded by bench before measuring memory)
    label: str = ""  # how users call the format ("TFLite")
    suffixes: tuple[str, ...] = ()
    magic: bytes = b""  # file identifier at bytes 4..8 (FlatBuffers), if any
    package: str = ""  # the distribution to report the version of

    def load_library(self) -> None:
        import importlib

        importlib.import_module(self.library or self.module)

    def version(self) -> str:
        import importlib.metadata as md

        try:
            return md.version(self.package or self.module)
        except Exception:
            return "unknown"


RUNTIMES: dict[str, Runtime] = {
    "litert": Runtime("litert", "tflite", "ai_edge_litert", LiteRTSession, "ai_edge_litert.interpreter", "TFLite",
                      (".tflite",), b"TFL3", "ai-edge-litert"),
    "onnxruntime": Runtime("onnxruntime", "onnx", "onnxruntime", OrtSession, "", "ONNX", (".onnx",),
                           package="onnxruntime"),
}


def format_runtime() -> dict[str, str]:
    """{file format: runtime name}, from the registry."""
    return {rt.format: name for name, rt in RUNTIMES.items()}


def detect_format(path: str | os.PathLike) -> str:
    """'keras' by suffix, else a runtime's format: by its magic bytes, then by suffix; UsageError otherwise."""
    p = Path(path)
    if p.suffix.lower() in KERAS_SUFFIXES and p.is_dir():
        return "keras"  # a SavedModel-style directory: Keras says what is wrong with it
    if not p.exists():
        raise UsageError(f"model file not found: {str(p)!r}")
    if p.is_dir():
        raise UsageError(f"expected a model file, got a directory: {str(p)!r}")

    check_model_file(p)  # before anything opens it: no FIFO, device, empty or huge file
    if p.suffix.lower() in KERAS_SUFFIXES:
        return "keras"
    try:
        with open(p, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise UsageError(f"cannot read {str(p)!r}: {e.strerror or e}") from None
    rts = list(RUNTIMES.values())
    for rt in rts:
        if rt.magic and head[4:8] == rt.magic:
            return rt.format
    if _onnx_head(head) and any(rt.format == "onnx" for rt in rts):
        return "onnx"  # an ONNX file under another name (.tflite): by its content, like TFLite's magic
    for rt in rts:
        if p.suffix.lower() in rt.suffixes:
            return rt.format  # let the runtime say what is wrong with it
    kinds = " nor ".join(f"{'an' if rt.label[:1] in 'AEIOU' else 'a'} {rt.label}" for rt in rts)
    raise UsageError(f"{str(p)!r} is neither {kinds} model (expected {' or '.join(s for rt in rts for s in rt.suffixes)})")


def _onnx_head(head: bytes) -> bool:
    """ONNX has no magic; a serialized ModelProto starts with its ``ir_version`` field (tag 0x08,
    a small varint) followed by another field's tag (producer, graph, opset import ...)."""
    return len(head) >= 3 and head[0] == 0x08 and 1 <= head[1] <= 0x7F and head[2] in _ONNX_NEXT_TAGS


_ONNX_NEXT_TAGS = {0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x4A, 0x52, 0x5A, 0x62, 0x72, 0x7A}


def runtime_for(path: str | os.PathLike) -> Runtime:
    """The runtime that runs ``path`` (UsageError for a file no runtime here can run)."""
    fmt = detect_format(path)
    by_format = format_runtime()
    if fmt not in by_format:
        raise UsageError(f"{str(path)!r} is a {fmt} model; it runs in Keras, not in a runtime")
    return RUNTIMES[by_format[fmt]]


def open_session(path: str | os.PathLike, *, threads: int | None = None, xnnpack: bool = True,
                 ort_opt_level: str = "all", shapes: dict[str, tuple[int, ...]] | None = None,
                 profile: str | None = None) -> Session:
    """Load ``path`` on the runtime for its format (``profile``: ONNX Runtime's profiler file
    prefix). Raises UsageError / RuntimeFailure."""
    p = Path(path)
    rt = runtime_for(p)
    return rt.session(p, threads=threads, xnnpack=xnnpack, ort_opt_level=ort_opt_level, shapes=shapes,
                      profile=profile)


def input_shape(session: Session, spec: TensorSpec) -> tuple[int, ...]:
    """The concrete shape a session expects for ``spec`` (after dynamic dims are resolved)."""
    return tuple(session.input_shape(spec.name))


def quantize_input(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Float data -> the tensor's dtype, using its scale and zero point where quantized."""
    if spec.quantized:
        info = np.iinfo(spec.dtype)
        q = np.round(x / spec.scale + spec.zero_point)
        return np.clip(q, info.min, info.max).astype(spec.dtype)
    return x.astype(spec.dtype, copy=False)


def dequantize_output(y: np.ndarray, spec: TensorSpec) -> np.ndarray:
    if spec.quantized:
        return (y.astype(np.float32) - spec.zero_point) * np.float32(spec.scale)
    return y.astype(np.float32, copy=False)


def predict(session: Session, x: np.ndarray, *, output: int = 0) -> np.ndarray:
    """Run a single-input model over a float batch ``x`` (N, ...) one sample at a time.

    Returns the float (dequantized) output ``output`` stacked to (N, ...). Models whose
    batch dimension is fixed at 1 (what TFLite converters produce) are handled alike.
    """
    if len(session.inputs) != 1:
        raise UsageError(f"{session.path.name} has {len(session.inputs)} inputs; predict needs exactly one")
    spec = session.inputs[0]
    want = input_shape(session, spec)
    if tuple(x.shape[1:]) != tuple(want[1:]):
        raise UsageError(f"{session.path.name} expects input shape {_fmt_shape(want)}, "
                         f"data has samples of shape {_fmt_shape(x.shape[1:])}")
    out_spec = session.outputs[output]
    results = []
    for i in range(x.shape[0]):
        raw = run(session, {spec.name: quantize_input(x[i:i + 1], spec)})[output]
        results.append(dequantize_output(raw, out_spec))
    return np.concatenate(results, axis=0) if results else np.zeros((0,), np.float32)


def random_inputs(session: Session, *, seed: int = 0) -> dict[str, np.ndarray]:
    """Random data of each input's dtype and concrete shape.

    Float inputs: uniform in [-1, 1] (the MobileNet preprocessed range). Quantized
    int8/uint8 inputs: uniform float data over the range the tensor can represent,
    ``(qmin - zero_point) * scale .. (qmax - zero_point) * scale``, quantized with the
    tensor's scale and zero point. Other integer inputs: integers in [0, 100) clipped to
    the dtype; booleans: fair coin flips.
    """
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in session.inputs:
        shape = input_shape(session, spec)
        dt = np.dtype(spec.dtype)
        if spec.quantized:
            info = np.iinfo(dt)
            lo, hi = (info.min - spec.zero_point) * spec.scale, (info.max - spec.zero_point) * spec.scale
            feeds[spec.name] = quantize_input(rng.uniform(lo, hi, size=shape).astype(np.float32), spec)
        elif dt == np.bool_:
            feeds[spec.name] = rng.integers(0, 2, size=shape).astype(np.bool_)
        elif np.issubdtype(dt, np.integer):
            info = np.iinfo(dt)
            feeds[spec.name] = rng.integers(max(0, info.min), min(100, info.max), size=shape).astype(dt)
        else:
            feeds[spec.name] = rng.uniform(-1, 1, size=shape).astype(dt)
    return feeds


def _check_shape_names(shapes: dict | None, names: list[str], path: Path) -> None:
    for name in shapes or {}:
        if name not in names:
            raise UsageError(f"--shape {name}=...: {path.name} has no input named {name!r}; "
                             f"its inputs are {', '.join(repr(n) for n in names)}")


def _fmt_shape(shape: Sequence) -> str:
    return "x".join("?" if (d is None or (isinstance(d, int) and d < 0) or isinstance(d, str)) else str(d)
                    for d in shape)

"""What a model file is, read from its bytes: format (``runtimes.detect_format``), precision and inputs.

The one place that answers these questions for every command (bench, eval, info,
estimate, check). It never runs a model and never imports TensorFlow: TFLite files are
read through the flatbuffer schema shipped with LiteRT, ONNX files through ``onnx``
(protobuf, external data not loaded).

Precision, by the weighted layers (convolutions, depthwise convolutions, dense):

- ``int8``: their activations are 8-bit integers (TFLite int8/uint8 tensors; ONNX
  ``QuantizeLinear``/``QLinearConv``/``QLinearMatMul`` static quantization);
- ``dynamic``: 8-bit weights with float activations (TFLite dynamic range; ONNX
  ``DynamicQuantizeLinear``/``ConvInteger``/``MatMulInteger``, or weight-only
  ``DequantizeLinear``);
- ``fp16``: float16 weights (TFLite ``DEQUANTIZE`` of float16 constants; ONNX float16
  initializers outnumbering float32 ones);
- ``fp32`` otherwise. Keras files are ``fp32``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mobiledeploy.errors import UsageError, one_line
from mobiledeploy.guards import check_model_file
from mobiledeploy.runtimes import detect_format  # noqa: F401 - the one format check, re-exported

PRECISIONS = ("fp32", "fp16", "dynamic", "int8", "unknown")
_WEIGHTED_TFLITE = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
_ONNX_DYNAMIC = {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"}
_ONNX_STATIC = {"QuantizeLinear", "QLinearConv", "QLinearMatMul"}


@dataclass(frozen=True)
class InputInfo:
    """One model input: ``shape`` holds None for a dynamic dimension."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str


def precision(path: str | os.PathLike) -> str:
    """fp32 | fp16 | dynamic | int8, or 'unknown' for a file that cannot be parsed."""
    fmt = detect_format(path)
    if fmt == "keras":
        return "fp32"
    try:
        return _tflite_precision(Path(path)) if fmt == "tflite" else _onnx_precision(Path(path))
    except Exception:  # a damaged file: the runtime that loads it will say what is wrong
        return "unknown"


def inputs(path: str | os.PathLike) -> list[InputInfo]:
    """The graph inputs of a TFLite or ONNX file (UsageError if it cannot be read)."""
    p = Path(path)
    fmt = detect_format(p)
    if fmt == "keras":
        raise UsageError(f"{p.name}: a Keras model's inputs are read by loading it, not from its bytes")
    try:
        return _tflite_inputs(p) if fmt == "tflite" else _onnx_inputs(p)
    except UsageError:
        raise
    except Exception as e:
        raise UsageError(f"{p.name} is not a readable {fmt} model (cannot read its inputs: "
                         f"{one_line(e, 160)})") from None


def concrete_shapes(ins: list[InputInfo], shapes: dict | None, path: str | os.PathLike) -> dict[str, tuple]:
    """``{input name: concrete shape}``, as ``bench`` runs them: ``--shape`` first (its rank and
    fixed dimensions must match), a dynamic batch dimension is 1, any other dynamic dimension
    is a usage error naming the input and ``--shape`` (never a silent guess)."""
    shapes = dict(shapes or {})
    names = [i.name for i in ins]
    for name in shapes:
        if name not in names:
            raise UsageError(f"--shape {name}=...: {Path(path).name} has no input named {name!r}; "
                             f"its inputs are {', '.join(repr(n) for n in names)}")
    out = {}
    for i in ins:
        pattern = "x".join("N" if d is None else str(d) for d in i.shape)
        if i.name in shapes:
            want = tuple(int(d) for d in shapes[i.name])
            if len(want) != len(i.shape) or any(d is not None and d != w for d, w in zip(i.shape, want)):
                raise UsageError(f"--shape {i.name}={'x'.join(map(str, want))} does not fit input {i.name!r} "
                                 f"of {Path(path).name}, whose shape is {pattern}")
        else:
            want = tuple(1 if (k == 0 and d is None) else d for k, d in enumerate(i.shape))
            if any(d is None for d in want):
                raise UsageError(f"input {i.name!r} of {Path(path).name} has dynamic dimensions {pattern}; "
                                 f"give them with --shape {i.name}={pattern}")
        out[i.name] = want
    return out


# ---------------------------------------------------------------- TFLite (flatbuffer schema)


def tflite_model(p: Path):
    """(root Model object, schema module) of a .tflite file."""
    from ai_edge_litert import schema_py_generated as schema

    check_model_file(p)
    buf = p.read_bytes()
    return schema.Model.GetRootAsModel(buf, 0), schema


def _enum_names(enum) -> dict[int, str]:
    return {v: k for k, v in vars(enum).items() if not k.startswith("_")}


def _tflite_inputs(p: Path) -> list[InputInfo]:
    model, schema = tflite_model(p)
    types = _enum_names(schema.TensorType)
    sg = model.Subgraphs(0)
    out = []
    for k in range(sg.InputsLength()):
        t = sg.Tensors(sg.Inputs(k))
        sig = t.ShapeSignatureAsNumpy() if t.ShapeSignatureLength() else t.ShapeAsNumpy()
        out.append(InputInfo((t.Name() or b"").decode(), tuple(int(d) if d >= 0 else None for d in sig),
                             types.get(t.Type(), "?").lower()))
    return out


def _tflite_precision(p: Path) -> str:
    model, schema = tflite_model(p)
    ops_by_code = _enum_names(schema.BuiltinOperator)
    types = _enum_names(schema.TensorType)
    sg = model.Subgraphs(0)

    def op_name(op) -> str:
        code = model.OperatorCodes(op.OpcodeIndex())
        return ops_by_code.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?")

    def ttype(i: int) -> str:
        return types.get(sg.Tensors(i).Type(), "?").lower()

    ops = [sg.Operators(k) for k in range(sg.OperatorsLength())]
    weighted = [(ttype(op.Inputs(0)), ttype(op.Inputs(1))) for op in ops
                if op_name(op) in _WEIGHTED_TFLITE and op.InputsLength() >= 2]
    if not weighted:  # no convolution or dense layer: go by the tensor types
        types = {ttype(i) for i in range(sg.TensorsLength())}
        return "int8" if types & {"int8", "uint8"} else "fp16" if "float16" in types else "fp32"
    if any(act in ("int8", "uint8", "int16") for act, _ in weighted):
        return "int8"
    if any(w in ("int8", "uint8") for _, w in weighted):
        return "dynamic"  # converters leave small weights in float: one 8-bit layer decides
    fp16_weights = any(op_name(op) == "DEQUANTIZE" and ttype(op.Inputs(0)) == "float16" for op in ops)
    return "fp16" if fp16_weights or any(w == "float16" for _, w in weighted) else "fp32"


# ---------------------------------------------------------------- ONNX (protobuf)


def onnx_model(p: Path):
    import onnx

    check_model_file(p)
    return onnx.load(str(p), load_external_data=False)


def _onnx_inputs(p: Path) -> list[InputInfo]:
    import onnx

    g = onnx_model(p).graph
    inits = {i.name for i in g.initializer}
    out = []
    for i in g.input:
        if i.name in inits:
            continue
        t = i.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)
        out.append(InputInfo(i.name, dims, onnx.TensorProto.DataType.Name(t.elem_type).lower()))
    return out


def _onnx_precision(p: Path) -> str:
    import onnx

    g = onnx_model(p).graph
    ops = {n.op_type for n in g.node}
    if ops & _ONNX_DYNAMIC:
        return "dynamic"
    if ops & _ONNX_STATIC:
        return "int8"
    if "DequantizeLinear" in ops:
        return "dynamic"  # weight-only: int8 initializers decoded to float
    types = [t.data_type for t in g.initializer]
    n16, n32 = types.count(onnx.TensorProto.FLOAT16), types.count(onnx.TensorProto.FLOAT)
    return "fp16" if n16 and n16 >= n32 else "fp32"


def readable(model: str | os.PathLike) -> bool:
    """False when the project's own reader cannot parse ``model`` (the check ``info`` and ``eval``
    make): the file is corrupt, the runtime is not at fault. True where the reader's library
    is missing. ``bench`` asks it in the parent when the child could not open a model."""
    import importlib.util

    if importlib.util.find_spec("onnx" if detect_format(model) == "onnx" else "ai_edge_litert") is None:
        return True
    try:
        inputs(model)
    except UsageError:
        return False
    return True

"""Damaged model files: the ONNX and TFLite readers of the cost model give one clear error line,
never an internal error; an op the cost model does not know is one ``warning:`` line."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import one_line_error
from mobiledeploy.cli import cli
from mobiledeploy.errors import UsageError


def _onnx(path, nodes, inits, x_shape=(1, 3, 8, 8), y_shape=None):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _init(name, array, dims=None):
    """An initializer; ``dims`` overrides its shape (as a damaged file can) without touching its data."""
    from onnx import numpy_helper

    t = numpy_helper.from_array(np.asarray(array), name)
    if dims is not None:
        del t.dims[:]
        t.dims.extend(dims)
    return t


def _conv_model(path, w_dims=None):
    from onnx import helper

    w = np.ones((4, 3, 3, 3), np.float32)
    return _onnx(path, [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])],
                 [_init("w", w, w_dims)])


def _qdq_conv_model(path, w_dims):
    """An int8 QDQ graph (DequantizeLinear of an int8 initializer feeding a Conv), its weight's rank damaged."""
    from onnx import helper

    w = np.ones((4, 3, 3, 3), np.int8)
    return _onnx(path, [helper.make_node("DequantizeLinear", ["wq", "s", "z"], ["w"], name="dq"),
                        helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])],
                 [_init("wq", w, w_dims), _init("s", np.float32(0.1)), _init("z", np.int8(0))])


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.mark.parametrize("command", [("info",), ("estimate", "--target", "pixel4")])
@pytest.mark.parametrize("make,dims", [(_conv_model, (108,)), (_conv_model, (4, 27)), (_qdq_conv_model, (108,)),
                                       (_qdq_conv_model, ())])
def test_a_weight_of_too_low_rank_is_one_error_line(tmp_path, command, make, dims):
    path = make(tmp_path / "m.onnx", dims)
    r = _run(command[0], path, *command[1:])
    one_line_error(r, 2, "cannot read ONNX model", "conv", "Conv", "weight of shape")


def test_the_undamaged_models_are_read(tmp_path):
    for make in (_conv_model, _qdq_conv_model):
        r = _run("info", make(tmp_path / f"{make.__name__}.onnx", None if make is _conv_model else (4, 3, 3, 3)))
        assert r.exit_code == 0, r.stderr
        assert "112 parameters" in r.stdout  # 4*3*3*3 weights + 4 biases


def test_gemm_and_matmul_weights_of_too_low_rank(tmp_path):
    from onnx import helper

    gemm = _onnx(tmp_path / "gemm.onnx", [helper.make_node("Gemm", ["x", "w"], ["y"], name="fc", transB=1)],
                 [_init("w", np.ones((10, 12), np.float32), (120,))], x_shape=(1, 12))
    one_line_error(_run("info", gemm), 2, "cannot read ONNX model", "fc", "Gemm", "weight of shape (120,)")
    matmul = _onnx(tmp_path / "matmul.onnx", [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
                   [_init("w", np.float32(2.0))], x_shape=(1, 12))
    one_line_error(_run("estimate", matmul, "--target", "pixel4"), 2, "cannot read ONNX model", "mm",
                   "weight of shape ()")


def test_a_negative_dimension_is_one_error_line(tmp_path):
    one_line_error(_run("info", _conv_model(tmp_path / "neg.onnx", (4, 3, -3, 3))), 2,
                   "cannot read ONNX model", "negative dimension")


def test_malformed_attributes_are_one_error_line(tmp_path):
    from onnx import helper

    path = _onnx(tmp_path / "group.onnx", [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", group="two")],
                 [_init("w", np.ones((4, 3, 3, 3), np.float32))])
    one_line_error(_run("info", path), 2, "cannot read ONNX model", "conv", "malformed")


def test_tflite_weights_of_too_low_rank():
    from mobiledeploy.cost import graph

    tensors = {0: {"name": "x", "shape": [1, 8, 8, 3]}, 1: {"name": "w", "shape": [4, 27]},
               2: {"name": "y", "shape": [1, 8, 8, 4]}}
    ops = [{"index": 0, "op_name": "CONV_2D", "inputs": [0, 1], "outputs": [2]}]
    with pytest.raises(graph._Malformed, match=r"CONV_2D.*\(4, 27\)"):
        graph._tflite_nodes(ops, tensors, {0})
    tensors[1]["shape"] = [10]
    ops[0]["op_name"] = "FULLY_CONNECTED"
    with pytest.raises(graph._Malformed, match="FULLY_CONNECTED"):
        graph._tflite_nodes(ops, tensors, {0})
    ops[0]["outputs"] = [7]  # a tensor index the file does not have
    ops[0]["op_name"] = "ADD"
    with pytest.raises(KeyError):
        graph._tflite_nodes(ops, tensors, {0})


def test_tflite_reader_turns_a_malformed_graph_into_a_usage_error(tiny_tflite, monkeypatch):
    from mobiledeploy.cost import graph

    real = graph._tflite_nodes

    def broken(ops, tensors, inputs):
        return real([{"index": 0, "op_name": "CONV_2D", "inputs": [0, 1], "outputs": [2]}],
                                   {0: {"name": "x", "shape": [1]}, 1: {"name": "w", "shape": [3]},
                                    2: {"name": "y", "shape": [1]}}, {0})

    monkeypatch.setattr(graph, "_tflite_nodes", broken)
    with pytest.raises(UsageError, match="cannot read TFLite model.*CONV_2D"):
        graph.tflite_nodes(tiny_tflite)


@pytest.mark.parametrize("command", [("info",), ("estimate", "--target", "pixel4")])
def test_an_unknown_op_is_one_warning_line(tmp_path, command):
    from onnx import helper

    path = _onnx(tmp_path / "erf.onnx", [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
                                         helper.make_node("Erf", ["c"], ["y"], name="erf")],
                 [_init("w", np.ones((4, 3, 3, 3), np.float32))])
    r = _run(command[0], path, *command[1:])
    assert r.exit_code == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "Erf" in ln]
    assert lines[0].startswith("warning: op 'Erf' (erf) is not classified"), r.stderr
    assert all(ln.startswith(("warning: ", "note: ")) for ln in lines), r.stderr  # estimate adds its summary
    assert "UnknownOpWarning" not in r.stderr and "warnings.warn" not in r.stderr and ".py:" not in r.stderr

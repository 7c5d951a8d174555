"""Agreement metrics through `evaluate()` on hand-built ONNX models whose answers are known exactly.

A: scores = per-channel mean of the image (3 classes). B = 1.1 * A: same argmax, noise
0.1 * A, so SQNR = 10 log10(1 / 0.01) = 20 dB and max |diff| = 0.1 max |A|. C = -A:
argmax becomes argmin, so top-1 agreement is 0 and SQNR = 10 log10(1/4) = -6.02 dB.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from mobiledeploy.data.datasets import Dataset
from mobiledeploy.accuracy.evaluate import evaluate


def _onnx(path, factor: float) -> str:
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("ReduceMean", ["input"], ["mean"], axes=[1, 2], keepdims=0),
             helper.make_node("Mul", ["mean", "factor"], ["scores"])]
    graph = helper.make_graph(
        nodes, "known", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 4, 4, 3])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, 3])],
        initializer=[helper.make_tensor("factor", TensorProto.FLOAT, [], [factor])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


def test_agreement_and_accuracy_known_answers(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(0.1, 1.0, size=(10, 4, 4, 3)).astype(np.float32)
    means = x.mean(axis=(1, 2))
    truth = np.argmax(means, axis=1)
    y = truth.copy()
    y[5:] = (truth[5:] + 1) % 3  # the last five labels are wrong on purpose: top-1 is exactly 0.5
    ds = Dataset(x=x, y=y.astype(np.int64), class_names=("a", "b", "c"), source="known", preprocessing="as-is")
    a, b, c = (_onnx(tmp_path / f"{n}.onnx", f) for n, f in (("a", 1.0), ("b", 1.1), ("c", -1.0)))

    rep = evaluate([a, b, c], ds, reference=a)
    ra, rb, rc = rep.results
    assert ra.agreement is None and ra.top1 == 0.5 and ra.top5 is None  # 3 classes: no top-5
    assert rb.top1 == 0.5
    assert rc.top1 == pytest.approx(np.mean(np.argmin(means, axis=1) == y))  # C predicts the argmin
    assert rb.agreement.top1_agreement == 1.0
    assert rb.agreement.sqnr_db == pytest.approx(20.0, abs=1e-3)
    assert rb.agreement.max_abs_diff == pytest.approx(0.1 * np.abs(means).max(), rel=1e-4)
    assert rb.agreement.mean_abs_diff == pytest.approx(0.1 * np.abs(means).mean(), rel=1e-4)
    assert rc.agreement.top1_agreement == 0.0
    assert rc.agreement.sqnr_db == pytest.approx(10 * math.log10(0.25), abs=1e-3)
    np.testing.assert_allclose(ra.outputs, means, rtol=1e-5)  # the runtime really computed A
    assert rep.to_json()["results"][1]["agreement"]["sqnr_db"] == pytest.approx(20.0, abs=1e-3)

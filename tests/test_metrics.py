"""mobiledeploy.metrics: exact values on hand-made arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mobiledeploy.errors import UsageError, ValidationError
from mobiledeploy.metrics import max_abs_diff, mean_abs_diff, sqnr_db, top1_agreement, topk_accuracy


def test_max_and_mean_abs_diff():
    ref = np.array([[1.0, -2.0, 3.0]])
    out = np.array([[1.5, -2.0, 2.0]])
    assert max_abs_diff(ref, out) == pytest.approx(1.0)
    assert mean_abs_diff(ref, out) == pytest.approx(0.5)
    assert max_abs_diff(ref, ref) == 0.0
    assert max_abs_diff(np.zeros((0, 3)), np.zeros((0, 3))) == 0.0


def test_shape_mismatch_is_a_validation_error():
    with pytest.raises(ValidationError, match=r"\(2, 3\).*\(2, 4\)"):
        max_abs_diff(np.zeros((2, 4)), np.zeros((2, 3)))
    with pytest.raises(ValidationError):
        sqnr_db(np.zeros(3), np.zeros(4))


def test_top1_agreement():
    ref = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    out = np.array([[0.2, 0.8], [0.4, 0.6], [0.1, 0.9], [0.5, 0.5 - 1e-3]])
    assert top1_agreement(ref, out) == pytest.approx(0.75)
    assert top1_agreement(ref[0], out[0]) == 1.0  # one sample as a 1-D vector
    assert math.isnan(top1_agreement(np.zeros((0, 2)), np.zeros((0, 2))))


def test_sqnr_db_definition():
    ref = np.array([3.0, 4.0])           # signal power 25
    out = np.array([3.0, 3.0])           # noise power 1
    assert sqnr_db(ref, out) == pytest.approx(10 * math.log10(25.0))
    assert sqnr_db(ref, ref) == math.inf
    assert sqnr_db(np.zeros(2), np.ones(2)) == -math.inf
    # 1% relative noise on every element -> 40 dB
    x = np.linspace(1, 2, 50)
    assert sqnr_db(x, x * 1.01) == pytest.approx(40.0)


def test_topk_accuracy():
    scores = np.array([[0.1, 0.5, 0.4], [0.7, 0.2, 0.1], [0.2, 0.3, 0.5]])
    labels = np.array([2, 0, 0])
    assert topk_accuracy(scores, labels, 1) == pytest.approx(1 / 3)
    assert topk_accuracy(scores, labels, 2) == pytest.approx(2 / 3)
    assert topk_accuracy(scores, labels, 3) == 1.0
    assert topk_accuracy(scores, labels, 10) == 1.0  # k larger than classes: all of them
    assert math.isnan(topk_accuracy(np.zeros((0, 3)), np.zeros((0,), np.int64), 1))


def test_topk_accuracy_bad_input():
    with pytest.raises(UsageError, match="k=0"):
        topk_accuracy(np.zeros((1, 3)), np.array([0]), 0)
    with pytest.raises(ValidationError, match="2 score rows but 1 labels"):
        topk_accuracy(np.zeros((2, 3)), np.array([0]), 1)
    with pytest.raises(ValidationError, match=r"\[0, 2\]"):
        topk_accuracy(np.zeros((1, 3)), np.array([3]), 1)

"""$MOBILEDEPLOY_ORT_INT8 stands in for this CPU's ONNX Runtime int8 choice (the suite runs under both)."""

from __future__ import annotations

import pytest

from mobiledeploy.errors import UsageError
from mobiledeploy.export import recipes
from mobiledeploy.export.recipes import ORT_INT8_ENV, S8S8_HOST_NOTE, choose_onnx_types, s8s8_saturates


@pytest.mark.parametrize("forced", ["s8s8", "u8s8"])
def test_the_variable_replaces_the_cpu_choice(forced, monkeypatch):
    monkeypatch.setenv(ORT_INT8_ENV, forced.upper())
    t = choose_onnx_types()
    assert (t.name, t.reduce_range) == (forced, forced == "u8s8")
    assert ORT_INT8_ENV in t.reason  # the manifest says why
    assert choose_onnx_types("s8s8").name == "s8s8"  # --onnx-quant-types still wins
    # a stated CPU is judged on its flags, whatever the variable says
    assert choose_onnx_types(machine="x86_64", flags={"avx2"}).name == "u8s8"
    assert choose_onnx_types(machine="x86_64", flags={"avx512_vnni"}).name == "s8s8"


def test_a_bad_value_is_refused_naming_the_variable(monkeypatch):
    monkeypatch.setenv(ORT_INT8_ENV, "u8u8")
    with pytest.raises(UsageError, match=ORT_INT8_ENV):
        choose_onnx_types()


def test_unset_or_empty_leaves_the_cpu_choice(monkeypatch):
    monkeypatch.delenv(ORT_INT8_ENV, raising=False)
    auto = choose_onnx_types()
    monkeypatch.setenv(ORT_INT8_ENV, "")
    assert choose_onnx_types() == auto and ORT_INT8_ENV not in auto.reason


def test_s8s8_saturates_only_on_x86_without_vnni():
    assert s8s8_saturates("x86_64", {"avx2", "fma"}) is True
    assert s8s8_saturates("x86_64", {"avx2", "avx_vnni"}) is False
    assert s8s8_saturates("aarch64", set()) is False  # ARM's kernels do not saturate


@pytest.mark.parametrize("saturates", [True, False])
def test_an_explicit_s8s8_choice_says_what_this_host_understates(saturates, monkeypatch):
    """S8S8 chosen by option or variable on an x86-64 CPU without VNNI: the manifest's reason says that
    this host's agreement understates ARM's; elsewhere, and for U8S8, it does not."""
    monkeypatch.setattr(recipes, "arch", lambda: "x86_64")
    monkeypatch.setattr(recipes, "cpu_flags", lambda: {"avx2"} if saturates else {"avx2", "avx512_vnni"})
    monkeypatch.delenv(ORT_INT8_ENV, raising=False)
    assert (S8S8_HOST_NOTE in choose_onnx_types("s8s8").reason) is saturates
    assert S8S8_HOST_NOTE not in choose_onnx_types("u8s8").reason
    monkeypatch.setenv(ORT_INT8_ENV, "s8s8")
    assert (S8S8_HOST_NOTE in choose_onnx_types().reason) is saturates

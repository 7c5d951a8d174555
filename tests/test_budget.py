"""The accuracy budget (``export --quant int8 --min-agreement A --target T``): a toy whose answer is
known. ``conv_b`` carries an outlier weight on an input channel that never fires: in float it adds
nothing, but int8 rounds every other weight of each ``conv_b`` channel to zero (one scale per output
channel, set by the outlier), so full int8 loses the model's answer on any CPU, and keeping exactly
``conv_b`` in float restores it. The search must find that layer, record its candidates in the
manifest and say what the budget cost on the target; an unreachable budget fails with one line and
writes nothing.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from mobiledeploy.cli import cli
from mobiledeploy.errors import UsageError
from mobiledeploy.export.pipeline import ExportConfig, export_model
from tests.conftest import one_line_error


@pytest.fixture(scope="module")
def toy_file(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3))
    x = keras.layers.ReLU(name="relu_a")(keras.layers.Conv2D(8, 3, strides=2, padding="same", name="conv_a")(inp))
    x = keras.layers.ReLU(name="relu_b")(keras.layers.Conv2D(16, 1, name="conv_b")(x))
    x = keras.layers.ReLU(name="relu_c")(keras.layers.Conv2D(16, 3, strides=2, padding="same", name="conv_c")(x))
    out = keras.layers.Dense(10, activation="softmax", name="classifier")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inp, out, name="toy")
    k, b = model.get_layer("conv_a").get_weights()
    k[..., 0] *= 0.01
    b[0] = -1.0  # channel 0 of conv_a never fires: its pre-activation stays near -1
    model.get_layer("conv_a").set_weights([k, b])
    k, b = model.get_layer("conv_b").get_weights()
    k[0, 0, 0, :] = 1e4  # the outlier, on that silent channel
    model.get_layer("conv_b").set_weights([k, b])
    k, b = model.get_layer("classifier").get_weights()
    model.get_layer("classifier").set_weights([5 * k, b])  # classes apart: int8 noise alone does not flip them
    path = tmp_path_factory.mktemp("toy") / "toy.keras"
    model.save(str(path))
    return path


def _config(path, out, **kw) -> ExportConfig:
    base = dict(model_path=str(path), formats=("tflite",), precisions=("int8",), calib="digits", calib_samples=64,
                validate_samples=64, bias_correction=False, min_agreement=0.9, target="pixel4", out=str(out))
    return ExportConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def budget_run(toy_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("budget")
    result = CliRunner().invoke(cli, ["export", "--model", str(toy_file), "--formats", "tflite", "--quant", "int8",
                                      "--calib", "digits", "--calib-samples", "64", "--validate-samples", "64",
                                      "--no-bias-correction", "--min-agreement", "0.9", "--target", "pixel4",
                                      "--out", str(out)])
    return result, out


def test_the_search_keeps_exactly_the_sensitive_layer_in_float(budget_run):
    result, out = budget_run
    assert result.exit_code == 0, result.output
    m = json.loads((out / "manifest.json").read_text())
    search = m["quantization"]["budget_search"]
    sens = {s["layer"]: s for s in search["sensitivity"]}
    assert set(sens) == {"conv_a", "conv_b", "conv_c", "classifier"}
    worst = min(sens.values(), key=lambda s: float("inf") if s["sqnr_db"] == "inf" else s["sqnr_db"])
    assert worst["layer"] == "conv_b"
    first, chosen = search["candidates"][0], search["candidates"][search["chosen"]]
    assert first["float_layers"] == [] and not first["meets"]  # full int8 was tried and misses
    assert first["top1_agreement"]["tflite"] < 0.9
    assert chosen["float_layers"] == ["conv_b"] and chosen["meets"]
    assert chosen["top1_agreement"]["tflite"] >= 0.9
    assert search["measured_on"]["samples"] == 64 and "held out" in search["measured_on"]["inputs"]
    # what ships is the chosen candidate, and the manifest says so
    assert m["quantization"]["float_layers"]["layers"] == ["conv_b"]
    assert "accuracy budget" in m["quantization"]["float_layers"]["reason"]
    (art,) = m["artifacts"]
    assert art["validation"]["top1_agreement"] == chosen["top1_agreement"]["tflite"]
    assert not art["degraded"]
    # the cost: a float layer costs more on the device than its int8 twin, and the summary says how much
    assert search["cost_ms"] == pytest.approx(chosen["estimate_ms"] - first["estimate_ms"], abs=1e-3)
    assert search["cost_ms"] > 0
    assert "with conv_b in float" in search["summary"] and "ms on pixel4 vs full int8" in search["summary"]
    assert search["summary"] in " ".join(result.stdout.split())


@pytest.fixture(scope="module")
def hopeless_file(tmp_path_factory):
    """conv_x -> global average pool -> classifier, one channel of conv_x a constant 1e4 the classifier ignores:
    the pooled tensor's int8 step (its range / 255) then wipes out every other channel, and the pool itself
    is no layer the search can keep in float: no candidate meets the budget."""
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="conv_x")(inp)
    out = keras.layers.Dense(10, activation="softmax", name="classifier")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inp, out, name="hopeless")
    k, b = model.get_layer("conv_x").get_weights()
    k[..., 0] = 0.0
    b[0] = 1e4
    model.get_layer("conv_x").set_weights([k, b])
    k, b = model.get_layer("classifier").get_weights()
    k[0] = 0.0
    model.get_layer("classifier").set_weights([5 * k, b])
    path = tmp_path_factory.mktemp("hopeless") / "hopeless.keras"
    model.save(str(path))
    return path


def test_an_unreachable_budget_fails_with_one_line_and_writes_nothing(hopeless_file, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = CliRunner().invoke(cli, ["export", "--model", str(hopeless_file), "--formats", "tflite", "--quant",
                                      "int8", "--calib", "digits", "--calib-samples", "64", "--validate-samples",
                                      "64", "--no-bias-correction", "--min-agreement", "0.9", "--target", "pixel4",
                                      "--out", str(out)])
    one_line_error(result, 1, "no int8 artifact meets --min-agreement 0.9", "3 candidates tried")
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


@pytest.mark.parametrize("kw, needle", [
    (dict(min_agreement=None), "--min-agreement"),
    (dict(precisions=("fp32",)), "int8"),
    (dict(formats=("keras",)), "--formats"),
    (dict(float_layers=("conv_b",)), "--float-layers"),
    (dict(target="no_such_phone"), "unknown target"),
])
def test_budget_usage_errors(toy_file, tmp_path, kw, needle):
    with pytest.raises(UsageError, match=needle):
        _config(toy_file, tmp_path, **kw).check()


class _Pricer:
    target, label = "phone", "device estimate for phone, not a measurement"

    def ms(self, layers):
        return 1.0 + 0.25 * len(layers)


def test_the_search_drops_a_float_layer_the_budget_turns_out_not_to_need(tmp_path):
    """The greedy order (most noise per ms first) puts layer a before b, but only b matters: the search grows
    to {a, b}, then finds that {b} alone holds and ships that, every try recorded."""
    from types import SimpleNamespace

    from mobiledeploy.export.budget import Search, Sensitivity

    tried = []

    def convert_validate(recipe, out_dir):
        tried.append(recipe.float_layers)
        agree = 1.0 if "b" in recipe.float_layers else 0.5
        return {"tflite": (out_dir / "x_int8.tflite", SimpleNamespace(top1_agreement=agree, sqnr_db=20.0))}

    from mobiledeploy.export.recipes import QuantRecipe

    sens = [Sensitivity("a", 5.0, 0.25), Sensitivity("b", 10.0, 0.25), Sensitivity("c", 40.0, 0.25)]
    search = Search(0.9, convert_validate, _Pricer(), 64, "64 held-out samples")
    res = search.run(QuantRecipe(), sens, tmp_path)
    assert tried == [(), ("a",), ("a", "b"), ("b",)]
    assert res.result.float_layers == ("b",) and res.chosen == 3
    assert [c.meets for c in res.candidates] == [False, False, True, True]
    assert res.to_json()["cost_ms"] == pytest.approx(0.25)
    assert "with b in float: +0.25 ms on phone vs full int8" in res.summary()


def test_the_price_of_float_layers_on_a_mobilenet(tiny_keras):
    """Every convolution of a MobileNet (padding layers in between) is priced; a float layer costs more than
    its int8 twin on a phone, and two float layers more than either."""
    from mobiledeploy.export.budget import Pricer
    from mobiledeploy.export.float_layers import weighted_layers
    from mobiledeploy.targets import load_target

    pricer = Pricer(tiny_keras, load_target("pixel4"))
    full = pricer.ms(())
    for layer in weighted_layers(tiny_keras):
        assert pricer.ms((layer.name,)) > full, layer.name
    assert pricer.ms(("conv_dw_2", "conv_pw_2")) > max(pricer.ms(("conv_dw_2",)), pricer.ms(("conv_pw_2",)))


def test_the_shared_bias_correction_equals_a_correction_that_skips_the_float_layers(tiny_keras):
    """The search derives each candidate's bias-corrected model from one full correction; that must be the
    model a correction skipping the float layers gives (each layer is corrected on float activations)."""
    from mobiledeploy.export.budget import _shared_correction
    from mobiledeploy.export.equalize import correct_bias
    from mobiledeploy.export.recipes import Calibration, QuantRecipe

    x = np.random.default_rng(0).uniform(-1, 1, (8, 32, 32, 3)).astype(np.float32)
    floats = ("conv1", "conv_pw_2")
    shared = _shared_correction(Calibration(x)).quant_source(
        tiny_keras, QuantRecipe(bias_correction=True, float_layers=floats))
    direct = correct_bias(tiny_keras, x, skip=floats)
    for a, b in zip(shared.get_weights(), direct.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert any(not np.array_equal(a, b) for a, b in zip(shared.get_weights(), tiny_keras.get_weights()))


def test_the_search_doubles_then_bisects_when_many_layers_are_needed(tmp_path):
    """Ten layers ranked l0..l9 and the budget met once l0..l4 are in float: the search tries 0, 1, 2, 4, 8 layers,
    bisects to 5 (between the miss at 4 and the hit at 8: 6, then 5) and ships l0..l4."""
    from types import SimpleNamespace

    from mobiledeploy.export.budget import Search, Sensitivity
    from mobiledeploy.export.recipes import QuantRecipe

    tried = []

    def convert_validate(recipe, out_dir):
        tried.append(len(recipe.float_layers))
        agree = 1.0 if {"l0", "l1", "l2", "l3", "l4"} <= set(recipe.float_layers) else 0.5
        return {"tflite": (out_dir / "x_int8.tflite", SimpleNamespace(top1_agreement=agree, sqnr_db=20.0))}

    sens = [Sensitivity(f"l{i}", 10.0 + i, 0.25) for i in range(10)]
    res = Search(0.9, convert_validate, _Pricer(), 64, "64 held-out samples").run(QuantRecipe(), sens, tmp_path)
    assert tried[:7] == [0, 1, 2, 4, 8, 6, 5]
    assert res.result.float_layers == ("l0", "l1", "l2", "l3", "l4")
    assert all(n == 4 for n in tried[7:])  # pruning tries each of the five without it, all miss


def test_a_long_float_list_is_counted_in_the_summary(tmp_path):
    from types import SimpleNamespace

    from mobiledeploy.export.budget import Search, Sensitivity
    from mobiledeploy.export.recipes import QuantRecipe

    def convert_validate(recipe, out_dir):
        agree = 1.0 if len(recipe.float_layers) >= 8 else 0.5
        return {"tflite": (out_dir / "x_int8.tflite", SimpleNamespace(top1_agreement=agree, sqnr_db=20.0))}

    sens = [Sensitivity(f"l{i}", 10.0 + i, 0.25) for i in range(10)]
    res = Search(0.9, convert_validate, _Pricer(), 64, "64 held-out samples").run(QuantRecipe(), sens, tmp_path)
    assert len(res.result.float_layers) == 8
    assert "with 8 of 10 layers (l0, l1, l2, ...) in float" in res.summary()


# ---------------------------------------------------------------- priced from the emulated kernels


def test_estimate_method_kernels_needs_the_budget_and_an_arm_environment(toy_file, tmp_path, monkeypatch):
    """--estimate-method prices the budget's candidates: alone it is a usage error; with the budget, a missing
    ARM environment (or LLVM 19) is one line naming the set-up step, before anything is converted."""
    from mobiledeploy.runtimes import emulate as emu

    with pytest.raises(UsageError, match="--estimate-method prices the accuracy budget"):
        _config(toy_file, tmp_path, target=None, estimate_method="kernels").check()
    monkeypatch.setenv(emu.CACHE_ENV, str(tmp_path / "no-env"))
    with pytest.raises(UsageError, match="make arm-env"):
        _config(toy_file, tmp_path, estimate_method="kernels").check()
    _config(toy_file, tmp_path).check()  # the cost model needs neither


def test_kernel_prices_choose_the_cheapest_candidate_that_meets_the_budget(tmp_path):
    """Priced from the artifacts, a later candidate that meets the budget can cost more than an earlier one
    (here {a, b} estimates below {b}): the search ships the cheapest that meets it, records each format's
    estimate and the slowest as the candidate's, and says the estimate came from emulated kernels."""
    from types import SimpleNamespace

    from mobiledeploy.export.budget import Search, Sensitivity
    from mobiledeploy.export.recipes import QuantRecipe

    kernel_ms = {(): 5.0, ("a",): 5.5, ("a", "b"): 6.0, ("b",): 6.5}

    def convert_validate(recipe, out_dir):
        agree = 1.0 if "b" in recipe.float_layers else 0.5
        files = {f: (out_dir / f"m+{'+'.join(recipe.float_layers)}.{f}", SimpleNamespace(top1_agreement=agree,
                                                                                       sqnr_db=20.0))
                 for f in ("tflite", "onnx")}
        return files

    def price_files(files):
        layers = tuple(x for x in files["tflite"].stem.split("+")[1:] if x)
        return {"tflite": kernel_ms[layers], "onnx": kernel_ms[layers] - 1.0}, "device estimate from kernels"

    sens = [Sensitivity("a", 5.0, 0.25), Sensitivity("b", 10.0, 0.25), Sensitivity("c", 40.0, 0.25)]
    res = Search(0.9, convert_validate, _Pricer(), 64, "64 held-out samples", price_files=price_files).run(
        QuantRecipe(), sens, tmp_path)
    assert [c.float_layers for c in res.candidates] == [(), ("a",), ("a", "b"), ("b",)]
    assert res.result.float_layers == ("a", "b") and res.chosen == 2  # 6.0 ms beats {b} alone at 6.5 ms
    j = res.to_json()
    assert j["estimate_method"] == "kernels" and j["estimate"] == "device estimate from kernels"
    assert j["candidates"][2]["estimate_ms_by_format"] == {"tflite": 6.0, "onnx": 5.0}
    assert j["candidates"][2]["estimate_ms"] == 6.0 and j["cost_ms"] == pytest.approx(1.0)
    assert "device estimate from emulated kernels" in res.summary()


def test_a_kernel_estimate_that_crashes_is_the_exports_one_line(tmp_path, monkeypatch):
    from mobiledeploy.errors import ConversionError
    from mobiledeploy.export import budget
    from mobiledeploy.kernels import estimate as ke
    from mobiledeploy.targets import load_target

    def crash(path, target):
        raise OSError(8, "Exec format error")

    monkeypatch.setattr(ke, "estimate_kernels", crash)
    with pytest.raises(ConversionError, match=r"kernel-count estimate of m_int8.tflite on pixel4 failed: "
                                              r"OSError: .*Exec format error"):
        budget.kernel_pricer(load_target("pixel4"))({"tflite": tmp_path / "m_int8.tflite"})


def _arm_missing():
    from test_kernels import ARM

    return ARM


@pytest.mark.slow
def test_the_budget_priced_from_the_real_kernels(toy_file, tmp_path):
    """The toy's search with every candidate's TFLite file run under qemu on pixel4's core: the manifest's
    estimates are the kernel-count estimates of the very artifacts (the shipped file's own estimate agrees)
    and the chosen candidate is the cheapest that meets the budget."""
    missing = _arm_missing()
    if missing:
        pytest.skip(missing)
    from mobiledeploy.kernels.estimate import estimate_kernels
    from mobiledeploy.targets import load_target

    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["export", "--model", str(toy_file), "--formats", "tflite", "--quant", "int8",
                                      "--calib", "digits", "--calib-samples", "64", "--validate-samples", "64",
                                      "--no-bias-correction", "--min-agreement", "0.9", "--target", "pixel4",
                                      "--estimate-method", "kernels", "--out", str(out)])
    assert result.exit_code == 0, result.output
    search = json.loads((out / "manifest.json").read_text())["quantization"]["budget_search"]
    assert search["estimate_method"] == "kernels" and "emulated kernels" in search["estimate"]
    cands = search["candidates"]
    assert all(set(c["estimate_ms_by_format"]) == {"tflite"} and c["estimate_ms"] > 0 for c in cands)
    meeting = [c for c in cands if c["meets"]]
    chosen = cands[search["chosen"]]
    assert chosen["estimate_ms"] == min(c["estimate_ms"] for c in meeting)
    assert "conv_b" in chosen["float_layers"]
    shipped = estimate_kernels(next(out.glob("*_int8.tflite")), load_target("pixel4"))
    assert shipped.cached and shipped.latency_ms == pytest.approx(chosen["estimate_ms"], abs=1e-4)  # 4 decimals
    assert "device estimate from emulated kernels" in result.output


@pytest.mark.slow
def test_the_budget_judged_on_an_emulated_arm_cpu(toy_file, tmp_path):
    """With --emulate the toy's candidates are validated on the aarch64 runtimes under qemu: the search still
    keeps the outlier layer in float (the answer does not depend on the CPU), the summary and the manifest say
    where the candidates ran, and the shipped file's validation too."""
    from mobiledeploy.runtimes import emulate as emu

    try:
        emu.find_env()
    except UsageError as e:
        pytest.skip(str(e))
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["export", "--model", str(toy_file), "--formats", "tflite,onnx", "--quant",
                                      "int8", "--calib", "digits", "--calib-samples", "64", "--validate-samples",
                                      "64", "--no-bias-correction", "--min-agreement", "0.9", "--target", "pixel4",
                                      "--emulate", "cortex-a76", "--out", str(out)])
    assert result.exit_code == 0, result.output
    m = json.loads((out / "manifest.json").read_text())
    search = m["quantization"]["budget_search"]
    assert search["measured_on"]["runtimes"] == "aarch64, emulated cortex-a76"
    assert "run on cortex-a76 (emulated)" in search["summary"]
    assert "conv_b" in search["candidates"][search["chosen"]]["float_layers"]
    assert not search["candidates"][0]["meets"]  # full int8 misses on ARM too
    assert m["quantization"]["onnx"]["types"] == "s8s8"  # ARM's choice
    for a in m["artifacts"]:
        assert a["validation"]["runtime"].endswith("on cortex-a76 (emulated aarch64)")

"""Options declared once: every command-line default is its config's default (mobiledeploy/options.py)."""

from __future__ import annotations

import dataclasses
import importlib

import click
import pytest

from mobiledeploy import options
from mobiledeploy.errors import UsageError

# command module, attribute, config class (module:name), arguments a bare invocation needs
COMMANDS = [
    ("mobiledeploy.cli.export", "export", "mobiledeploy.export.pipeline:ExportConfig", []),
    ("mobiledeploy.cli.eval", "eval_", "mobiledeploy.accuracy.evaluate:EvalConfig", ["model.tflite"]),
    ("mobiledeploy.cli.train", "train", "mobiledeploy.accuracy.train:TrainConfig", ["--out", "m.keras"]),
    ("mobiledeploy.cli.check", "check", "mobiledeploy.check.core:CheckConfig", []),
    ("mobiledeploy.cli.estimate", "estimate", "mobiledeploy.cost.estimate:EstimateConfig", []),
    ("mobiledeploy.cli.bench", "bench", "mobiledeploy.bench.request:BenchRequest", ["m.tflite"]),
    ("mobiledeploy.cli.sweep", "sweep", "mobiledeploy.sweep.grid:SweepConfig", []),
]
# options several commands share, declared once in cli/common.py (target_options, shape_option)
SHARED = {"target_file", "shapes"}


def _config(spec: str):
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def _parsed(command: click.Command, args: list[str]) -> dict:
    """The values the command's options take when not given (defaults after their callbacks)."""
    with command.make_context(command.name, list(args)) as ctx:
        return dict(ctx.params)


@pytest.mark.parametrize("module, attr, config, args", COMMANDS, ids=[c[1] for c in COMMANDS])
def test_every_click_default_is_the_config_default(module, attr, config, args):
    command, cls = getattr(importlib.import_module(module), attr), _config(config)
    declared = options.declared(cls)
    params = _parsed(command, args)
    options_ = {p.name for p in command.params if isinstance(p, click.Option)}
    shared = [n for n in params if n in options_ and n not in SHARED and n in {f.name for f in dataclasses.fields(cls)}]
    assert shared, f"{attr}: no option maps onto {cls.__name__}"
    for name in shared:
        f = {f.name: f for f in dataclasses.fields(cls)}[name]
        assert name in declared, f"{attr} --{name}: an option of {cls.__name__} not declared with options.option"
        param = next(p for p in command.params if p.name == name)
        assert getattr(param, "declared_by", None) is cls, f"{attr} --{name}: written by hand, not click_options"
        if options.default_of(f) is dataclasses.MISSING:  # required: given above
            continue
        assert params[name] == options.default_of(f), f"{attr}: {name} defaults to {params[name]!r} on the " \
                                                      f"command line, {options.default_of(f)!r} in {cls.__name__}"


@pytest.mark.parametrize("module, attr, config, args", COMMANDS, ids=[c[1] for c in COMMANDS])
def test_help_is_the_declared_help(module, attr, config, args):
    command, cls = getattr(importlib.import_module(module), attr), _config(config)
    declared = options.declared(cls)
    for p in command.params:
        if p.name in declared:
            assert p.help == declared[p.name].metadata["option"]["help"]


def test_declared_checks_raise_one_usage_error_naming_the_flag():
    from mobiledeploy.export.pipeline import ExportConfig

    for bad, flag in ((dict(calib_samples=0), "--calib-samples"), (dict(validate_samples=1.5), "--validate-samples"),
                      (dict(atol=float("nan")), "--atol"), (dict(rtol=-1e-4), "--rtol"),
                      (dict(onnx_calibration="median"), "--onnx-calibration"),
                      (dict(onnx_quant_types="u8u8"), "--onnx-quant-types"), (dict(precisions=()), "--quant"),
                      (dict(formats=("tflite", "coreml")), "--formats")):
        with pytest.raises(UsageError, match=flag):
            ExportConfig(**bad).check()
    ExportConfig(onnx_quant_types=None, atol=0.0).check()  # None where None is the default; 0 is >= 0


def test_checks_read_a_registry_when_they_run():
    """A format registered after import (a test double, a plug-in) is accepted by the declared check."""
    registry = {"a": 1}
    check = options.Names(registry)
    registry["b"] = 2
    check(("a", "b"), "--formats")
    with pytest.raises(UsageError, match="unknown value 'c' for --formats; choose from a, b"):
        check(("c",), "--formats")


def test_ranges_name_their_bounds():
    with pytest.raises(UsageError, match=r"--shift must be a finite number in \[0, 0.5\), received 0.5"):
        options.Finite(0.0, 0.5, high_open=True)(0.5, "--shift")
    with pytest.raises(UsageError, match="--lr must be a finite number > 0, received 0"):
        options.Finite(0.0, low_open=True)(0, "--lr")
    with pytest.raises(UsageError, match="--epochs must be an integer >= 1, received True"):
        options.AtLeast(1)(True, "--epochs")


def test_a_bare_sweep_and_a_bare_export_parse_to_the_config_defaults():
    from mobiledeploy.cli.export import export
    from mobiledeploy.cli.sweep import sweep
    from mobiledeploy.export.pipeline import ExportConfig
    from mobiledeploy.sweep.grid import SweepConfig

    assert SweepConfig(**{k: v for k, v in _parsed(sweep, []).items() if k not in ("json_path", "wide")}) \
        == SweepConfig()
    assert ExportConfig(**{k: v for k, v in _parsed(export, []).items() if k not in ("json_path", "wide")}) \
        == ExportConfig()


def test_the_sweeps_exports_validate_as_export_does_and_bench_as_bench_does():
    """The defaults a sweep shares with export and bench are theirs (not a second literal)."""
    from mobiledeploy.bench.request import BenchRequest
    from mobiledeploy.export.pipeline import ExportConfig
    from mobiledeploy.sweep.grid import SweepConfig

    assert SweepConfig().validate_samples == ExportConfig().validate_samples
    assert SweepConfig().timeout_s == BenchRequest(models=()).timeout_s

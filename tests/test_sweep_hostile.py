"""`mobiledeploy sweep` against hostile input and state: huge numbers, corrupt or stale state files,
deleted artifacts, a second sweep into the same directory, huge grids, narrow terminals."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from mobiledeploy.cli import cli
from mobiledeploy.errors import UsageError
from mobiledeploy.sweep.grid import SweepConfig
from tests.conftest import one_line_error

TINY = ["--alpha", "0.25", "--res", "32", "--formats", "tflite", "--quant", "fp32,int8", "--samples", "5",
        "--jobs", "1"]


def _sweep(*args, **kw):
    return CliRunner().invoke(cli, ["sweep", *map(str, args)], **kw)


@pytest.mark.parametrize("value", ["1e300", "86401", "inf", "nan", "0", "-1"])
def test_timeout_is_bounded_like_bench(value, tmp_path):
    out = tmp_path / "out"
    one_line_error(_sweep(*TINY, "--timeout", value, "--out", out), 2, "--timeout")
    assert not out.exists()


def test_timeout_is_bounded_in_the_library(tmp_path):
    with pytest.raises(UsageError, match="--timeout"):
        SweepConfig(alphas=(0.25,), resolutions=(32,), timeout_s=1e300, out=str(tmp_path / "o")).check()
    SweepConfig(alphas=(0.25,), resolutions=(32,), timeout_s=86400.0, out=str(tmp_path / "o")).check()

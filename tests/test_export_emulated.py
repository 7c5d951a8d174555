"""``export --emulate CPU``: dynamic and int8 artifacts judged on the aarch64 runtimes under qemu.

Fast: a bad CPU name or a missing ARM environment is one line and exit 2 before anything is
converted. Slow (needs ``make arm-env``): a real export whose int8 artifacts are validated under
qemu, checked against an independent emulated run of the shipped file (not the tapped copy the
validation runs)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from mobiledeploy.cli import cli
from mobiledeploy.runtimes import emulate as emu
from test_emulate import needs_env  # skips, with the reason, without `make arm-env`
SMALL = ["export", "--alpha", "0.25", "--res", "32", "--classes", "10", "--quant", "fp32,int8"]


def test_an_unknown_cpu_is_one_line_before_anything_runs(tmp_path):
    out = tmp_path / "o"
    r = CliRunner().invoke(cli, [*SMALL, "--emulate", "cortex-a99", "--out", str(out)])
    assert r.exit_code == 2, (r.stdout, r.stderr)
    assert r.stderr.strip() == ("error: unknown emulated CPU 'cortex-a99'; choose from "
                                + ", ".join(emu.EMULATED_CPUS))
    assert not out.exists()


def test_a_missing_arm_environment_names_the_set_up_step(tmp_path, monkeypatch):
    monkeypatch.setenv(emu.CACHE_ENV, str(tmp_path / "no-env"))
    out = tmp_path / "o"
    r = CliRunner().invoke(cli, [*SMALL, "--emulate", "cortex-a76", "--out", str(out)])
    assert r.exit_code == 2 and "make arm-env" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.stderr and not out.exists()


def test_onnx_types_follow_the_emulated_cpu(monkeypatch):
    """Judged on an emulated ARM CPU, the ONNX int8 types are ARM's (S8S8), whatever this host or the variable
    that stands in for it would choose; an explicit choice still wins and its reason names the CPU, not the
    host's saturation."""
    from mobiledeploy.export import recipes
    from mobiledeploy.export.recipes import ORT_INT8_ENV, S8S8_HOST_NOTE, choose_onnx_types

    monkeypatch.setattr(recipes, "arch", lambda: "x86_64")
    monkeypatch.setattr(recipes, "cpu_flags", lambda: {"avx2"})  # a host that would choose U8S8
    monkeypatch.setenv(ORT_INT8_ENV, "u8s8")
    t = choose_onnx_types(judged_on="cortex-a76")
    assert (t.name, t.reduce_range) == ("s8s8", False) and "cortex-a76 (emulated aarch64)" in t.reason
    explicit = choose_onnx_types("s8s8", judged_on="cortex-a76")
    assert explicit.reason == "set by --onnx-quant-types; judged on cortex-a76 (emulated aarch64)"
    assert S8S8_HOST_NOTE in choose_onnx_types("s8s8").reason  # not judged there: the host's note
    assert choose_onnx_types("u8s8", judged_on="cortex-a76").name == "u8s8"


@pytest.mark.slow
@needs_env
def test_int8_artifacts_are_judged_on_the_emulated_cpu(tmp_path):
    """An export with --emulate records its int8 rows as run on the emulated CPU and its fp32 rows on the host.
    ``validate_artifact(..., emulate=CPU)`` judges the values of the aarch64 run: its agreement and SQNR are those
    of the file's logits computed here by running a tapped copy through the emulation worker."""
    from mobiledeploy import metrics
    from mobiledeploy.export.logits import TAPS, keras_logits_model, keras_outputs
    from mobiledeploy.export.validate import Reference, validate_artifact
    from mobiledeploy.quiet import import_keras

    out = tmp_path / "o"
    r = CliRunner().invoke(cli, [*SMALL, "--emulate", "cortex-a76", "--out", str(out)])
    assert r.exit_code == 0, (r.stdout, r.stderr)
    rows = json.loads((out / "manifest.json").read_text())["artifacts"]
    for a in rows:
        emulated = a["validation"]["runtime"].endswith(" on cortex-a76 (emulated aarch64)")
        assert emulated is (a["precision"] == "int8"), a["validation"]["runtime"]

    model = import_keras().models.load_model(str(out / "source.keras"), safe_mode=True)
    x = np.random.default_rng(1).uniform(-1, 1, (6, 32, 32, 3)).astype(np.float32)
    ref = Reference(keras_outputs(model, x), keras_outputs(keras_logits_model(model), x))
    for fmt in ("tflite", "onnx"):
        path = next(out.glob(f"*_int8.{fmt}"))
        v = validate_artifact(path, fmt=fmt, precision="int8", x=x, reference=ref, emulate="cortex-a76")
        tapped = tmp_path / f"tapped.{fmt}"
        tapped.write_bytes(TAPS[fmt](path.read_bytes()))
        got = emu.run_worker(tapped, x, cpu_name="cortex-a76", timeout_s=600)
        last = max((k for k in got if k.startswith("float_")), key=lambda k: int(k.split("_")[1]))
        logits = got[last].reshape(len(x), -1)
        assert v.compared == "logits" and v.samples == len(x)
        assert v.top1_agreement == metrics.top1_agreement(ref.logits, logits)
        assert v.sqnr_db == pytest.approx(metrics.sqnr_db(ref.logits, logits))


@pytest.mark.slow
@needs_env
def test_a_sweep_judges_its_int8_exports_on_the_emulated_cpu(tmp_path):
    """``sweep --emulate CPU`` hands the CPU to every export: the int8 rows' validation lines say where their values
    were computed, the fp32 rows' stay the host's, and the ONNX int8 file has the emulated CPU's types."""
    out = tmp_path / "sweep"
    r = CliRunner().invoke(cli, ["sweep", "--alpha", "0.25", "--res", "32", "--classes", "10", "--quant", "fp32,int8",
                                 "--samples", "5", "--target", "pixel4", "--jobs", "1", "--emulate", "cortex-a76",
                                 "--out", str(out)])
    assert r.exit_code == 0, (r.stdout, r.stderr)
    (row,) = [json.loads(f.read_text()) for f in (out / "rows").glob("*.json")]
    assert row["status"] == "ok" and len(row["artifacts"]) == 4
    for a in row["artifacts"]:
        assert a["validation"].endswith(", on cortex-a76 (emulated aarch64)") is (a["precision"] == "int8"), a
    (manifest,) = (out / "exports").glob("*/manifest.json")
    assert json.loads(manifest.read_text())["quantization"]["onnx"]["types"] == "s8s8"
    assert json.loads((out / "results.json").read_text())["sweep"]["emulate"] == "cortex-a76"
    assert "int8 and dynamic exports judged on cortex-a76's runtimes (emulated aarch64)" in r.stdout

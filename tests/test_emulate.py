"""ARM emulation: the CPU registry, HWCAP decoding, the environment checks, the worker, and
(when ``make arm-env`` has been run) real aarch64 runs under qemu compared with the host."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from mobiledeploy.errors import RuntimeFailure, UsageError
from mobiledeploy.runtimes import emulate as emu


def _env_or_none():
    try:
        return emu.find_env()
    except UsageError as e:
        return str(e)


ARM = _env_or_none()
needs_env = pytest.mark.skipif(isinstance(ARM, str), reason=str(ARM))


# ---------------------------------------------------------------- pure functions


def test_registry_names_parts_and_midr():
    a76 = emu.cpu("cortex-a76")
    assert (a76.qemu_cpu, a76.part, a76.implementer) == ("cortex-a76", 0xD0B, 0x41)
    assert a76.midr == 0x414FD0B1  # r4p1, as the kernel would print it in MIDR_EL1
    assert emu.cpu("cortex-a53").part == 0xD03 and emu.cpu("neoverse-n1").part == 0xD0C
    a55 = emu.cpu("cortex-a55")
    assert a55.part == 0xD05 and a55.qemu_cpu != "cortex-a55" and "A76" in a55.notes  # stand-in, said so
    assert emu.cpu("max,sme=off").qemu_cpu == "max,sme=off" and "sme=off" in emu.cpu("max").notes


def test_unknown_cpu_is_a_usage_error_listing_the_choices():
    with pytest.raises(UsageError, match="cortex-a76") as e:
        emu.cpu("cortex-a78")
    assert "cortex-a78" in str(e.value)


def test_decode_hwcaps_uses_the_kernel_bit_numbers():
    assert emu.decode_hwcaps(1 << 20, 0) == ["asimddp"]
    assert emu.decode_hwcaps(1 << 22, 0) == ["sve"]
    assert emu.decode_hwcaps(0, 1 << 13) == ["i8mm"]
    assert emu.decode_hwcaps(0, 1 << 23) == ["sme"]
    assert emu.decode_hwcaps(0b11, 0) == ["fp", "asimd"]
    assert len(emu.HWCAP_NAMES) == 32 and len(set(emu.HWCAP_NAMES + emu.HWCAP2_NAMES)) == 63


def test_key_features():
    a53 = emu.key_features(emu.decode_hwcaps(0x8FB, 0))  # what qemu 7.2's cortex-a53 gives the guest
    assert a53 == {"asimd": True, "fp16": False, "dotprod": False, "i8mm": False, "sve": False, "sme": False}
    only_fphp = emu.key_features(["fp", "asimd", "fphp"])
    assert not only_fphp["fp16"]  # fp16 arithmetic needs the scalar and the vector half-precision bits
    assert emu.key_features(["fphp", "asimdhp", "asimddp", "i8mm", "sme"])["sme"]


def test_cpuinfo_text_is_the_arm64_kernel_format():
    text = emu.cpuinfo_text(emu.cpu("cortex-a76"), ["fp", "asimd", "asimddp"], [0, 1, 2])
    blocks = [b for b in text.split("\n\n") if b.strip()]
    assert len(blocks) == 3
    fields = dict(line.split(":", 1) for line in blocks[2].splitlines())
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    assert fields["processor"] == "2" and fields["CPU part"] == "0xd0b" and fields["CPU implementer"] == "0x41"
    assert fields["CPU variant"] == "0x4" and fields["CPU revision"] == "1" and fields["CPU architecture"] == "8"
    assert fields["Features"] == "fp asimd asimddp"


def test_possible_cpus():
    from mobiledeploy.machine import possible_cpus

    cpus = possible_cpus()
    assert cpus and cpus == sorted(set(cpus)) and cpus[0] >= 0


def test_timeouts_scale_for_emulation():
    assert emu.scale_timeout(10) == 10 * emu.EMULATION_SLOWDOWN >= 350


# ---------------------------------------------------------------- a missing or broken environment


def _fake_env(tmp_path: Path, **changes) -> Path:
    """A cache laid out as make arm-env lays it (empty files), for the checks only."""
    sysroot = tmp_path / "sysroot"
    (sysroot / emu.GUEST_SITE).mkdir(parents=True, exist_ok=True)
    (sysroot / emu.GUEST_PYTHON).parent.mkdir(parents=True, exist_ok=True)
    (sysroot / emu.GUEST_PYTHON).touch()
    qemu = tmp_path / "qemu-aarch64-static"
    qemu.write_text("#!/bin/sh\n")
    qemu.chmod(0o755)
    root = emu.cpu_root(tmp_path, "cortex-a76")
    (root / "proc").mkdir(parents=True, exist_ok=True)
    (root / "proc" / "cpuinfo").write_text("")
    wheels = {}
    for name in emu.PINNED:
        try:
            wheels[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    info = {"format": emu.ENV_FORMAT, "qemu": str(qemu), "sysroot": str(sysroot), "wheels": wheels} | changes
    (tmp_path / "env.json").write_text(json.dumps(info))
    return tmp_path


def test_absent_environment_names_make_arm_env(tmp_path, monkeypatch):
    monkeypatch.setenv(emu.CACHE_ENV, str(tmp_path / "nothing-here"))
    with pytest.raises(UsageError, match="make arm-env") as e:
        emu.find_env()
    assert str(tmp_path / "nothing-here") in str(e.value)
    with pytest.raises(UsageError, match="make arm-env"):
        emu.command("cortex-a76", ["-c", "pass"])
    with pytest.raises(UsageError, match="make arm-env"):
        emu.compare_emulated(tmp_path / "m.tflite", np.zeros((1, 4), np.float32), "cortex-a76")


def test_damaged_or_stale_environment_names_make_arm_env(tmp_path):
    cache = _fake_env(tmp_path)
    assert emu.find_env(cache).qemu.endswith("qemu-aarch64-static")
    (cache / "env.json").write_text("{not json")
    with pytest.raises(UsageError, match="damaged.*make arm-env"):
        emu.find_env(cache)
    _fake_env(tmp_path, wheels={"numpy": "0.0.1", "onnxruntime": "0.0.1", "ai-edge-litert": "0.0.1"})
    with pytest.raises(UsageError, match=r"has \S+ 0\.0\.1 but the host has .*make arm-env"):
        emu.find_env(cache)
    _fake_env(tmp_path, qemu=str(tmp_path / "no-qemu"))
    with pytest.raises(UsageError, match="no-qemu is missing.*make arm-env"):
        emu.find_env(cache)
    _fake_env(tmp_path, format=emu.ENV_FORMAT + 1)
    with pytest.raises(UsageError, match="another version"):
        emu.find_env(cache)


def test_command_runs_the_guest_python_under_qemu_with_a_clean_environ(tmp_path, monkeypatch):
    env = emu.find_env(_fake_env(tmp_path))
    monkeypatch.setenv("PYTHONHOME", "/host/python")
    monkeypatch.setenv("MOBILEDEPLOY_DEBUG", "1")
    argv, environ = emu.command("cortex-a76", ["-m", "mobiledeploy._child"], env=env)
    root = emu.cpu_root(tmp_path, "cortex-a76")
    assert argv[:5] == [env.qemu, "-cpu", "cortex-a76", "-L", str(root)]
    assert argv[5] == str(root / emu.GUEST_PYTHON) and argv[6:] == ["-S", "-m", "mobiledeploy._child"]
    paths = environ["PYTHONPATH"].split(":")
    assert paths[0] == str(env.site_packages) and (Path(paths[1]) / "mobiledeploy").is_dir()
    assert "PYTHONHOME" not in environ and environ["MOBILEDEPLOY_DEBUG"] == "1"
    with pytest.raises(UsageError, match="no sysroot for cortex-a53"):  # the fake has only cortex-a76
        emu.command("cortex-a53", ["-c", "pass"], env=env)


# ---------------------------------------------------------------- the worker, on the host


def test_worker_on_the_host_quantizes_inputs_and_dequantizes_outputs(tiny_tflite_int8, tiny_calib):
    out = emu.run_worker(tiny_tflite_int8, tiny_calib[:3], cpu_name=None, timeout_s=120)
    raw, flt = out["raw_0"], out["float_0"]
    assert raw.dtype == np.int8 and raw.shape[0] == 3 and flt.dtype == np.float32
    q = out["meta"]["outputs"][0]
    assert q["dtype"] == "int8" and q["scale"] > 0
    np.testing.assert_allclose(flt, (raw.astype(np.float32) - q["zero_point"]) * q["scale"], rtol=1e-6)
    assert out["meta"]["runtime"] == "litert" and out["meta"]["samples"] == 3 and out["meta"]["xnnpack"]
    builtin = emu.run_worker(tiny_tflite_int8, tiny_calib[:3], cpu_name=None, timeout_s=120, xnnpack=False)
    assert not builtin["meta"]["xnnpack"] and builtin["raw_0"].shape == raw.shape
    assert np.abs(builtin["float_0"] - flt).max() <= 2 * q["scale"] + 1e-9  # two kernel libraries, same model


def test_worker_failure_is_one_line(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a model")
    with pytest.raises(RuntimeFailure, match=r"bad.tflite on host: failed \(exit code 1\): bad.tflite: ") as e:
        emu.run_worker(bad, np.zeros((1, 4), np.float32), cpu_name=None, timeout_s=60)
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------- under qemu (make arm-env)


@needs_env
def test_hwcaps_differ_per_cpu_model():
    a53, a76 = emu.hwcaps("cortex-a53"), emu.hwcaps("cortex-a76")
    assert a53.key["asimd"] and a76.key["asimd"]
    assert not a53.key["dotprod"] and a76.key["dotprod"] and a76.key["fp16"]
    assert not a76.key["sme"] and emu.hwcaps("max").key["sme"] and not emu.hwcaps("max,sme=off").key["sme"]


@needs_env
@pytest.mark.slow
def test_int8_tflite_on_cortex_a76_matches_the_host(tiny_tflite_int8, tiny_calib):
    x = tiny_calib[:4]
    host = emu.run_worker(tiny_tflite_int8, x, cpu_name=None, timeout_s=120)
    r = emu.compare_emulated(tiny_tflite_int8, x, "cortex-a76", timeout=900, host=host)
    assert r.error is None, r.error
    assert r.runtime == "litert" and r.integer_outputs and r.samples == 4
    # int8 outputs: a different rounding in the aarch64 (dot-product) kernels may move a value by a
    # step of the output scale; bit-exact agreement is what we see, and is allowed, not required
    step = host["meta"]["outputs"][0]["scale"]
    assert r.max_abs_diff <= 2 * step + 1e-9, (r.max_abs_diff, step)
    assert r.bit_exact == (r.max_abs_diff == 0.0)
    assert r.top1_agreement >= 0.75
    assert r.outputs.shape == host["float_0"].shape and "outputs" not in r.to_json()
    assert r.emulated_seconds > 0 and r.to_json()["emulated_seconds_label"] == emu.EMULATED_LABEL


def test_arm_env_setup_refuses_a_non_x86_host_in_one_line(monkeypatch, capsys, tmp_path):
    import importlib.util
    import platform

    spec = importlib.util.spec_from_file_location("arm_env", Path(__file__).parents[1] / "scripts" / "arm_env.py")
    arm_env = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(arm_env)
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert arm_env.main(["--cache", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("arm-env: error: needs an x86_64 Linux host") and "\n" not in err
    assert not (tmp_path / "cache").exists()  # nothing half-made


# ---------------------------------------------------------------- eval/bench --emulate and target profiles


def _cli(*args):
    from click.testing import CliRunner

    from mobiledeploy.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


def test_target_profiles_name_their_emulated_cpu(tmp_path):
    from mobiledeploy.targets import load_target

    for name in ("pixel4-big", "pixel4", "rpi5", "sd888-x1"):
        assert load_target(name).emulate == "cortex-a76", name
    assert load_target("a55-little").emulate == "cortex-a55" and "no Cortex-A55" in load_target("a55-little").emulate_note
    assert "closest" in load_target("sd888-x1").emulate_note
    assert load_target("host").emulate is None
    assert emu.for_target("target", load_target("pixel4-big")) == "cortex-a76"
    assert emu.for_target("cortex-a53", load_target("pixel4-big")) == "cortex-a53"  # a CPU name wins
    with pytest.raises(UsageError, match="target 'host' has no emulate field"):
        emu.for_target("target", load_target("host"))
    bad = tmp_path / "t.toml"
    bad.write_text('name = "t"\nemulate = "cortex-a78"\n')
    with pytest.raises(UsageError, match="emulate 'cortex-a78' is not an emulated CPU model; choose from cortex-a53"):
        load_target(file=bad)


def test_emulate_flags_without_the_environment_are_one_line_exit_2(tmp_path, monkeypatch):
    from conftest import errors

    monkeypatch.setenv(emu.CACHE_ENV, str(tmp_path / "empty"))
    for args in (["bench", tmp_path / "m.tflite", "--emulate", "cortex-a76"],
                 ["bench", tmp_path / "m.tflite", "--target", "pixel4-big", "--emulate", "target"],
                 ["eval", tmp_path / "build", "--data", "digits", "--emulate", "cortex-a76"]):
        r = _cli(*args)
        lines = errors(r.stderr)
        assert r.exit_code == 2 and len(lines) == 1, (args, r.stderr)
        assert "make arm-env" in lines[0] and str(tmp_path / "empty") in lines[0] and "Traceback" not in r.stderr
    r = _cli("bench", tmp_path / "m.tflite", "--emulate", "cortex-a78")  # the name is checked first
    assert r.exit_code == 2 and "unknown emulated CPU 'cortex-a78'" in r.stderr
    r = _cli("bench", tmp_path / "m.tflite", "--emulate", "target")  # host has no emulate field
    assert r.exit_code == 2 and "target 'host' has no emulate field" in r.stderr


def test_the_child_path_imports_only_what_the_guest_has(tiny_tflite, tmp_path):
    """The bench child, as it runs under qemu: no rich/click/scipy/onnx/PIL/TensorFlow on its path."""
    import subprocess
    import sys

    blocker = ("import sys, runpy\n"
               "class Block:\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               "        if name.split('.')[0] in {'rich', 'click', 'scipy', 'onnx', 'PIL', 'tensorflow', 'keras', "
               "'sklearn'}:\n"
               "            raise ImportError('the guest has no ' + name)\n"
               "sys.meta_path.insert(0, Block())\n"
               "runpy.run_module('mobiledeploy.runtimes.child', run_name='__main__')\n")
    job = {"task": "bench", "model": str(tiny_tflite), "threads": 1, "runs": 2, "warmup": 0, "precision": "fp32"}
    proc = subprocess.run([sys.executable, "-c", blocker], input=json.dumps(job), capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).parents[1])
    result = json.loads(proc.stdout)
    assert result["status"] == "ok", result
    assert result["precision"] == "fp32" and len(result["samples_ms"]) == 2 and result["hwcaps"] is None


@needs_env
@pytest.mark.slow
def test_bench_emulate_shows_the_isa_features_the_runtime_saw(tiny_tflite_int8, tmp_path):
    seen = {}
    for cpu_name in ("cortex-a53", "cortex-a76"):
        out = tmp_path / f"{cpu_name}.json"
        r = _cli("bench", tiny_tflite_int8, "--emulate", cpu_name, "--runs", 3, "--warmup", 0, "--wide",
                 "--json", out)
        assert r.exit_code == 0, r.output + r.stderr
        doc = json.loads(out.read_text())
        assert doc["label"].startswith(emu.EMULATED_LABEL) and cpu_name in doc["label"]
        res = doc["results"][0]
        assert res["status"] == "ok" and res["label"] == doc["label"] and res["emulate"] == cpu_name
        assert res["hwcaps"] == doc["emulation"]["hwcaps"] and res["precision"] == "int8"
        assert res["peak_rss_mb"] is None  # qemu's memory is not the model's
        seen[cpu_name] = res["hwcaps"]
        assert emu.EMULATED_LABEL in r.output and "ISA features the runtime saw" in r.output
        assert "emulated p50 ms" in " ".join(r.output.split())
    assert not seen["cortex-a53"]["dotprod"] and seen["cortex-a76"]["dotprod"]
    assert seen["cortex-a76"]["hwcap"] == emu.find_env().info["cpus"]["cortex-a76"]["hwcap"]  # as set-up recorded


@needs_env
def test_a_model_that_crashes_under_emulation_is_its_error_row(tiny_tflite, tmp_path, monkeypatch):
    from mobiledeploy.runtimes.child import FAULT_ENV

    monkeypatch.setenv(FAULT_ENV, "segfault")  # MOBILEDEPLOY_* variables reach the guest
    r = _cli("bench", tiny_tflite, "--emulate", "cortex-a76", "--runs", 1, "--json", tmp_path / "b.json")
    assert r.exit_code == 1 and "Traceback" not in r.stderr
    res = json.loads((tmp_path / "b.json").read_text())["results"][0]
    assert res["status"] == "error" and "under emulation (cortex-a76)" in res["error"] and "SIGSEGV" in res["error"]


@needs_env
@pytest.mark.slow
def test_eval_emulate_reports_each_artifacts_top1_and_agreement_with_the_host(tmp_path):
    root = Path(__file__).resolve().parents[1]
    build = tmp_path / "build"
    r = _cli("export", "--model", root / "models/mobilenet_v1_0.25_32_digits.keras", "--calib", "digits",
             "--out", build)
    assert r.exit_code == 0, r.output + r.stderr
    out = tmp_path / "eval.json"
    r = _cli("eval", build, "--data", "digits", "--limit", 60, "--emulate", "cortex-a76", "--json", out)
    assert r.exit_code == 0, r.output + r.stderr
    doc = json.loads(out.read_text())
    host = {x["model"]: x for x in doc["results"]}
    emulated = {x["model"]: x for x in doc["emulated"]}
    assert set(emulated) == set(host)
    artifacts = [m for m in emulated if m.endswith((".tflite", ".onnx"))]
    assert {Path(m).suffix for m in artifacts} == {".tflite", ".onnx"} and len(artifacts) >= 4
    for m in artifacts:
        e = emulated[m]
        assert e["status"] == "ok" and e["cpu"] == "cortex-a76", e
        # the emulated top-1 can differ from the host's by at most the share of samples that disagree
        assert abs(e["top1"] - host[m]["top1"]) <= 1 - e["top1_agreement"] + 1e-9
        assert e["top1"] > 0.9  # a trained model, on ARM kernels
        if e["bit_exact"]:
            assert e["max_abs_diff"] == 0.0 and e["top1_agreement"] == 1.0
        assert e["emulated_seconds"] > 0 and e["emulated_seconds_label"] == emu.EMULATED_LABEL
    for m in emulated:
        if m.endswith(".keras"):
            assert emulated[m]["status"] == "skipped" and "Keras" in emulated[m]["note"]
    text = " ".join(r.stdout.split())
    assert "cortex-a76" in text and "agree" in text and "vs host" in text
    for m in artifacts:  # each row: its emulated top-1, and '=' or the difference
        e = emulated[m]
        row = next(ln for ln in r.stdout.splitlines() if Path(m).name in ln and ln.startswith("│"))
        assert f"{100 * e['top1']:.2f}%" in row
        assert ("=" if e["bit_exact"] else f"{e['max_abs_diff']:.1e}") in row

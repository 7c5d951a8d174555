"""estimate --method kernels: the [kernels] table, trace and llvm-mca parsing, threads, cache, and
(slow, with `make arm-env`) the estimate on real aarch64 kernels under qemu."""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from mobiledeploy.errors import UsageError
from mobiledeploy.kernels import disasm, model, sched, tools, trace
from mobiledeploy.kernels import estimate as ke
from mobiledeploy.targets import list_targets, load_target

FIXTURE = Path(__file__).parent / "data" / "kernels_trace.log"  # cut from a real 2-thread trace (qemu 7.2)
SPIN = {0x55091DB398, 0x55091DB3A8, 0x55091DB3B4, 0x55091DB3BC}  # pthreadpool's spin-wait loop
DOT_BLOCK = 0x55091C8294


def _missing(fn):
    try:
        fn()
    except UsageError as e:
        return str(e)
    return None


LLVM = _missing(lambda: disasm.llvm_bin("llvm-mca"))
needs_llvm = pytest.mark.skipif(LLVM is not None, reason=str(LLVM))


def _target_file(tmp_path, kernels: str, name="myboard") -> Path:
    p = tmp_path / f"{name}.toml"
    p.write_text(f'name = "{name}"\n[run]\nthreads = 1\n[device]\nclock_ghz = 1.5\nfp32_flops_per_cycle = 8\n'
                 f'[kernels]\n{textwrap.dedent(kernels)}')
    return p


# ---------------------------------------------------------------- the [kernels] table


def test_shipped_arm_targets_all_have_a_core():
    for t in list_targets():
        if t.name != "host":
            assert t.kernels["cpu"] and t.kernels["sched"] and t.kernels["clock_ghz"] > 0, t.name
            assert t.kernels["note"], t.name  # the mapping's approximations are stated
            assert t.to_json()["kernels"]["midr"].startswith("0x")


def test_hand_written_target_file(tmp_path):
    p = _target_file(tmp_path, 'cpu = "cortex-a53"\nmidr = 0x410fd034\nsched = "cortex-a53"\nclock_ghz = 1.2\n')
    t = load_target(file=p)
    assert t.kernels == {"cpu": "cortex-a53", "midr": 0x410FD034, "sched": "cortex-a53", "clock_ghz": 1.2, "note": ""}
    assert ke.core_of(t).midr == 0x410FD034
    p2 = _target_file(tmp_path, 'cpu = "cortex-a53"\nmidr = "0x410fd034"\nsched = "cortex-a53"\nclock_ghz = 1\n', "b2")
    assert load_target(file=p2).kernels["midr"] == 0x410FD034  # a string is read as hex


@pytest.mark.parametrize("body, needle", [
    ('cpu = "cortex-a53"\nmidr = 1\nsched = "cortex-a53"\n', "needs clock_ghz"),
    ('cpu = "cortex-a53"\nmidr = "zz"\nsched = "cortex-a53"\nclock_ghz = 1.0\n', "[kernels].midr"),
    ('cpu = "cortex-a53"\nmidr = 1\nsched = "cortex-a53"\nclock_ghz = 1.0\nfreq = 2\n', "unknown key [kernels].freq"),
    ('cpu = "cortex-a53"\nmidr = 1\nsched = "cortex-a53"\nclock_ghz = 0\n', "[kernels].clock_ghz"),
])
def test_bad_kernels_table_is_one_line(tmp_path, body, needle):
    with pytest.raises(UsageError) as e:
        load_target(file=_target_file(tmp_path, body))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_core_names_are_checked_when_an_estimate_runs_not_at_load(tmp_path, monkeypatch):
    """Loading a target runs no tool; a core qemu or llvm-mca does not know is one line when the
    estimate starts (llvm-mca's model) or before the emulated run (qemu's CPU)."""
    import subprocess
    from types import SimpleNamespace

    body = 'cpu = "cortex-a99"\nmidr = 1\nsched = "cortex-q1"\nclock_ghz = 1.0\n'
    with monkeypatch.context() as m:
        m.setattr(subprocess, "run", lambda *a, **k: pytest.fail(f"a tool ran at target load: {a}"))
        t = load_target(file=_target_file(tmp_path, body))
    monkeypatch.setattr(disasm, "llvm_bin", lambda tool: tool)
    monkeypatch.setattr(sched, "mca_cpus", lambda: ("cortex-a53", "neoverse-n1"))
    monkeypatch.setattr(tools, "qemu_cpus", lambda qemu: ("cortex-a53", "cortex-a76"))
    for call, needle in ((lambda: ke.preflight(tmp_path / "m.tflite", t, env=object()), "-mcpu 'cortex-q1'"),
                         (lambda: trace.trace(tmp_path / "m.tflite", qemu_cpu="cortex-a99", midr=1,
                                              env=SimpleNamespace(qemu="qemu")), "qemu does not know CPU 'cortex-a99'")):
        with pytest.raises(UsageError) as e:
            call()
        assert needle in str(e.value) and "choose from cortex-a53" in str(e.value) and "\n" not in str(e.value)


def test_no_kernels_table_is_a_usage_error(tmp_path):
    from mobiledeploy.cli import cli

    model = tmp_path / "m.tflite"
    model.write_bytes(b"x")
    r = CliRunner().invoke(cli, ["estimate", str(model), "--target", "host", "--method", "kernels"])
    assert r.exit_code == 2 and "has no [kernels] table" in r.stderr and "Traceback" not in r.stderr


def test_missing_llvm_is_one_line_naming_make_arm_env(monkeypatch):
    monkeypatch.setattr(disasm, "LLVM_VERSION", 99)  # a version no machine has
    monkeypatch.delenv(disasm.LLVM_ENV, raising=False)
    with pytest.raises(UsageError) as e:
        disasm.llvm_bin("llvm-mca")
    assert "make arm-env" in str(e.value) and "\n" not in str(e.value)


# ---------------------------------------------------------------- trace, mix, llvm-mca, threads


def test_trace_fixture_counts_inference_only():
    tr = trace.parse_log(FIXTURE)
    # every (thread, block) pair of the fixture was kept 5 times between the markers
    assert set(tr.counts.values()) == {5}
    assert {pc for _, pc in tr.counts} == SPIN | {0x55091C81E8, 0x55091C8034, DOT_BLOCK}
    assert {cpu for cpu, _ in tr.counts} == {0, 2}  # two guest threads, two CPU indexes
    assert 0x5508C48248 not in {pc for _, pc in tr.counts}  # warm-up lines before the marker are not counted
    assert tr.blocks[0x55091DB3BC] == [0xD503203F, 0x17FFFFF6]  # yield; b
    assert len(tr.blocks[DOT_BLOCK]) == 24


def test_trace_without_markers_is_an_error(tmp_path):
    from mobiledeploy.errors import RuntimeFailure

    p = tmp_path / "q.log"
    p.write_text(FIXTURE.read_text().replace("__mobiledeploy_kernels_end__", "x"))
    with pytest.raises(RuntimeFailure, match="no inference markers"):
        trace.parse_log(p)


@pytest.mark.parametrize("text, cls", [
    ("sdot v16.4s, v4.16b, v0.4b[0]", "dot"), ("udot v1.4s, v2.16b, v3.16b", "dot"),
    ("smmla v0.4s, v1.16b, v2.16b", "i8mm"), ("fmla v0.4s, v1.4s, v2.s[0]", "fp32_fma"),
    ("fmla v0.8h, v1.8h, v2.h[1]", "fp16_fma"), ("ldp q6, q7, [x5], #32", "load"),
    ("ld1 { v0.4s }, [x0]", "load"), ("st1 { v0.4s }, [x0], #16", "store"), ("b.hs #-312", "branch"),
    ("smlal v0.4s, v1.4h, v2.4h", "int_mla"), ("add x0, x0, #1", "other"),
])
def test_mix_classes(text, cls):
    assert disasm.classify(text) == cls


MCA_OUT = """
[0] Code Region - 0

Iterations:        100
Instructions:      7900
Total Cycles:      3210
Total uOps:        7900

[1] Code Region - 1

Iterations:        100
Instructions:      500
Total Cycles:      257
"""


def test_llvm_mca_output_parsing():
    assert sched.parse_mca(MCA_OUT) == {"0": 32.1, "1": 2.57}


def test_threads_take_the_busiest_thread_not_the_average():
    prof = {"hot": [{"lines": ["a"] * 10, "counts": {"0": 100, "1": 40}},
                    {"lines": ["b"] * 4, "counts": {"0": 10}}],
            "cold": {"1": 50}, "wait": {"1": 999}}
    r = model.threads_cycles(prof, [5.0, 2.0])
    t0, t1 = r["per_thread"]["0"], r["per_thread"]["1"]
    assert t0["instructions"] == 1040 and t0["cycles"] == 520
    ipc = (1400 + 40) / (700 + 20)  # the cold rest runs at the hot blocks' IPC
    assert t1["cycles"] == pytest.approx(200 + 50 / ipc) and t1["wait_instructions"] == 999
    assert r["critical_cycles"] == t0["cycles"] and r["total_cycles"] == pytest.approx(t0["cycles"] + t1["cycles"])


def test_hot_blocks_cover_the_fraction():
    assert model.hot_blocks({1: 900, 2: 90, 3: 10}, fraction=0.95) == [1, 2]
    assert model.hot_blocks({1: 900, 2: 90, 3: 10}, fraction=1.0) == [1, 2, 3]


@needs_llvm
def test_fixture_decodes_dot_products_and_finds_the_spin_loop():
    tr = trace.parse_log(FIXTURE)
    texts = disasm.disassemble({w for ws in tr.blocks.values() for w in ws})
    mix = Counter(disasm.classify(texts[w]) for w in tr.blocks[DOT_BLOCK])
    assert mix["dot"] == 16  # qemu printed them as .byte; LLVM decodes sdot
    info = {pc: model.BlockInfo(n=len(ws), mix=Counter(disasm.classify(texts[w]) for w in ws),
                                wait=disasm.is_wait([texts[w] for w in ws])) for pc, ws in tr.blocks.items()}
    assert model.spin_blocks(info) == SPIN


@needs_llvm
def test_profile_and_cache(tmp_path):
    tr = trace.parse_log(FIXTURE)
    tr.meta = {"runtime": "litert", "version": "test"}
    prof = ke.profile_from_trace(tr, "neoverse-n1", tmp_path)
    assert prof["per_thread"].keys() == {"0", "2"} and prof["wait"]["2"] > 0  # the spin loop is not work
    assert prof["mix"]["dot"] > 0 and prof["critical_cycles"] == max(t["cycles"] for t in prof["per_thread"].values())
    cached = json.loads((tmp_path / "sched-neoverse-n1.json").read_text())
    assert len(cached) == prof["hot_blocks"]
    slow = ke.schedule(prof, "cortex-a53", tmp_path)  # an in-order little core: more cycles for the same work
    assert slow["critical_cycles"] > prof["critical_cycles"]


def test_cached_profile_returns_without_running(tmp_path, tiny_tflite, monkeypatch):
    """A stored profile is the estimate: no qemu, no llvm (both replaced by failures here)."""
    from types import SimpleNamespace

    from mobiledeploy.kernels import estimate as est

    monkeypatch.setattr(disasm, "llvm_bin", lambda tool: tool)
    monkeypatch.setattr(sched, "check_mcpu", lambda m: None)
    monkeypatch.setattr(est, "profile", lambda *a, **k: pytest.fail("counted again"))
    env = SimpleNamespace(cache=tmp_path, wheels={"ai-edge-litert": "x"})
    t = load_target(file=_target_file(tmp_path, 'cpu = "cortex-a76"\nmidr = 0x414fd0b1\nsched = "neoverse-n1"\n'
                                                 'clock_ghz = 2.0\n'))
    core = est.core_of(t)
    prof = {"instructions": 4e6, "mix": {"dot": 0.25}, "hot": [], "cold": {"0": 4e6}, "wait": {},
            "hot_fraction": 0.0, "runtime": "litert", "runtime_version": "x", "sched": "neoverse-n1",
            "hot_blocks": 0, "per_thread": {"0": {"instructions": 4e6, "cycles": 2e6}}, "critical_cycles": 2e6,
            "total_cycles": 2e6}
    key = est.profile_key(tiny_tflite, core, 1, True, env.wheels)
    (tmp_path / "kernels" / "profiles").mkdir(parents=True)
    (tmp_path / "kernels" / "profiles" / f"{key}.json").write_text(json.dumps(prof))
    r = est.estimate_kernels(tiny_tflite, t, env=env)
    assert r.cached and r.compute_ms == pytest.approx(1.0) and r.ipc == 2.0 and r.label == est.LABEL


# ---------------------------------------------------------------- real kernels under qemu (slow)


def _arm_missing():
    from mobiledeploy.runtimes import emulate as emu

    return _missing(emu.find_env) or LLVM


ARM = _arm_missing()


@pytest.mark.slow
@pytest.mark.skipif(ARM is not None, reason=str(ARM))
def test_dot_products_on_the_a76_only(tmp_path, capsys):
    """V1 0.25/128 int8 and fp32 on a Cortex-A53 and a Cortex-A76 board (hand-written target files)."""
    import numpy as np
    import tensorflow as tf

    import keras as K

    from mobiledeploy.cli import cli
    from conftest import quiet

    K.utils.set_random_seed(0)
    m = K.applications.MobileNet(input_shape=(128, 128, 3), alpha=0.25, weights=None, classes=1000)
    paths = {}
    with quiet():
        conv = tf.lite.TFLiteConverter.from_keras_model(m)
        paths["fp32"] = tmp_path / "v1_fp32.tflite"
        paths["fp32"].write_bytes(conv.convert())
        conv = tf.lite.TFLiteConverter.from_keras_model(m)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        rng = np.random.default_rng(0)
        conv.representative_dataset = lambda: ([rng.uniform(-1, 1, (1, 128, 128, 3)).astype(np.float32)]
                                               for _ in range(4))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        paths["int8"] = tmp_path / "v1_int8.tflite"
        paths["int8"].write_bytes(conv.convert())
    boards = {"a53": 'cpu = "cortex-a53"\nmidr = 0x410fd034\nsched = "cortex-a53"\nclock_ghz = 1.4\n',
              "a76": 'cpu = "cortex-a76"\nmidr = 0x414fd0b1\nsched = "neoverse-n1"\nclock_ghz = 2.4\n'}
    ms = {}
    for board, body in boards.items():
        tf_ = _target_file(tmp_path, body, name=board)
        for prec, p in paths.items():
            out = tmp_path / f"{board}_{prec}.json"
            r = CliRunner().invoke(cli, ["estimate", str(p), "--target-file", str(tf_), "--method", "kernels",
                                          "--json", str(out)])
            assert r.exit_code == 0, r.output + r.stderr
            assert "device estimate from emulated kernels" in r.stdout and "IPC" in r.stdout
            doc = json.loads(out.read_text())
            ms[board, prec] = doc["latency_ms"]
            if prec == "int8":
                assert (doc["mix"]["dot"] > 0) == (board == "a76"), (board, doc["mix"])
                # the per-kernel breakdown names XNNPACK's microkernels: dot-product ones on the A76 only
                names = " ".join(f["function"] for f in doc["functions"])
                assert doc["functions"] and ("dot" in names) == (board == "a76"), names
            else:
                assert doc["mix"]["fp32_fma"] > 0.3
    with capsys.disabled():
        for board in boards:
            print(f"\n{board}: int8/fp32 latency ratio {ms[board, 'int8'] / ms[board, 'fp32']:.2f} "
                  f"(int8 {ms[board, 'int8']:.2f} ms, fp32 {ms[board, 'fp32']:.2f} ms)")


@pytest.mark.slow
@pytest.mark.skipif(ARM is not None, reason=str(ARM))
def test_builtin_kernels_and_onnxruntime(tmp_path, tiny_tflite_int8, tiny_onnx):
    """LiteRT's built-in kernels ([run] xnnpack = false) and ONNX Runtime are counted too, and say
    they are not validated against published figures."""
    body = 'cpu = "cortex-a76"\nmidr = 0x414fd0b1\nsched = "neoverse-n1"\nclock_ghz = 2.4\n'
    board = load_target(file=_target_file(tmp_path, body, name="a76"))
    from dataclasses import replace

    builtin = ke.estimate_kernels(tiny_tflite_int8, replace(board, xnnpack=False))
    ort = ke.estimate_kernels(tiny_onnx, board)
    xnn = ke.estimate_kernels(tiny_tflite_int8, board)
    assert (builtin.runtime, builtin.xnnpack, ort.runtime) == ("litert", False, "onnxruntime")
    for r in (builtin, ort):
        assert r.instructions > 0 and r.latency_ms > 0 and any("not validated" in n for n in r.notes)
    assert not any("not validated" in n for n in xnn.notes)
    assert builtin.instructions != xnn.instructions  # other kernels, other counts

"""estimate --method kernels, per operator: cutting the calling thread's trace at XNNPACK's
once-per-operator call, naming the segments after the delegated TFLite nodes, the table, and
(slow, with `make arm-env`) the breakdown of a real tiny model at one thread."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from mobiledeploy.errors import UsageError
from mobiledeploy.kernels import operators, trace

FIXTURE = Path(__file__).parent / "data" / "kernels_trace_ops.log"  # synthetic, in qemu 7.2's log format
ENTRY, CALL, RET = 0x5500001000, 0x5500002000, 0x5500002008  # callee entry, caller's `bl`, return block
K1, K2, BETWEEN = 0x5500003000, 0x5500003100, 0x5500004000  # operator 0's kernel, operator 1's, interpreter


def test_bl_return_addresses():
    bl = 0x94000000 | (((ENTRY - (CALL + 4)) // 4) & 0x3FFFFFF)  # a backward bl
    assert trace.call_returns({CALL: [0xD503201F, bl]}, ENTRY) == {RET}
    assert trace.call_returns({CALL: [0xD503201F, bl]}, ENTRY + 4) == set()
    fwd = 0x94000000 | ((0x40 // 4) & 0x3FFFFFF)
    assert trace.call_returns({0x100: [fwd]}, 0x140) == {0x104}


def test_segments_of_the_calling_thread():
    tr = trace.parse_log(FIXTURE, invokes=2, op_entry=ENTRY)
    assert tr.main_cpu == 0 and len(tr.ops) == 2  # two operators per invoke, folded over the invokes
    assert dict(tr.ops[0]) == {ENTRY: 2, K1: 4} and dict(tr.ops[1]) == {ENTRY: 2, K2: 6}
    assert dict(tr.between) == {BETWEEN: 4, CALL: 4, RET: 4}  # the return block is the runtime's again
    plain = trace.parse_log(FIXTURE, invokes=2)
    assert tr.counts == plain.counts  # the same totals, worker lines included
    assert tr.counts[1, K2] == 3 and tr.counts[1, K1] == 2 and (0, ENTRY) in tr.counts
    # the calling thread's segments and what lies between them are all of its blocks
    main = sum(n for (c, _), n in tr.counts.items() if c == 0)
    assert sum(sum(c.values()) for c in tr.ops) + sum(tr.between.values()) == main


def test_no_entry_or_uneven_count_gives_no_segments():
    assert trace.parse_log(FIXTURE, invokes=2, op_entry=0x5500009000).ops == []  # never executed
    tr = trace.parse_log(FIXTURE, invokes=3, op_entry=ENTRY)  # 4 entries do not split into 3 invokes
    assert tr.ops == [] and not tr.between and tr.counts == trace.parse_log(FIXTURE).counts


def _nodes():
    # [index, op, inputs, outputs, [[name, shape]]]: tensor 0 is the input, 1-2 weights
    return [
        [0, "DEQUANTIZE", [1], [3], [["w_f32", [8, 3, 3, 3]]]],  # weight decoding: no operator
        [1, "CONV_2D", [0, 3, 2], [4], [["conv", [1, 8, 8, 8]]]],
        [2, "SHAPE", [4], [5], [["shape", [4]]]],  # not delegated
        [3, "RESHAPE", [4, 5], [6], [["flat", [1, 512]]]],
        [4, "SOFTMAX", [6], [7], [["probs", [1, 512]]]],
        [5, "DELEGATE", [0, 1, 2], [4], [["conv", [1, 8, 8, 8]]]],
        [6, "DELEGATE", [6], [7], [["probs", [1, 512]]]],
    ]


def test_delegated_nodes_in_execution_order():
    got = operators.delegated_nodes(_nodes(), [0])
    assert [(n["index"], n["type"], n["output"], n["shape"]) for n in got] == [
        (1, "CONV_2D", "conv", [1, 8, 8, 8]), (4, "SOFTMAX", "probs", [1, 512])]
    assert operators.delegated_nodes([n for n in _nodes() if n[1] != "DELEGATE"], [0]) == []


def test_short_function_names_keep_anonymous_namespaces():
    from mobiledeploy.kernels import symbols

    assert symbols.short("void (anonymous namespace)::mean<float>(int, float*)") == "void {anonymous}::mean<float>"
    assert symbols.short("xnn_f32_gemm_ukernel(unsigned long)") == "xnn_f32_gemm_ukernel"


def _prof(main_counts: dict, worker_counts: dict) -> dict:
    """Two hot blocks (10 and 4 instructions); per-operator counts of the calling thread '0'."""
    hot = [{"pc": K1, "lines": ["x"] * 10, "counts": {"0": 6} | worker_counts.get(0, {})},
           {"pc": K2, "lines": ["y"] * 4, "counts": {"0": 10} | worker_counts.get(1, {})}]
    return {"hot": hot, "cold": {"0": 20.0}, "maps": [],
            "operators": {"main": "0", "nodes": main_counts.get("nodes", []),
                          "segments": [{"hot": {"0": 6}, "cold": 0.0}, {"hot": {"1": 8}, "cold": 12.0}],
                          "between": {"hot": {"1": 2}, "cold": 8.0}}}


def test_table_one_thread_sums_to_the_thread():
    from mobiledeploy.kernels import model

    prof = _prof({"nodes": [{"type": "CONV_2D", "output": "a", "shape": [1]},
                            {"type": "SOFTMAX", "output": "b", "shape": [1]}]}, {})
    cycles = [5.0, 2.0]
    t = operators.table(prof, cycles)
    rows = t["rows"]
    assert t["named"] and not t["workers_attributed"] and [r["operator"] for r in rows] == [
        "CONV_2D", "SOFTMAX", operators.BETWEEN]
    ipc = (60 + 40) / (30 + 20)  # the cold instructions at the hot blocks' IPC
    assert rows[0]["instructions"] == 60 and rows[0]["cycles"] == 30
    assert rows[1]["instructions"] == 32 + 12 and rows[1]["cycles"] == pytest.approx(16 + 12 / ipc)
    thread = model.threads_cycles(prof, cycles)["per_thread"]["0"]
    assert sum(r["instructions"] for r in rows) == pytest.approx(thread["instructions"])
    assert sum(r["cycles"] for r in rows) == pytest.approx(thread["cycles"])
    assert sum(r["cycles_share"] for r in rows) == pytest.approx(1.0)
    assert [r["ms"] for r in operators.with_ms(t, 2.0)][0] == pytest.approx(30 / 2e6)
    assert operators.notes(t) == []


def test_table_workers_follow_the_calling_threads_blocks():
    prof = _prof({"nodes": [{"type": "CONV_2D", "output": "a", "shape": [1]}]}, {1: {"2": 5}})
    t = operators.table(prof, [5.0, 2.0])
    rows = t["rows"]
    assert not t["named"] and rows[0]["operator"] == "op 0"  # 2 operators for 1 delegated node
    assert t["workers_attributed"] and len(operators.notes(t)) == 2
    # the worker's 5 executions of block 1 split as the calling thread's 8 (operator 1) and 2 (between)
    assert rows[1]["instructions"] == pytest.approx(32 + 12 + 4 * 4)
    assert rows[2]["instructions"] == pytest.approx(8 + 8 + 1 * 4)
    assert sum(r["instructions"] for r in rows) == pytest.approx(6 * 10 + 15 * 4 + 20)


def _target_file(tmp_path) -> Path:
    p = tmp_path / "board.toml"
    p.write_text(textwrap.dedent('''\
        name = "board"
        [run]
        threads = 1
        [device]
        clock_ghz = 2.0
        fp32_flops_per_cycle = 8
        [kernels]
        cpu = "cortex-a76"
        midr = 0x414fd0b1
        sched = "neoverse-n1"
        clock_ghz = 2.0
        '''))
    return p


def test_cli_prints_the_top_operators_and_all_with_layers(tmp_path, tiny_tflite, monkeypatch):
    """A stored profile with 12 operators: the table holds the 10 with the most cycles by default,
    all 12 with --layers, none with --no-layers; --json holds all of them."""
    from types import SimpleNamespace

    from mobiledeploy.cli import cli
    from mobiledeploy.kernels import disasm, sched
    from mobiledeploy.kernels import estimate as est
    from mobiledeploy.runtimes import emulate as emu
    from mobiledeploy.targets import load_target

    env = SimpleNamespace(cache=tmp_path, wheels={"ai-edge-litert": "x"})
    monkeypatch.setattr(disasm, "llvm_bin", lambda tool: tool)
    monkeypatch.setattr(sched, "check_mcpu", lambda m: None)
    monkeypatch.setattr(emu, "find_env", lambda: env)
    monkeypatch.setattr(est, "profile", lambda *a, **k: pytest.fail("counted again"))
    rows = [{"index": i, "operator": "CONV_2D", "output": f"t{i};fused", "shape": [1, 4], "function": "k",
             "instructions": 1000.0 + i, "cycles": 100.0 * (i + 1), "cycles_share": 0.0} for i in range(12)]
    rows.append({"index": None, "operator": operators.BETWEEN, "output": "", "shape": [], "function": "",
                 "instructions": 10.0, "cycles": 5.0, "cycles_share": 0.0})
    prof = {"instructions": 4e6, "mix": {}, "hot": [], "cold": {"0": 4e6}, "wait": {}, "hot_fraction": 0.0,
            "runtime": "litert", "runtime_version": "x", "sched": "neoverse-n1", "hot_blocks": 0,
            "per_thread": {"0": {"instructions": 4e6, "cycles": 2e6}}, "critical_cycles": 2e6,
            "total_cycles": 2e6, "per_operator": {"rows": rows, "operators": 12, "delegated_nodes": 12,
                                                  "named": True, "workers_attributed": False}}
    board = _target_file(tmp_path)
    core = est.core_of(load_target(file=board))
    key = est.profile_key(tiny_tflite, core, 1, True, env.wheels)
    (tmp_path / "kernels" / "profiles").mkdir(parents=True)
    (tmp_path / "kernels" / "profiles" / f"{key}.json").write_text(json.dumps(prof))
    base = ["estimate", str(tiny_tflite), "--target-file", str(board), "--method", "kernels", "--wide"]

    def shown(extra):
        r = CliRunner().invoke(cli, base + extra)
        assert r.exit_code == 0, r.output + r.stderr
        return {i for i in range(12) if f" t{i} " in r.stdout}, r.stdout

    top, out = shown([])
    assert top == set(range(2, 12)) and "10 of 12" in out and operators.BETWEEN in out
    assert "fused" not in out  # a fused tensor's first name only
    assert shown(["--layers"])[0] == set(range(12))
    none, out = shown(["--no-layers"])
    assert not none and "per operator" not in out
    r = CliRunner().invoke(cli, base + ["--json", "-"])
    doc = json.loads(r.stdout)
    assert len(doc["operators"]) == 13 and doc["operators"][11]["ms"] == pytest.approx(1200 / 2e6)


# ---------------------------------------------------------------- real kernels under qemu (slow)


def _arm_missing():
    from mobiledeploy.kernels import disasm
    from mobiledeploy.runtimes import emulate as emu

    for fn in (emu.find_env, lambda: disasm.llvm_bin("llvm-mca")):
        try:
            fn()
        except UsageError as e:
            return str(e)
    return None


ARM = _arm_missing()


@pytest.mark.slow
@pytest.mark.skipif(ARM is not None, reason=str(ARM))
def test_one_thread_breakdown_of_a_real_model(tiny_tflite, tmp_path):
    """The tiny MobileNet V1 (fp32, 32x32) at one thread on a Cortex-A76 board: one segment per
    operator XNNPACK runs, as many as the TFLite nodes the delegate took, and the segments with
    the work between them hold the whole count."""
    from mobiledeploy.kernels import estimate as est
    from mobiledeploy.targets import load_target

    board = load_target(file=_target_file(tmp_path))
    tr = trace.trace(tiny_tflite, qemu_cpu="cortex-a76", midr=0x414FD0B1, threads=1, invokes=2)
    nodes = operators.delegated_nodes(tr.meta["nodes"], tr.meta["graph_inputs"])
    assert nodes and len(tr.ops) == len(nodes)
    prof = est.profile_from_trace(tr, "neoverse-n1", None)
    per_op = prof["per_operator"]
    assert per_op["named"] and per_op["operators"] == len(nodes)
    rows = per_op["rows"]
    assert [r["operator"] for r in rows[:-1]] == [n["type"] for n in nodes]
    assert sum(r["instructions"] for r in rows) == pytest.approx(prof["instructions"], rel=0.01)
    assert sum(r["cycles"] for r in rows) == pytest.approx(prof["critical_cycles"], rel=0.01)
    convs = [r for r in rows if r["operator"] in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    assert convs and all(r["function"].startswith("xnn_f32_") for r in convs)  # XNNPACK's fp32 kernels
    r = est.estimate_kernels(tiny_tflite, board, refresh=True)
    assert len(r.operators) == len(nodes) + 1 and sum(o["ms"] for o in r.operators) == pytest.approx(
        r.compute_ms, rel=0.01)

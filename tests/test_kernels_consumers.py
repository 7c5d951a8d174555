"""The kernel-count estimate where other commands use it: `sweep --estimate-method kernels` (each
artifact row's device estimate, its errors, the resume rule, the report's label) and `check`'s
`max_estimate_ms` with `estimate_method` (the budget schema, exit codes, the printed label); both
through estimate_kernels' cache. Fast tests stand in for qemu and LLVM where noted; the slow one
runs the real aarch64 kernels (`make arm-env`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from mobiledeploy.errors import UsageError
from mobiledeploy.kernels import disasm, sched
from mobiledeploy.kernels import estimate as ke
from mobiledeploy.runtimes import emulate as emu
from mobiledeploy.sweep import core as sweep_core, report as sweep_report, run as sweep_run
from mobiledeploy.sweep.grid import SweepConfig, target_fingerprint_hash
from mobiledeploy.sweep.rows import ArtifactRow, SweepRow
from test_kernels import ARM  # the ARM environment's or LLVM 19's absence, or None

TARGET = "pixel4-big"  # a shipped phone target with a [kernels] core (neoverse-n1 schedule, 2.84 GHz)


def _row(path) -> ArtifactRow:
    path = Path(path)
    return ArtifactRow(file=path.name, path=str(path), format=path.suffix[1:], precision="fp32",
                       size_bytes=path.stat().st_size)


@pytest.fixture
def fake_kernels(tmp_path, monkeypatch):
    """qemu and LLVM replaced: a counted run returns a fixed profile (and is counted here); the
    cache, the estimate and everything around them are the real code."""
    runs = []

    def profile(path, core, **kw):
        runs.append(Path(path).name)
        return {"instructions": 4e6, "mix": {"dot": 0.25}, "hot": [], "cold": {"0": 4e6}, "wait": {},
                "hot_fraction": 0.0, "runtime": "litert", "runtime_version": "x", "sched": core.sched,
                "hot_blocks": 0, "per_thread": {"0": {"instructions": 4e6, "cycles": 2.84e6}},
                "critical_cycles": 2.84e6, "total_cycles": 2.84e6}

    env = SimpleNamespace(cache=tmp_path / "arm", wheels={"ai-edge-litert": "x"})
    monkeypatch.setattr(disasm, "llvm_bin", lambda tool: tool)
    monkeypatch.setattr(sched, "check_mcpu", lambda m: None)
    monkeypatch.setattr(emu, "find_env", lambda *a, **k: env)
    monkeypatch.setattr(ke, "profile", profile)
    return runs


# ---------------------------------------------------------------- sweep


def test_sweep_kernel_estimate_is_cached_and_labelled(tiny_tflite, fake_kernels):
    first, second = _row(tiny_tflite), _row(tiny_tflite)
    sweep_run.add_estimates([first], [TARGET], "kernels")
    sweep_run.add_estimates([second], [TARGET], "kernels")  # another row of the same artifact: the cache
    a, b = first.estimates[TARGET], second.estimates[TARGET]
    assert fake_kernels == [tiny_tflite.name]  # counted once
    assert (a["cached"], b["cached"]) == (False, True)
    assert a["method"] == "kernels" and a["label"] == ke.LABEL and a["error"] is None and a["fitted"] is False
    assert a["ms"] == b["ms"] and a["ms"] >= 1.0  # 2.84 M cycles at 2.84 GHz, plus the memory term
    assert a["target_hash"] == target_fingerprint_hash(TARGET)
    assert ArtifactRow.from_json(first.to_json()).estimates == first.estimates  # kept across reruns


def test_a_stored_estimate_stands_only_for_its_own_method(tiny_tflite, fake_kernels):
    row = _row(tiny_tflite)
    sweep_run.add_estimates([row], [TARGET])  # the default: the cost model, its dict as it always was
    cost = dict(row.estimates[TARGET])
    assert set(cost) == {"ms", "fitted", "error", "target_hash"} and cost["ms"] > 0
    sweep_run.add_estimates([row], [TARGET], "kernels")  # a cost estimate is not a kernels one: redone
    assert row.estimates[TARGET]["method"] == "kernels" and fake_kernels == [tiny_tflite.name]
    sweep_run.add_estimates([row], [TARGET], "kernels")  # current: nothing redone
    assert fake_kernels == [tiny_tflite.name] and row.estimates[TARGET]["cached"] is False
    sweep_run.add_estimates([row], [TARGET], "cost")  # and back
    assert row.estimates[TARGET] == cost


def test_a_target_without_a_core_is_an_error_row(tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"not run")
    row = _row(model)
    sweep_run.add_estimates([row], ["host"], "kernels")
    e = row.estimates["host"]
    assert e["ms"] is None and e["method"] == "kernels" and row.ok
    assert "has no [kernels] table" in e["error"] and "\n" not in e["error"]


def test_no_arm_environment_is_an_error_row_naming_make_arm_env(tmp_path, monkeypatch):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"not run")
    monkeypatch.setenv(emu.CACHE_ENV, str(tmp_path / "no-env"))  # no ARM environment there
    row = _row(model)
    sweep_run.add_estimates([row], [TARGET], "kernels")  # without LLVM 19 its error comes first: also arm-env
    e = row.estimates[TARGET]
    assert e["ms"] is None and "make arm-env" in e["error"] and "\n" not in e["error"]


def test_a_crash_under_emulation_is_an_error_row(tiny_tflite, fake_kernels, monkeypatch):
    def crash(*a, **k):
        raise OSError(8, "Exec format error")

    monkeypatch.setattr(ke, "profile", crash)
    row = _row(tiny_tflite)
    sweep_run.add_estimates([row], [TARGET], "kernels")
    assert row.estimates[TARGET]["ms"] is None and "Exec format error" in row.estimates[TARGET]["error"]


def test_the_report_says_which_estimate(tmp_path):
    cfg = SweepConfig(out=str(tmp_path))
    assert "estimate_method" not in cfg.to_json()  # the default writes what it always wrote
    kcfg = SweepConfig(out=str(tmp_path), estimate_method="kernels")
    assert kcfg.to_json()["estimate_method"] == "kernels"
    machine = {"cpu": "x"}
    cost = sweep_report.notices({"machine": machine, "bench_label": "b", "random_weights": False,
                                 "sweep": cfg.to_json()})
    kern = sweep_report.notices({"machine": machine, "bench_label": "b", "random_weights": False,
                                 "sweep": kcfg.to_json()})
    assert "cost-model estimates" in cost[0] and ke.LABEL not in cost[0]
    assert ke.LABEL in kern[0] and "cost-model" not in kern[0]


def test_estimate_errors_are_one_warning_per_target_and_reason(tmp_path):
    rows = [_row_with(tmp_path, i, {"pixel4-big": {"ms": None, "error": "run make arm-env"}}) for i in range(3)]
    rows[0].estimates["pixel4-big"] = {"ms": 1.0, "error": None}
    res = SweepRow(name="c", row_key="k", export_key="e", export_dir=str(tmp_path), artifacts=rows)
    assert sweep_core.estimate_errors([res], ["pixel4-big"]) == \
        ["pixel4-big: no device estimate for 2 of 3 artifacts: run make arm-env"]


def _row_with(tmp_path, i, estimates) -> ArtifactRow:
    p = tmp_path / f"a{i}.tflite"
    p.write_bytes(b"x")
    r = _row(p)
    r.estimates = json.loads(json.dumps(estimates))
    return r


def test_sweep_cli_refuses_an_unknown_method(tmp_path):
    from mobiledeploy.cli import cli

    r = CliRunner().invoke(cli, ["sweep", "--estimate-method", "phone", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "--estimate-method" in r.stderr and "Traceback" not in r.stderr


# ---------------------------------------------------------------- check


def _check(*args):
    from mobiledeploy.cli import cli

    return CliRunner().invoke(cli, ["check", "-q", *map(str, args)])


def _budget(tmp_path, model, body: str) -> Path:
    shutil.copy(model, tmp_path / "m.tflite")
    p = tmp_path / "budgets.toml"
    p.write_text(f'[[artifact]]\nname = "m"\npath = "m.tflite"\n{body}')
    return p


def test_check_cost_estimate_holds_and_breaks_with_its_label(tmp_path, tiny_tflite):
    ok = _check("--budget", _budget(tmp_path, tiny_tflite, "max_estimate_ms = { pixel4 = 1000 }\n"),
                "--json", tmp_path / "r.json")
    assert ok.exit_code == 0, ok.output + ok.stderr
    (row,) = json.loads((tmp_path / "r.json").read_text())["checks"]
    assert (row["check"], row["verdict"], row["method"]) == ("estimate_ms on pixel4", "pass", "cost")
    assert 0 < row["measured"] <= 1000 and "device estimate for pixel4" in " ".join(ok.stdout.split())  # label
    bad = _check("--budget", _budget(tmp_path, tiny_tflite, "max_estimate_ms = { pixel4 = 1e-6 }\n"))
    assert bad.exit_code == 1 and "estimate_ms on pixel4" in bad.stderr


@pytest.mark.parametrize("body, needle", [
    ('max_estimate_ms = { pixel4 = 5 }\nestimate_method = "phone"\n', "estimate_method = 'phone': choose from"),
    ('estimate_method = "kernels"\nmax_size_kb = 100\n', "estimate_method applies to max_estimate_ms"),
    ('max_estimate_ms = { nophone = 5 }\n', "nophone"),
    ('max_estimate_ms = { host = 5 }\nestimate_method = "kernels"\n', "has no [kernels] table"),
    ('max_estimate_ms = { pixel4 = -1 }\n', "must be > 0"),
])
def test_check_bad_estimate_budget_is_exit_2_in_one_line(tmp_path, tiny_tflite, body, needle):
    r = _check("--budget", _budget(tmp_path, tiny_tflite, body))
    assert r.exit_code == 2 and "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and needle in last, last


def test_check_kernels_estimate_is_cached_and_labelled(tmp_path, tiny_tflite, fake_kernels):
    p = _budget(tmp_path, tiny_tflite, f'max_estimate_ms = {{ {TARGET} = 1000 }}\nestimate_method = "kernels"\n')
    rows = []
    for i in range(2):
        r = _check("--budget", p, "--json", tmp_path / f"r{i}.json")
        assert r.exit_code == 0, r.output + r.stderr
        assert ke.LABEL in " ".join(r.stdout.split()) and "emulated kernels" in r.stdout  # wrapped at 80
        (row,) = json.loads((tmp_path / f"r{i}.json").read_text())["checks"]
        rows.append(row)
    assert fake_kernels == ["m.tflite"]  # counted by the first run only
    assert (rows[0]["cached"], rows[1]["cached"]) == (False, True) and rows[0]["measured"] == rows[1]["measured"]
    assert _check("--budget", p, "--skip", "estimate").exit_code == 0  # its own --skip group
    assert len(fake_kernels) == 1


# ---------------------------------------------------------------- real kernels under qemu (slow)




@pytest.mark.slow
@pytest.mark.skipif(ARM is not None, reason=str(ARM))
def test_sweep_and_check_run_the_real_kernels_once(tmp_path, tiny_tflite_int8):
    """The tiny int8 model on pixel4-big's core under qemu: the sweep row's estimate is the kernels
    estimate, a second call comes from the cache, and check reports the same figure."""
    target = __import__("mobiledeploy.targets", fromlist=["load_target"]).load_target(TARGET)
    first = ke.kernel_estimates_for([tiny_tflite_int8], target)[str(tiny_tflite_int8)]
    assert first.get("estimate_ms"), first
    row = _row(tiny_tflite_int8)
    sweep_run.add_estimates([row], [TARGET], "kernels")
    e = row.estimates[TARGET]
    assert e["cached"] is True and e["ms"] == pytest.approx(first["estimate_ms"]) and e["label"] == ke.LABEL
    p = _budget(tmp_path, tiny_tflite_int8, f'max_estimate_ms = {{ {TARGET} = 1000 }}\nestimate_method = "kernels"\n')
    r = _check("--budget", p, "--json", tmp_path / "r.json")
    assert r.exit_code == 0, r.output + r.stderr
    (check_row,) = json.loads((tmp_path / "r.json").read_text())["checks"]
    assert check_row["cached"] is True and check_row["measured"] == pytest.approx(first["estimate_ms"])


def test_sweep_refuses_kernel_estimates_it_cannot_make_before_any_export(tmp_path, monkeypatch):
    """sweep --estimate-method kernels checks LLVM 19 and the ARM environment up front (one line naming the
    step), and refuses when none of its targets has a [kernels] core; one such target among others is that
    target's row error, as before."""
    monkeypatch.setenv(emu.CACHE_ENV, str(tmp_path / "no-env"))
    with pytest.raises(UsageError, match="make arm-env|llvm"):
        SweepConfig(out=str(tmp_path / "o"), estimate_method="kernels").check()
    with pytest.raises(UsageError, match="'host' has no \\[kernels\\] table"):
        SweepConfig(out=str(tmp_path / "o"), targets=("host",), estimate_method="kernels").check()
    SweepConfig(out=str(tmp_path / "o"), targets=("host",)).check()  # the cost model needs none of it

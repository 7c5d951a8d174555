import json

import pytest
from click.testing import CliRunner

from mobiledeploy import targets as tg
from mobiledeploy.cli import cli
from mobiledeploy.errors import UsageError

REQUIRED = {"host", "pixel4-big", "pixel4", "sd888-x1", "a55-little", "rpi5"}


def test_shipped_profiles_load_with_sourced_figures():
    profiles = {t.name: t for t in tg.list_targets()}
    assert REQUIRED <= set(profiles)
    assert tg.load_target().name == "host" and tg.load_target().threads is None
    for name in REQUIRED - {"host"}:
        t = profiles[name]
        d = t.device
        for key in ("core", "cores", "clock_ghz", "fp32_flops_per_cycle", "int8_ops_per_cycle", "mem_bandwidth_gbs"):
            assert key in d, (name, key)
        # every numeric figure names a source (or says it is an assumption)
        for key in ("clock_ghz", "fp32_flops_per_cycle", "int8_ops_per_cycle", "mem_bandwidth_gbs"):
            assert d["sources"].get(key), (name, key)
        # memory bandwidth and cache sizes: a cited source, or an assumption that says so
        for key in ("mem_bandwidth_gbs", "l2_kb", "l3_kb"):
            if key not in d:
                continue
            cited = d["sources"].get(key, "")
            assumed = any(a.startswith(key) for a in d.get("assumptions", ()))
            assert (cited and "assumption" not in cited) or assumed, (name, key)
    assert "AnandTech 13786" in profiles["pixel4-big"].device["sources"]["mem_bandwidth_gbs"]
    assert profiles["pixel4-big"].device["l2_kb"] == 512 and profiles["pixel4"].device["l3_kb"] == 2048
    assert profiles["pixel4-big"].threads == 1 and profiles["pixel4-big"].device["clock_ghz"] == 2.84
    assert profiles["pixel4"].threads == 4
    assert profiles["rpi5"].threads == 4 and profiles["rpi5"].device["clock_ghz"] == 2.4
    assert profiles["a55-little"].device["clock_ghz"] == 1.8
    assert any(a.startswith("fp32_flops_per_cycle") for a in profiles["a55-little"].device["assumptions"])
    assert profiles["sd888-x1"].device["core"] == "Cortex-X1"


def test_unknown_target_and_bad_files(tmp_path):
    with pytest.raises(UsageError, match="unknown target 'nope'.*--target"):
        tg.load_target("nope")
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[runn]\nthreads = 1\n')
    with pytest.raises(UsageError, match="unknown key 'runn'"):
        tg.load_target(file=bad)
    bad.write_text('name = "x"\n[run]\nthreads = 0\n')
    with pytest.raises(UsageError, match="threads must be a positive integer"):
        tg.load_target(file=bad)
    bad.write_text('name = "x"\n[run]\nort_opt_level = "max"\n')
    with pytest.raises(UsageError, match="ort_opt_level 'max' unknown"):
        tg.load_target(file=bad)
    bad.write_text('name = "x"\n[run\n')
    with pytest.raises(UsageError, match="not valid TOML"):
        tg.load_target(file=bad)
    with pytest.raises(UsageError, match="either --target or --target-file"):
        tg.load_target("host", file=bad)


def test_user_profile_passes_cost_model_through(tmp_path):
    p = tmp_path / "mine.toml"
    p.write_text('name = "mine"\n[run]\nthreads = 2\naffinity = [0]\nxnnpack = false\n'
                 '[device]\ncore = "Cortex-A78"\nclock_ghz = 2.4\n[cost_model]\nalpha = 1.5\n[cost_model.ops]\nconv = 2\n')
    t = tg.load_target(file=p)
    assert (t.threads, t.affinity, t.xnnpack, t.ort_opt_level) == (2, (0,), False, "all")
    assert t.cost_model == {"alpha": 1.5, "ops": {"conv": 2}}
    assert t.label == "host latency, mine settings"


def test_placement_pins_what_exists():
    cores = tg.host_cores()
    p = tg.place(1, "first")
    assert p.threads == 1 and p.cores == (cores[0],) and not p.notes
    many = len(cores) + 2
    p = tg.place(many, "first", name="pixel4")
    assert p.threads == many and p.cores == tuple(cores)
    assert "pixel4 asks for" in p.notes[0]
    assert tg.place(None, "none") == tg.Placement(threads=len(cores), cores=None)
    with pytest.raises(UsageError, match="do not exist"):
        tg.place(1, (9999,))
    with pytest.raises(UsageError, match="core ids"):
        tg.parse_affinity("a,b")


def test_targets_command_lists_and_shows():
    r = CliRunner().invoke(cli, ["targets", "--json", "-"])
    assert r.exit_code == 0, r.output
    names = {t["name"] for t in json.loads(r.stdout)["targets"]}
    assert REQUIRED <= names
    r = CliRunner().invoke(cli, ["targets", "a55-little"])
    assert r.exit_code == 0 and "Cortex-A55" in r.stdout and "assumption" in r.stdout
    r = CliRunner().invoke(cli, ["targets", "nope"])
    assert r.exit_code == 2 and "unknown target 'nope'" in r.stderr

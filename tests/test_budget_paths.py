"""Budget files are untrusted input: every path one names stays inside the budget file's
directory or the working directory; anything else comes from the command line. And a
budget is refused or accepted at once, whatever its size or nesting."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import one_line_error
from mobiledeploy.cli import cli

ROOT = Path(__file__).resolve().parents[1]


def check(*args):
    return CliRunner().invoke(cli, ["check", "-q", *map(str, args)])


@pytest.fixture
def layout(tmp_path, monkeypatch):
    """``tmp/work/budgets`` (the budget's folder), ``tmp/work`` (the working directory),
    ``tmp/outside`` (neither), each with a real ONNX model ``real.onnx``."""
    from mobiledeploy.check.yardstick import conv_net_bytes

    model = conv_net_bytes(resolution=32)
    dirs = {k: tmp_path / p for k, p in (("budget", "work/budgets"), ("cwd", "work"), ("outside", "outside"))}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
        (d / "real.onnx").write_bytes(model)
    monkeypatch.chdir(dirs["cwd"])
    return dirs


def budget(d: Path, head: str, entry: str = 'path = "real.onnx"\nmax_size_kb = 1000\n') -> Path:
    p = d["budget"] / "budgets.toml"
    p.write_text(head + "\n[[artifact]]\n" + entry)
    return p


@pytest.mark.parametrize("artifacts", ["{outside}", "/etc", "../../outside", "link"])
def test_artifacts_outside_the_budget_and_working_directory_is_refused(layout, artifacts):
    os.symlink(layout["outside"], layout["budget"] / "link")
    value = artifacts.format(outside=layout["outside"])
    r = check("--budget", budget(layout, f'artifacts = "{value}"'))
    one_line_error(r, 2, "artifacts", "points outside", "--artifacts")


def test_the_same_directory_given_on_the_command_line_is_used(layout):
    p = budget(layout, f'artifacts = "{layout["outside"]}"')
    r = check("--budget", p, "--artifacts", layout["outside"], "--json", "-")
    assert r.exit_code == 0, r.output + r.stderr
    (row,) = json.loads(r.stdout)["checks"]
    assert row["size_bytes"] == (layout["outside"] / "real.onnx").stat().st_size


@pytest.mark.parametrize("artifacts", ["", "sub", "..", "../sub", "{cwd}/sub"])
def test_artifacts_inside_the_budget_or_working_directory_are_read(layout, artifacts):
    """Like the shipped models/budgets.toml: ``../build/reference``, run from the checkout."""
    sub = layout["cwd"] / "sub"
    sub.mkdir()
    (sub / "real.onnx").write_bytes((layout["cwd"] / "real.onnx").read_bytes())
    head = f'artifacts = "{artifacts.format(cwd=layout["cwd"])}"' if artifacts else ""
    if artifacts == "sub":  # relative to the budget file's own directory
        (layout["budget"] / "sub").mkdir()
        (layout["budget"] / "sub" / "real.onnx").write_bytes(sub.joinpath("real.onnx").read_bytes())
    r = check("--budget", budget(layout, head))
    assert r.exit_code == 0, r.output + r.stderr


@pytest.mark.parametrize("key, value", [("path", "../../outside/real.onnx"), ("path", "{outside}/real.onnx"),
                                        ("float", "../../outside/real.onnx"), ("baseline", "{outside}/real.onnx")])
def test_entry_paths_stay_inside_the_artifacts_directory(layout, key, value):
    value = value.format(outside=layout["outside"])
    limit = {"path": "max_size_kb = 1000", "float": "max_int8_top1_drop = 0.1",
             "baseline": "max_latency_ratio = 2"}[key]
    entry = (f'{key} = "{value}"\n' if key == "path" else f'path = "real.onnx"\n{key} = "{value}"\n') + limit + "\n"
    r = check("--budget", budget(layout, 'artifacts = "."', entry))
    one_line_error(r, 2)
    assert "outside" in r.stderr or "absolute path" in r.stderr


def _nhwc_onnx(path: Path) -> Path:
    """A 3-class "classifier" on 1x32x32x3 images: the mean of each channel."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("ReduceMean", ["input"], ["scores"], axes=[1, 2], keepdims=0)], "m",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 32, 32, 3])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 3])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def _npz(path: Path, n: int = 6) -> Path:
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8), y=np.zeros(n, np.int64))
    return path


@pytest.mark.parametrize("source", ["{outside}/good.npz", "../../outside/good.npz", "../../outside"])
def test_data_source_outside_is_refused_before_it_is_read(layout, source):
    _npz(layout["outside"] / "good.npz")
    p = budget(layout, f'[data]\nsource = "{source.format(outside=layout["outside"])}"',
               'path = "real.onnx"\nmax_size_kb = 1000\n')
    one_line_error(check("--budget", p), 2, "[data] source", "points outside", "--data")


def test_data_source_resolves_against_the_budget_file_and_data_flag_overrides(layout, tmp_path):
    """A relative source is read from beside the budget (whatever the working directory);
    a source outside is read when typed with --data."""
    _npz(layout["budget"] / "mine.npz", n=6)
    _npz(layout["outside"] / "theirs.npz", n=4)
    _nhwc_onnx(layout["budget"] / "nhwc.onnx")
    p = budget(layout, '[data]\nsource = "mine.npz"', 'path = "nhwc.onnx"\nmin_top1 = 0.0\n')
    os.chdir(tmp_path)  # neither the budget's folder nor the data's
    r = check("--budget", p, "--json", "-")
    assert r.exit_code == 0, r.output + r.stderr
    assert json.loads(r.stdout)["checks"][0]["samples"] == 6
    r = check("--budget", p, "--data", layout["outside"] / "theirs.npz", "--json", "-")
    assert r.exit_code == 0, r.output + r.stderr
    assert json.loads(r.stdout)["checks"][0]["samples"] == 4


def test_the_shipped_budget_resolves_inside_the_checkout(monkeypatch, tmp_path):
    """models/budgets.toml says artifacts = "../build/reference": the checkout's build/, read from
    the checkout (make check); from anywhere else that path is refused and --artifacts is named."""
    from mobiledeploy.check.budgets import load_budgets
    from mobiledeploy.check.core import artifacts_root
    from mobiledeploy.errors import UsageError

    monkeypatch.chdir(ROOT)
    bf = load_budgets("models/budgets.toml")
    assert artifacts_root(bf) == (ROOT / "build" / "reference").resolve()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match=r"artifacts = '\.\./build/reference' points outside .*--artifacts"):
        artifacts_root(load_budgets(ROOT / "models" / "budgets.toml"))


@pytest.mark.parametrize("text", ["x = " + "[" * 100_000, "x = " + "{a = " * 5_000 + "1" + "}" * 5_000,
                                  "x = " + "[" * 20_000 + "]" * 20_000])
def test_deeply_nested_budget_is_one_clear_line(tmp_path, text):
    p = tmp_path / "deep.toml"
    p.write_text(text + "\n")
    one_line_error(check("--budget", p), 2, "nested too deeply")


def test_an_oversized_budget_file_is_refused_before_it_is_parsed(tmp_path):
    from mobiledeploy.check.budgets import MAX_BUDGET_BYTES

    entry = '[[artifact]]\npath = "real.onnx"\nmax_size_kb = 1000\n'
    p = tmp_path / "big.toml"
    p.write_text(entry * (MAX_BUDGET_BYTES // len(entry) + 1))
    assert MAX_BUDGET_BYTES <= 2**20 and p.stat().st_size > MAX_BUDGET_BYTES
    one_line_error(check("--budget", p), 2, "budget file", "is not supported")


@pytest.mark.parametrize("what, text, needle", [
    ("entries", "".join(f'[[artifact]]\nname = "a{i}"\npath = "m.onnx"\nmax_size_kb = 1\n' for i in range(1001)),
     "1,001 [[artifact]] entries; at most 1,000"),
    ("targets", "[yardstick]\nreference_ms = {" + ", ".join(f"t{i} = 1" for i in range(101)) + "}\n"
                '[[artifact]]\npath = "m.onnx"\nmax_size_kb = 1\n', "names 101 targets; at most 100"),
    ("name", f'[[artifact]]\nname = "{"n" * 201}"\npath = "m.onnx"\nmax_size_kb = 1\n', "longer than 200 characters"),
    ("value", f'[[artifact]]\npath = "m.onnx"\nmax_size_kb = "{"9" * 100_000}"\n', "expected a number"),
])
def test_too_many_entries_or_too_long_values_are_refused_in_one_short_line(tmp_path, what, text, needle):
    p = tmp_path / "b.toml"
    p.write_text(text)
    r = check("--budget", p)
    one_line_error(r, 2, needle)
    assert len(r.stderr.strip()) < 400  # the offending value is never echoed whole


# ---------------------------------------------------------------- artifacts hold the bytes their manifest recorded


@pytest.fixture
def onnx_export(tmp_path):
    """An export directory whose manifest records each file's size and sha256, as export writes it."""
    from mobiledeploy.check.yardstick import conv_net_bytes
    from mobiledeploy.io import sha256_file

    d = tmp_path / "export"
    d.mkdir()
    arts = []
    for prec, seed in (("fp32", 1), ("int8", 2)):
        f = d / f"m_{prec}.onnx"
        f.write_bytes(conv_net_bytes(resolution=32, seed=seed))
        arts.append({"file": f.name, "format": "onnx", "precision": prec, "size_bytes": f.stat().st_size,
                     "sha256": sha256_file(f)})
    (d / "manifest.json").write_text(json.dumps({"model": {"resolution": 32}, "artifacts": arts}))
    return d


def test_untouched_artifacts_are_hashed_once_and_described_by_the_manifest(onnx_export, monkeypatch):
    import mobiledeploy.io
    from mobiledeploy.models import artifacts

    hashed = []
    real = mobiledeploy.io.sha256_file
    monkeypatch.setattr(mobiledeploy.io, "sha256_file", lambda p: hashed.append(Path(p).name) or real(p))
    artifacts._sha256.cache_clear()
    for _ in range(3):
        refs = artifacts.resolve_models([onnx_export])
        assert [(Path(r.path).name, r.precision) for r in refs] == [("m_fp32.onnx", "fp32"), ("m_int8.onnx", "int8")]
    assert sorted(hashed) == ["m_fp32.onnx", "m_int8.onnx"]


@pytest.mark.parametrize("change", ["same size", "other size"])
def test_an_artifact_replaced_after_export_is_refused_naming_it(onnx_export, change):
    """fp32 bytes copied over the int8 file must not be benched, evaluated or checked as "int8"."""
    from mobiledeploy.check.yardstick import conv_net_bytes

    int8 = onnx_export / "m_int8.onnx"
    int8.write_bytes((onnx_export / "m_fp32.onnx").read_bytes() if change == "same size"
                     else conv_net_bytes(resolution=32, blocks=((8, 16, 1),)))
    assert (int8.stat().st_size == (onnx_export / "m_fp32.onnx").stat().st_size) == (change == "same size")
    needle = "sha256" if change == "same size" else "bytes where the export wrote"
    p = onnx_export.parent / "b.toml"
    p.write_text('artifacts = "export"\n[[artifact]]\nprecision = "fp32"\nmax_size_kb = 1000\n')
    one_line_error(check("--budget", p), 1, "m_int8.onnx", needle, "after export")
    for args in (["bench", str(onnx_export)], ["bench", str(int8)], ["eval", str(int8), "--data", "digits"]):
        one_line_error(CliRunner().invoke(cli, args), 1, "m_int8.onnx", needle)

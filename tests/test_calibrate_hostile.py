"""`target calibrate` on hostile inputs: thread counts out of range, a byte-order mark, many rows."""

from __future__ import annotations

import json
import shutil
import tomllib

import pytest
from click.testing import CliRunner

from conftest import one_line_error
from mobiledeploy.cli import cli
from mobiledeploy.cost import info, measurements, model
from mobiledeploy.cost.measurements import MAX_THREADS, read, read_measurements


def _calibrate(*specs, out):
    args = ["target", "calibrate", "--target", "pixel4", "--out", str(out)]
    for s in specs:
        args += ["--measurements", str(s)]
    return CliRunner().invoke(cli, args)


@pytest.fixture(scope="module")
def phone(tmp_path_factory, tiny_tflite, tiny_tflite_int8):
    d = tmp_path_factory.mktemp("phone")
    shutil.copy(tiny_tflite, d / "fp32.tflite")
    shutil.copy(tiny_tflite_int8, d / "int8.tflite")
    return d


def _log(threads: str) -> str:
    return (f"STARTING!\nNum threads: [{threads}]\nGraph: [/data/local/tmp/fp32.tflite]\n"
            "Inference timings in us: Init: 3204, First inference: 1021, Warmup (avg): 405.2, "
            "Inference (avg): 401.7\n")


@pytest.mark.parametrize("threads", ["0", str(MAX_THREADS + 1), "99999"])
def test_threads_out_of_range_refused_in_every_format(phone, tmp_path, threads):
    files = {"run.log": _log(threads),
             "rows.csv": f"model,threads,latency_ms\nfp32.tflite,{threads},0.4\n",
             "bench.json": json.dumps({"schema_version": 1, "results": [
                 {"model": "fp32.tflite", "status": "ok", "threads": int(threads), "precision": "fp32",
                  "latency_ms": {"p50": 0.4}}]})}
    for name, text in files.items():
        d = tmp_path / name.replace(".", "_")
        shutil.copytree(phone, d)
        (d / name).write_text(text)
        out = d / "x.toml"
        r = _calibrate(d / name, out=out)
        one_line_error(r, 2, name, "threads", str(int(threads)))
        assert not out.exists()


def test_threads_in_range_kept(phone):
    (phone / "t8.log").write_text(_log("8"))
    [m] = read(str(phone / "t8.log"))
    assert m.threads == 8
    (phone / "t1024.csv").write_text(f"model,threads,latency_ms\nfp32.tflite,{MAX_THREADS},0.4\n")
    assert [x.threads for x in read(str(phone / "t1024.csv"))] == [MAX_THREADS]


def test_csv_with_byte_order_mark_accepted(phone, tmp_path):
    csv = phone / "excel.csv"
    csv.write_bytes(b"\xef\xbb\xbfmodel,threads,latency_ms\r\nfp32.tflite,1,0.4\r\nint8.tflite,1,0.3\r\n")
    out = tmp_path / "phone.toml"
    r = _calibrate(csv, out=out)
    assert r.exit_code == 0, r.output + r.stderr
    cm = tomllib.loads(out.read_text())["cost_model"]
    assert sorted(x["model"] for x in cm["fitted_on"]) == ["fp32.tflite", "int8.tflite"]


@pytest.fixture(scope="module")
def many_csv(phone):
    """2,000 rows of two models at four thread counts (eight distinct configurations)."""
    csv = phone / "many.csv"
    csv.write_text("model,threads,latency_ms\n" + "".join(
        f"{'fp32' if i % 2 else 'int8'}.tflite,{1 + (i // 2) % 4},{0.3 + i * 1e-4:.4f}\n" for i in range(2000)))
    return csv


def test_many_rows_parse_each_model_once(many_csv, monkeypatch):
    calls = []
    real = info.model_stats

    def spy(path, **kw):
        calls.append(path)
        return real(path, **kw)

    monkeypatch.setattr(info, "model_stats", spy)
    monkeypatch.setattr(measurements, "_FILE_CACHE", {})
    rows = read_measurements(many_csv)
    assert len(rows) == 2000 and len(calls) == 2
    assert len({id(r.layers) for r in rows}) == 2  # rows of one model share its layers


def test_fit_cost_bounded_by_distinct_configs_and_folds(many_csv, monkeypatch):
    rows = read_measurements(many_csv)[:120]
    built, solves = [], []
    real_init, real_solve = model.LayerArrays.__init__, model.solve

    def init(self, *a, **kw):
        built.append(1)
        real_init(self, *a, **kw)

    def solve(*a, **kw):
        solves.append(1)
        return real_solve(*a, **kw)

    monkeypatch.setattr(model.LayerArrays, "__init__", init)
    monkeypatch.setattr(model, "solve", solve)
    from mobiledeploy.cost.estimate import cost_model_for
    from mobiledeploy.targets import load_target

    result = model.fit(cost_model_for(load_target("pixel4")), rows, params=("scale", "threads"), loo=True)
    distinct = len({(r.label, r.threads) for r in rows})  # 2 models x 4 thread counts
    assert distinct == 8
    assert len(solves) == 1 + model.LOO_MAX_FOLDS and result.loo_folds == model.LOO_MAX_FOLDS
    # one LayerArrays per distinct config and solve (fit, in-sample estimate, each fold and its held rows)
    assert len(built) <= distinct * (2 + 2 * model.LOO_MAX_FOLDS)
    assert len(result.loo_errors_pct) == len(rows)


def test_too_many_rows_refused(phone, tmp_path, monkeypatch):
    monkeypatch.setattr(measurements, "MAX_ROWS", 5)
    csv = phone / "six.csv"
    csv.write_text("model,latency_ms\n" + "fp32.tflite,0.4\n" * 6)
    out = tmp_path / "x.toml"
    one_line_error(_calibrate(csv, out=out), 2, "six.csv", "more than 5")
    three = phone / "three.csv"
    three.write_text("model,latency_ms\n" + "fp32.tflite,0.4\n" * 3)
    one_line_error(_calibrate(three, three, out=out), 2, "more than 5")
    assert not out.exists()

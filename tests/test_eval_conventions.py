"""eval for the models users have: NCHW ONNX, preprocessing presets and metadata, labels from
file names, class names in the JSON and the fp32 sibling as reference. Tiny ONNX models are
built here with onnx.helper; the digits data set is the input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from mobiledeploy.data.datasets import load_dataset
from mobiledeploy.models.preprocessing import get_preprocessing
from mobiledeploy.accuracy.evaluate import EvalConfig, run_eval
from mobiledeploy.cli import cli
from mobiledeploy.errors import UsageError

RES = 32


def tiny_onnx(path, *, nchw=True, meta=None, seed=0):
    """Conv 3x3 + ReLU + GlobalAveragePool + Flatten + Gemm + Softmax, 10 classes; NHWC adds a Transpose."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "b"),
             numpy_helper.from_array(rng.normal(0, 1.0, (8, 10)).astype(np.float32), "g"),
             numpy_helper.from_array(np.zeros(10, np.float32), "gb")]
    nodes, src = [], "x"
    if not nchw:
        nodes.append(helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 3, 1, 2]))
        src = "xt"
    nodes += [helper.make_node("Conv", [src, "w", "b"], ["c"], pads=[1, 1, 1, 1]),
              helper.make_node("Relu", ["c"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["p"]),
              helper.make_node("Flatten", ["p"], ["f"]), helper.make_node("Gemm", ["f", "g", "gb"], ["l"]),
              helper.make_node("Softmax", ["l"], ["y"], axis=1)]
    shape = [1, 3, RES, RES] if nchw else [1, RES, RES, 3]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    for k, v in (meta or {}).items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    return path


def ort_top1(path, x_nhwc, *, nchw=True):
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = x_nhwc.transpose(0, 3, 1, 2) if nchw else x_nhwc
    return np.concatenate([s.run(None, {"x": x[i:i + 1]})[0] for i in range(len(x))]).argmax(1)


def test_nchw_onnx_is_evaluated_like_its_nhwc_twin(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    nchw, nhwc = tiny_onnx(tmp_path / "a" / "m.onnx"), tiny_onnx(tmp_path / "b" / "m.onnx", nchw=False)
    rep = run_eval(EvalConfig(models=(str(nchw),), preprocessing="mobilenet", limit=60))
    twin = run_eval(EvalConfig(models=(str(nhwc),), preprocessing="mobilenet", limit=60))
    assert rep.data["layouts"] == ["nchw"] and twin.data["layouts"] == ["nhwc"]
    ds = load_dataset("digits", resolution=RES, preprocessing="mobilenet", limit=60)
    y_hat = ort_top1(nchw, ds.x)
    assert rep.results[0].top1 == pytest.approx(float(np.mean(y_hat == ds.y)))
    assert np.array_equal(rep.results[0].outputs.argmax(1), twin.results[0].outputs.argmax(1))
    # read as NHWC, its 1x3x32x32 input has 32 channels: one line naming the fix
    with pytest.raises(UsageError, match="--layout nchw"):
        run_eval(EvalConfig(models=(str(nchw),), preprocessing="mobilenet", limit=5, layout="nhwc"))


def test_preprocessing_from_onnx_metadata(tmp_path):
    m = tiny_onnx(tmp_path / "unit.onnx", meta={"preprocessing": "unit"})
    assert run_eval(EvalConfig(models=(str(m),), limit=10)).data["preprocessing"] == "unit"
    m2 = tiny_onnx(tmp_path / "t.onnx", meta={"mean": "0.485,0.456,0.406", "std": "0.229,0.224,0.225"})
    pre = run_eval(EvalConfig(models=(str(m2),), limit=10)).data["preprocessing"]
    assert pre.startswith("mean=0.485")
    x = np.random.default_rng(0).uniform(0, 255, (2, 4, 4, 3)).astype(np.float32)
    np.testing.assert_allclose(get_preprocessing(pre)(x), get_preprocessing("torch")(x), atol=1e-5)
    bare = tiny_onnx(tmp_path / "bare.onnx")
    with pytest.raises(UsageError, match="--mean/--std"):
        run_eval(EvalConfig(models=(str(bare),), limit=10))


def test_caffe_and_explicit_mean_std_presets():
    x = np.array([[[[10.0, 20.0, 30.0]]]], np.float32)
    np.testing.assert_allclose(get_preprocessing("caffe")(x)[0, 0, 0], [30 - 103.939, 20 - 116.779, 10 - 123.68],
                               rtol=1e-5)
    np.testing.assert_allclose(get_preprocessing("mean=127.5 std=127.5")(x), get_preprocessing("mobilenet")(x),
                               rtol=1e-6)
    with pytest.raises(UsageError, match="--std values must be > 0"):
        get_preprocessing("mean=1,2,3 std=0,1,1")


def test_labels_from_file_names_and_class_names_in_json(tmp_path):
    from PIL import Image

    from mobiledeploy.data.datasets import digits_pixels, digits_split_indices

    pixels, y = digits_pixels(RES)
    folder = tmp_path / "imgs"
    folder.mkdir()
    idx = digits_split_indices()["test"][:40]
    for i in idx:
        Image.fromarray(pixels[i]).save(folder / f"digit_{i:04d}_{y[i]}.png")
    labels = tmp_path / "names.txt"
    labels.write_text("\n".join(f"digit {k}" for k in range(10)) + "\n")
    m = tiny_onnx(tmp_path / "m.onnx")
    out = tmp_path / "r.json"
    r = CliRunner().invoke(cli, ["eval", str(m), "--data", str(folder), "--label-pattern", r"digit_\d+_(\d+)",
                                 "--labels", str(labels), "--mean", "127.5", "--std", "127.5", "--json", str(out)])
    assert r.exit_code == 0, r.stderr
    rep = json.loads(out.read_text())
    x = get_preprocessing("mobilenet")(pixels[np.sort(idx)])
    want = float(np.mean(ort_top1(m, x) == y[np.sort(idx)]))
    res = rep["results"][0]
    assert res["top1"] == pytest.approx(want) and res["samples"] == 40
    assert rep["data"]["class_names"][3] == "digit 3"
    per = res["per_class"]
    assert set(per) <= {f"digit {k}" for k in range(10)} and sum(v["samples"] for v in per.values()) == 40
    assert sum(v["correct"] for v in per.values()) == round(want * 40)
    (folder / "stray.png").write_bytes((folder / next(iter(sorted(p.name for p in folder.iterdir())))).read_bytes())
    bad = CliRunner().invoke(cli, ["eval", str(m), "--data", str(folder), "--label-pattern", r"digit_\d+_(\d+)",
                                   "--preprocessing", "mobilenet"])
    assert bad.exit_code == 2 and "'stray.png' does not match --label-pattern" in bad.stderr.strip().splitlines()[-1]


def test_single_file_is_compared_with_its_fp32_sibling(tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = tiny_onnx(tmp_path / "tiny_fp32.onnx")
    tiny_onnx(tmp_path / "other_fp32.onnx", seed=1)  # a float model with a less similar name
    q = tmp_path / "tiny_dynamic.onnx"
    quantize_dynamic(str(fp32), str(q), weight_type=QuantType.QInt8)
    rep = run_eval(EvalConfig(models=(str(q),), preprocessing="mobilenet", limit=30))
    (res,) = [r for r in rep.results if r.model == str(q)]
    assert res.agreement is not None and res.agreement.reference == str(fp32)
    ref = next(r for r in rep.results if r.model == str(fp32))
    assert res.agreement.top1_agreement == pytest.approx(
        float(np.mean(ref.outputs.argmax(1) == res.outputs.argmax(1))))


def test_eval_warns_when_calibration_statistics_are_far_from_the_data():
    from mobiledeploy.export.augment import calibration_warnings
    from mobiledeploy.export.augment import channel_stats
    from mobiledeploy.models.artifacts import ModelRef

    ds = load_dataset("digits", resolution=8, preprocessing="mobilenet", limit=50)
    near = {"stats": {"calibration": channel_stats(ds.x)}}
    far = {"stats": {"calibration": channel_stats(np.random.default_rng(0).uniform(-1, 1, (20, 8, 8, 3)))}}
    refs = [ModelRef(path="a/m.tflite", format="tflite", precision="int8", manifest="a/manifest.json",
                     calibration=near),
            ModelRef(path="b/m.tflite", format="tflite", precision="int8", manifest="b/manifest.json",
                     calibration=far)]
    (w,) = calibration_warnings(refs, ds)
    assert w.startswith("b: calibration pixels differ from the evaluation data")

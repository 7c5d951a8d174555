"""The asset step's TF-slim -> Keras MobileNet conversion (scripts/slim_mobilenet.py, scripts/assets.py).

Fast: a tiny TF-slim-like frozen graph (same names and batch-norm arithmetic as Google's
MobileNet V1 graph, random weights, some near-zero variances) converts exactly.
Slow: the real converted weights from ``make assets`` score 17/20 on the labelled images.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _slim_graph(rng, *, alpha=0.25, res=32, classes=10, eps=1e-3, tiny_var=True):
    """A frozen TF-slim MobileNet V1 GraphDef (random weights) whose shapes fit Keras' MobileNet."""
    import keras
    import tensorflow as tf

    ref = keras.applications.MobileNet(input_shape=(res, res, 3), alpha=alpha, weights=None, classes=classes)
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [1, res, res, 3], name="input")

        def const(name, value):
            return tf.constant(value.astype(np.float32), name="MobilenetV1/" + name)

        def bn_relu(h, scope, c):
            var = rng.uniform(0.05, 4.0, c)
            if tiny_var:
                var[: max(1, c // 4)] = rng.uniform(0.0, 1e-6, max(1, c // 4))  # dead channels, as in real nets
            p = f"MobilenetV1/MobilenetV1/{scope}/BatchNorm/batchnorm/"
            rsqrt = tf.math.rsqrt(const(f"{scope}/BatchNorm/moving_variance", var)
                                  + tf.constant(np.float32(eps), name=p + "add/y"))
            mul = rsqrt * const(f"{scope}/BatchNorm/gamma", rng.uniform(0.2, 2.0, c))
            sub = const(f"{scope}/BatchNorm/beta", rng.normal(0, 0.5, c)) - const(
                f"{scope}/BatchNorm/moving_mean", rng.normal(0, 1.0, c)) * mul
            return tf.nn.relu6(h * mul + sub)

        h = x
        for layer in ref.layers:
            n = layer.name
            if n == "conv1":
                k = rng.normal(0, 0.3, layer.kernel.shape)
                h = bn_relu(tf.nn.conv2d(h, const("Conv2d_0/weights", k), 2, "SAME"), "Conv2d_0", k.shape[-1])
            elif isinstance(layer, keras.layers.DepthwiseConv2D):
                i, s = n.split("_")[-1], layer.strides[0]
                k = rng.normal(0, 0.3, layer.kernel.shape)
                h = tf.nn.depthwise_conv2d(h, const(f"Conv2d_{i}_depthwise/depthwise_weights", k),
                                           [1, s, s, 1], "SAME")
                h = bn_relu(h, f"Conv2d_{i}_depthwise", k.shape[2])
            elif n.startswith("conv_pw_") and isinstance(layer, keras.layers.Conv2D):
                i = n.split("_")[-1]
                k = rng.normal(0, 0.3 / np.sqrt(layer.kernel.shape[2]), layer.kernel.shape)
                h = bn_relu(tf.nn.conv2d(h, const(f"Conv2d_{i}_pointwise/weights", k), 1, "SAME"),
                            f"Conv2d_{i}_pointwise", k.shape[-1])
        h = tf.nn.avg_pool2d(h, h.shape[1:3], 1, "VALID")
        c = h.shape[-1]
        h = tf.nn.bias_add(tf.nn.conv2d(h, const("Logits/Conv2d_1c_1x1/weights", rng.normal(0, 1, (1, 1, c, classes + 1))),
                                        1, "SAME"), const("Logits/Conv2d_1c_1x1/biases", rng.normal(0, 1, classes + 1)))
        tf.reshape(tf.squeeze(h, [1, 2]), [-1, classes + 1], name="MobilenetV1/Predictions/Reshape")
    return g.as_graph_def()


@pytest.mark.parametrize("eps", [1e-3, 1e-2])  # Keras' own epsilon, and a larger one absorbed into the variance
def test_slim_graph_converts_exactly(eps):
    sm = _script("slim_mobilenet")
    rng = np.random.default_rng(0)
    gd = _slim_graph(rng, eps=eps)
    consts = sm.graph_constants(gd)
    assert sm.describe_slim(consts) == {"alpha": 0.25, "classes_with_background": 11}
    model = sm.build_keras(consts, resolution=32)
    x = rng.uniform(-1, 1, (6, 32, 32, 3)).astype(np.float32)
    ref = sm.frozen_logits(gd, x)
    got = sm.logits_model(model).predict(x, verbose=0)
    assert ref.shape == got.shape == (6, 10)
    cmp = sm.compare(ref, got)
    assert cmp["relative"] < 1e-5, cmp
    assert cmp["top1_agree"] == 1.0
    # a random (unconverted) model is far from the graph: the check can fail
    other = sm.logits_model(__import__("keras").applications.MobileNet(
        input_shape=(32, 32, 3), alpha=0.25, weights=None, classes=10)).predict(x, verbose=0)
    assert sm.compare(ref, other)["relative"] > 1e-2


def test_conversion_refuses_what_it_cannot_do_exactly(tmp_path):
    sm = _script("slim_mobilenet")
    rng = np.random.default_rng(1)
    consts = sm.graph_constants(_slim_graph(rng, eps=1e-5))  # smaller than Keras' 1e-3, tiny variances
    with pytest.raises(sm.ConversionMismatch, match="epsilon"):
        sm.build_keras(consts, resolution=32)
    consts.pop("MobilenetV1/Conv2d_5_pointwise/weights")
    with pytest.raises(sm.ConversionMismatch, match="Conv2d_5_pointwise/weights"):
        sm.keras_weights(consts, keras_eps=1e-5)


def test_legacy_h5_is_what_keras_applications_load(tmp_path):
    import keras

    sm = _script("slim_mobilenet")
    model = sm.build_keras(sm.graph_constants(_slim_graph(np.random.default_rng(2))), resolution=32)
    path = tmp_path / "mobilenet_0_25_32_tf.h5"
    sm.save_legacy_h5(model, path)
    loaded = keras.applications.MobileNet(input_shape=(32, 32, 3), alpha=0.25, classes=10, weights=str(path))
    x = np.random.default_rng(3).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def _asset_paths():
    cache = Path(os.environ.get("MOBILEDEPLOY_ASSETS") or "~/.cache/mobiledeploy/assets").expanduser()
    weights = Path(os.environ.get("KERAS_HOME") or "~/.keras").expanduser() / "models" / "mobilenet_1_0_224_tf.h5"
    return cache / "imagenet20_224.npz", weights


@pytest.mark.slow
def test_real_imagenet_weights_score_17_of_20():
    npz, weights = _asset_paths()
    if not (npz.is_file() and weights.is_file()):
        pytest.skip(f"real-model assets absent ({npz} / {weights}); run `make assets`")
    import keras

    with np.load(npz) as f:
        x, y, names = f["x"], f["y"], list(f["class_names"])
    model = keras.applications.MobileNet(alpha=1.0, input_shape=(224, 224, 3), weights=str(weights))
    probs = model.predict(x.astype(np.float32) / 127.5 - 1.0, verbose=0)
    assert len(names) == 1000 and len(y) == 20
    assert int((probs.argmax(1) == y).sum()) == 17


# --- a damaged asset cache heals by itself (offline: the registry is replaced by a fake `pip download`)

def _fake_foolbox(path: Path) -> Path:
    """A wheel-shaped zip with foolbox's 20 labelled ImageNet JPEGs (tiny random images)."""
    import io
    import zipfile

    from PIL import Image

    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as z:
        for i in range(20):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(buf, "JPEG")
            z.writestr(f"foolbox/data/imagenet_{i:02d}_{100 + i}.jpg", buf.getvalue())
    return path


def test_truncated_npz_in_the_cache_is_rebuilt(tmp_path, monkeypatch, capsys):
    assets = _script("assets")
    foolbox = _fake_foolbox(tmp_path / "foolbox.whl")
    monkeypatch.setattr(assets, "fetch", lambda name, downloads: foolbox)
    monkeypatch.setattr(assets, "PHOTOS", {})
    cache, names = tmp_path / "cache", [f"class {i}" for i in range(1000)]
    assets.layout(cache, cache / "downloads", names)
    npz = cache / "imagenet20_224.npz"
    good = npz.read_bytes()
    npz.write_bytes(good[: len(good) // 2])  # truncated
    capsys.readouterr()
    assert assets.layout(cache, cache / "downloads", names)["files_written"] == 1
    out = capsys.readouterr().out
    assert "cached imagenet20_224.npz is unreadable (BadZipFile" in out and "rebuilding it" in out
    assert npz.read_bytes() == good
    with np.load(npz) as f:
        assert f["x"].shape == (20, 224, 224, 3) and list(f["y"]) == list(range(100, 120))
    assert assets.layout(cache, cache / "downloads", names)["files_written"] == 0
    assert "unreadable" not in capsys.readouterr().out


@pytest.fixture
def fake_registry(tmp_path, monkeypatch):
    """assets.fetch against one fake package whose `pip download` writes ``served[0]``."""
    import hashlib
    import subprocess
    import types

    assets = _script("assets")
    good = b"PK fake wheel " * 100
    filename = "fake-1.0-py3-none-any.whl"
    monkeypatch.setattr(assets, "PACKAGES", {"fake": ("fake==1.0", (), filename, hashlib.sha256(good).hexdigest())})
    served, calls = [good], []

    def pip_download(cmd, **kw):
        calls.append(cmd)
        dest = Path(cmd[cmd.index("--dest") + 1])
        (dest / filename).write_bytes(served[0])
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(assets, "subprocess", types.SimpleNamespace(run=pip_download))
    assets.fetch.cache_clear()
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    flipped = bytearray(good)
    flipped[40] ^= 0x01
    (downloads / filename).write_bytes(bytes(flipped))
    return assets, downloads / filename, good, bytes(flipped), served, calls


def test_damaged_cached_archive_is_fetched_again(fake_registry, capsys):
    assets, cached, good, _, _, calls = fake_registry
    assert assets.fetch("fake", cached.parent) == cached
    assert cached.read_bytes() == good and len(calls) == 1
    out = capsys.readouterr().out
    assert f"cached {cached.name} is damaged" in out and "fetching it again" in out and "downloaded" in out


def test_damaged_archive_is_fetched_once_then_an_error(fake_registry):
    assets, cached, _, flipped, served, calls = fake_registry
    served[0] = flipped  # the registry serves the damaged bytes too: no loop, one clear error
    with pytest.raises(assets.AssetError, match="checksum mismatch for downloaded"):
        assets.fetch("fake", cached.parent)
    assert len(calls) == 1 and not cached.exists()


def test_unexpected_failure_is_one_line_not_a_traceback(tmp_path, monkeypatch, capsys):
    import zipfile

    assets = _script("assets")
    monkeypatch.setenv("MOBILEDEPLOY_ASSETS", str(tmp_path / "cache"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.delenv("MOBILEDEPLOY_DEBUG", raising=False)

    def broken(downloads):
        raise zipfile.BadZipFile("File is not a zip file")

    monkeypatch.setattr(assets, "frozen_graph", broken)
    assert assets.main() == 1
    err = capsys.readouterr().err
    assert err == ("assets: error: internal error: BadZipFile: File is not a zip file "
                   "(MOBILEDEPLOY_DEBUG=1 for the traceback)\n")

"""`mobiledeploy train`: a real (tiny) training run, determinism, augmentation, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from mobiledeploy.cli import cli
from mobiledeploy.accuracy.train import TrainConfig, shift_batch, train


def test_shift_batch_translates_within_bounds_and_is_seeded():
    x = np.zeros((64, 20, 20, 1), np.float32)
    x[:, 8:12, 8:12] = 1.0  # a bright square in the middle
    a = shift_batch(x, 0.1, np.random.default_rng(0))
    b = shift_batch(x, 0.1, np.random.default_rng(0))
    np.testing.assert_array_equal(a, b)
    assert a.shape == x.shape and np.all(a.sum(axis=(1, 2, 3)) == 16)  # content moved, not lost
    centres = [np.argwhere(img[..., 0] > 0).mean(axis=0) for img in a]
    offsets = np.array(centres) - 9.5
    assert np.abs(offsets).max() <= 2.0 and np.abs(offsets).max() > 0  # up to 10% of 20 px
    np.testing.assert_array_equal(shift_batch(x, 0.0, np.random.default_rng(1)), x)
    asym = np.zeros((200, 4, 4, 1), np.float32)
    asym[:, :, 0] = 1.0
    flipped = shift_batch(asym, 0.0, np.random.default_rng(0), flip=True)
    n_flipped = int((flipped[:, 0, 3, 0] == 1.0).sum())
    assert 60 < n_flipped < 140  # about half are mirrored


def test_train_cli_saves_a_safe_loadable_model_and_reports_test_accuracy(tmp_path):
    out, js = tmp_path / "m.keras", tmp_path / "t.json"
    r = CliRunner().invoke(cli, ["train", "--data", "digits", "--limit", "64", "--epochs", "1", "--res", "32",
                                 "--out", str(out), "--json", str(js)])
    assert r.exit_code == 0, r.output + r.stderr
    doc = json.loads(js.read_text())
    assert doc["train_samples"] == 64 and doc["test_samples"] == 360 and doc["classes"] == 10
    assert 0.0 <= doc["test_top1"] <= doc["test_top5"] <= 1.0 and len(doc["loss_history"]) == 1
    assert "test top-1" in r.output and "epoch 1/1" in r.stderr
    from mobiledeploy.models.archs import load_model
    from mobiledeploy.data.datasets import load_dataset
    from mobiledeploy.metrics import topk_accuracy

    model = load_model(out)  # safe_mode=True
    import io
    import zipfile

    import h5py

    with zipfile.ZipFile(out) as z, h5py.File(io.BytesIO(z.read("model.weights.h5")), "r") as h5:
        assert "optimizer" not in h5 and "layers" in h5  # saved without optimizer state
    ds = load_dataset("digits", resolution=32, split="test")
    assert topk_accuracy(model.predict(ds.x, verbose=0), ds.y, 1) == pytest.approx(doc["test_top1"])
    assert not list(tmp_path.glob(".*"))  # no temporary left behind


@pytest.mark.slow
def test_same_seed_same_model(tmp_path):
    def weights(name):
        cfg = TrainConfig(out=str(tmp_path / name), limit=32, epochs=1, seed=3)
        train(cfg)
        from mobiledeploy.models.archs import load_model

        return load_model(tmp_path / name).get_weights()

    for a, b in zip(weights("a.keras"), weights("b.keras")):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_train_on_npz_holds_out_a_test_set(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(20, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(20) % 2)
    res = train(TrainConfig(out=str(tmp_path / "n.keras"), data=str(tmp_path / "d.npz"), epochs=1,
                            val_fraction=0.25))
    assert (res.train_samples, res.test_samples, res.classes) == (15, 5, 2)
    assert res.test_top5 is None  # fewer than 5 classes


@pytest.mark.parametrize("args, needle", [
    (["--data", "random", "--out", "x.keras"], "no labels"),
    (["--out", "model.h5"], "--out must be a .keras file"),
    (["--epochs", "0", "--out", "x.keras"], "--epochs"),
    (["--limit", "5000", "--out", "x.keras"], "--limit 5000 is larger"),
])
def test_train_usage_errors(args, needle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(cli, ["train", *args])
    assert r.exit_code == 2, (r.output, r.stderr)
    assert r.stderr.count("\n") == 1 and needle in r.stderr and "Traceback" not in r.stderr
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.slow
def test_fine_tune_the_reference_model_keeps_it_accurate(tmp_path):
    res = train(TrainConfig(out=str(tmp_path / "ft.keras"), init="models/mobilenet_v1_0.25_32_digits.keras",
                            limit=128, epochs=1, learning_rate=1e-4))
    assert res.test_top1 > 0.95 and res.train_samples == 128


def test_fine_tune_with_mismatched_model_is_usage_error(tmp_path):
    r = CliRunner().invoke(cli, ["train", "--init", "models/mobilenet_v1_0.25_32_digits.keras", "--res", "48",
                                 "--epochs", "1", "--limit", "8", "--out", str(tmp_path / "x.keras")])
    assert r.exit_code == 2, (r.output, r.stderr)
    assert "--init model takes (32, 32, 3)" in r.stderr and r.stderr.count("\n") == 1

"""Data sources and preprocessing: real files on disk, real digits, every error path."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mobiledeploy.data.datasets import Dataset, load_dataset, subset
from mobiledeploy.models.preprocessing import PREPROCESSING
from mobiledeploy.errors import DataError, UsageError


def test_preprocessing_registry_maps_pixel_extremes():
    px = np.array([0.0, 127.5, 255.0], np.float32)
    np.testing.assert_allclose(PREPROCESSING["mobilenet"](px), [-1.0, 0.0, 1.0])
    np.testing.assert_allclose(PREPROCESSING["unit"](px), [0.0, 0.5, 1.0])
    np.testing.assert_allclose(PREPROCESSING["raw"](px), px)
    assert PREPROCESSING["mobilenet"](px).dtype == np.float32


def test_digits_split_is_fixed_stratified_and_disjoint():
    test = load_dataset("digits", resolution=32, split="test")
    train = load_dataset("digits", resolution=32, split="train")
    assert (len(test), len(train)) == (360, 1437)
    assert test.x.shape == (360, 32, 32, 3) and test.x.dtype == np.float32
    assert test.x.min() >= -1.0 and test.x.max() <= 1.0 and test.x.max() > 0.9
    # grey replicated to 3 channels
    np.testing.assert_array_equal(test.x[..., 0], test.x[..., 2])
    # stratified: every class has 36 test samples
    assert np.abs(np.bincount(test.y, minlength=10) - 36).max() <= 1
    # disjoint: no test image equals a train image at the same pixels
    tr = {t.tobytes() for t in train.x[:, ::4, ::4, 0]}
    same = sum(t.tobytes() in tr for t in test.x[:, ::4, ::4, 0])
    assert same < 5  # a handful of identical low-res digits may exist, not the split itself
    again = load_dataset("digits", resolution=32, split="test")
    np.testing.assert_array_equal(again.y, test.y)
    assert test.to_json()["samples"] == 360 and test.to_json()["classes"] == 10


def test_digits_resolution_and_preprocessing_are_applied():
    raw = load_dataset("digits", resolution=48, preprocessing="raw", split="all")
    assert raw.x.shape == (1797, 48, 48, 3) and raw.x.max() == 255.0 and raw.x.min() == 0.0
    mob = load_dataset("digits", resolution=48, preprocessing="mobilenet", split="all")
    np.testing.assert_allclose(mob.x, raw.x / 127.5 - 1.0, atol=1e-6)


def test_limit_takes_seeded_subset_and_refuses_more_than_available():
    a = load_dataset("digits", resolution=32, split="test", limit=50, seed=1)
    b = load_dataset("digits", resolution=32, split="test", limit=50, seed=1)
    assert len(a) == 50 and len(set(a.y.tolist())) >= 8
    np.testing.assert_array_equal(a.x, b.x)
    with pytest.raises(UsageError, match=r"--limit 500 is larger than the data set \(360 samples"):
        load_dataset("digits", resolution=32, split="test", limit=500)
    with pytest.raises(UsageError, match="--limit"):
        load_dataset("digits", resolution=32, limit=0)


def test_random_source_spans_the_preprocessed_range():
    ds = load_dataset("random", resolution=16, preprocessing="unit", limit=8, seed=3)
    assert ds.x.shape == (8, 16, 16, 3) and not ds.labelled
    assert ds.x.min() >= 0.0 and ds.x.max() <= 1.0
    with pytest.raises(UsageError, match="no labels"):
        load_dataset("random", resolution=16, labelled=True)


def _png(path, color, size=(20, 12)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def test_image_folder_with_classes_skips_and_counts_corrupt_files(tmp_path):
    _png(tmp_path / "cat" / "a.png", (255, 0, 0))
    _png(tmp_path / "cat" / "b.png", (255, 255, 255))
    _png(tmp_path / "ant" / "c.png", (0, 0, 0))
    Image.new("L", (8, 8), 128).save(tmp_path / "ant" / "grey.jpg")  # greyscale -> RGB
    (tmp_path / "ant" / "broken.jpg").write_bytes(b"not a jpeg at all")
    (tmp_path / "ant" / "notes.txt").write_text("ignored: not an image suffix")
    ds = load_dataset(tmp_path, resolution=8, preprocessing="unit", labelled=True)
    assert ds.class_names == ("ant", "cat")  # sorted names -> ids
    assert ds.y.tolist() == [0, 0, 1, 1]
    assert ds.skipped == 1 and ds.to_json()["skipped"] == 1
    assert ds.x.shape == (4, 8, 8, 3)
    np.testing.assert_allclose(ds.x[0], 0.0)  # black
    np.testing.assert_allclose(ds.x[1], 128 / 255, atol=1e-6)  # grey replicated
    np.testing.assert_allclose(ds.x[2, 0, 0], [1.0, 0.0, 0.0])  # red


def test_labels_file_names_and_orders_folder_classes(tmp_path):
    _png(tmp_path / "imgs" / "cat" / "a.png", (255, 0, 0))
    _png(tmp_path / "imgs" / "ant" / "b.png", (0, 0, 0))
    (tmp_path / "labels.txt").write_text("cat\nant\nbee\n")
    ds = load_dataset(tmp_path / "imgs", resolution=4, labels_file=tmp_path / "labels.txt")
    assert ds.class_names == ("cat", "ant", "bee")
    assert ds.y.tolist() == [1, 0]  # ant is class 1 in the labels file
    (tmp_path / "bad.txt").write_text("ant\n")
    with pytest.raises(UsageError, match="'cat' is not in the labels file"):
        load_dataset(tmp_path / "imgs", resolution=4, labels_file=tmp_path / "bad.txt")


def test_flat_folder_is_unlabelled_and_empty_folder_is_an_error(tmp_path):
    _png(tmp_path / "flat" / "x.png", (10, 20, 30))
    ds = load_dataset(tmp_path / "flat", resolution=4)
    assert not ds.labelled and len(ds) == 1
    with pytest.raises(UsageError, match="has no labels"):
        load_dataset(tmp_path / "flat", resolution=4, labelled=True)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "bad.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match=r"is empty \(1 unreadable files skipped\)"):
        load_dataset(tmp_path / "empty", resolution=4)


def test_npz_uint8_is_preprocessed_and_float_is_taken_as_is(tmp_path):
    px = np.zeros((3, 8, 8), np.uint8)
    px[1] = 255
    np.savez(tmp_path / "u8.npz", x=px, y=np.array([2, 0, 1]))
    ds = load_dataset(tmp_path / "u8.npz", resolution=16, labelled=True)
    assert ds.x.shape == (3, 16, 16, 3) and ds.preprocessing == "mobilenet"
    np.testing.assert_allclose(ds.x[0], -1.0)
    np.testing.assert_allclose(ds.x[1], 1.0)
    assert ds.y.tolist() == [2, 0, 1] and ds.num_classes == 3

    xf = np.full((2, 16, 16, 3), 0.25, np.float32)
    np.savez(tmp_path / "f.npz", x=xf)
    ds = load_dataset(tmp_path / "f.npz", resolution=16)
    assert ds.preprocessing == "as-is" and not ds.labelled
    np.testing.assert_array_equal(ds.x, xf)
    with pytest.raises(DataError, match="already preprocessed"):
        load_dataset(tmp_path / "f.npz", resolution=32)


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "nox.npz", images=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(DataError, match="no array 'x'"):
        load_dataset(tmp_path / "nox.npz", resolution=4)
    np.savez(tmp_path / "bady.npz", x=np.zeros((2, 4, 4), np.uint8), y=np.array([0]))
    with pytest.raises(DataError, match="'y'"):
        load_dataset(tmp_path / "bady.npz", resolution=4)
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(DataError, match="cannot read"):
        load_dataset(tmp_path / "junk.npz", resolution=4)


def test_bad_sources_and_names_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match=r"data source not found: .*\(--calib\)"):
        load_dataset(tmp_path / "nope", resolution=8, flag="--calib")
    (tmp_path / "a.csv").write_text("1,2")
    with pytest.raises(UsageError, match="unsupported data source"):
        load_dataset(tmp_path / "a.csv", resolution=8)
    with pytest.raises(UsageError, match="unknown preprocessing 'yolo'"):
        load_dataset("digits", resolution=8, preprocessing="yolo")
    with pytest.raises(UsageError, match="unknown split"):
        load_dataset("digits", resolution=8, split="val")
    with pytest.raises(UsageError, match="resolution"):
        load_dataset("digits", resolution=0)


def test_subset_keeps_order_and_labels():
    ds = Dataset(x=np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1), y=np.arange(10),
                 class_names=None, source="t", preprocessing="raw")
    s = subset(ds, 4, seed=0)
    assert len(s) == 4 and np.all(np.diff(s.y) > 0)
    np.testing.assert_array_equal(s.x[:, 0, 0, 0], s.y)

"""Calibration from real photos: disjoint split, seeded augmentation, warnings, bad folders."""

from __future__ import annotations

import numpy as np
import pytest

from mobiledeploy.errors import DataError, UsageError
from mobiledeploy.export.calibration import choose_source, load_calibration


def _photos(folder, n, seed=0, size=(40, 30)):
    from PIL import Image

    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        base = rng.integers(0, 255, 3)
        img = np.clip(base + rng.normal(0, 30, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"p{i}.png")
    return folder


def test_few_photos_are_augmented_disjoint_and_warned(tmp_path):
    folder = _photos(tmp_path / "photos", 6)
    cal = load_calibration(str(folder), resolution=24, preprocessing="mobilenet", samples=40, validate=8, seed=3)
    assert cal.calib.shape == (40, 24, 24, 3) and cal.validation.shape == (8, 24, 24, 3)
    assert cal.distinct_images == 5 and cal.disjoint and cal.augmentation and "crops" in cal.augmentation
    assert "disjoint from the 5 calibration images" in cal.validation_inputs
    assert any("only 5 distinct calibration images" in w for w in cal.warnings)
    # the held-out image (whole, first validation sample) is none of the calibration images
    assert not any(np.array_equal(cal.validation[0], c) for c in cal.calib[:5])
    # crops differ from the whole images, and the whole thing is seeded
    assert not any(np.array_equal(cal.calib[5], c) for c in cal.calib[:5])
    again = load_calibration(str(folder), resolution=24, preprocessing="mobilenet", samples=40, validate=8, seed=3)
    assert np.array_equal(again.calib, cal.calib) and np.array_equal(again.validation, cal.validation)
    j = cal.to_json()
    assert j["disjoint_from_validation"] is True and j["distinct_images"] == 5
    assert len(j["stats"]["calibration"]["mean"]) == 3


def test_one_image_and_unreadable_images(tmp_path):
    one = _photos(tmp_path / "one", 1)
    with pytest.raises(UsageError, match="has 1 readable image"):
        load_calibration(str(one), resolution=24, preprocessing="mobilenet", samples=10, validate=2)
    (one / "bad.jpg").write_bytes(b"nope")
    _photos(one, 3, seed=1)  # p0..p2 overwritten: 3 readable + 1 bad
    cal = load_calibration(str(one), resolution=24, preprocessing="mobilenet", samples=4, validate=2)
    assert any("skipped 1 unreadable file(s): bad.jpg" in w for w in cal.warnings)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"x")
    with pytest.raises(DataError, match="empty.*a.png"):
        load_calibration(str(bad), resolution=24, preprocessing="mobilenet", samples=4, validate=2)


def test_far_statistics_are_warned(tmp_path):
    from mobiledeploy.export.augment import channel_stats, stats_warning

    rng = np.random.default_rng(0)
    dark = rng.uniform(-1, -0.6, (10, 8, 8, 3))
    varied = rng.uniform(-1, 1, (10, 8, 8, 3))
    assert stats_warning(channel_stats(dark), channel_stats(varied), "x") is not None
    assert stats_warning(channel_stats(varied[:5]), channel_stats(varied[5:]), "x") is None


def test_default_source(tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILEDEPLOY_ASSETS", str(tmp_path))
    assert choose_source(None, trained=False, classes=1000)[0] == "digits"
    assert choose_source(None, trained=True, classes=10)[0] == "digits"  # the digits toy
    with pytest.raises(UsageError, match="needs real calibration images"):
        choose_source(None, trained=True, classes=1000)
    (tmp_path / "photos").mkdir()
    src, why, _ = choose_source(None, trained=True, classes=1000)
    assert src == str(tmp_path / "photos") and "no --calib" in why
    assert "digits" in choose_source("digits", trained=True, classes=1000)[2][0]

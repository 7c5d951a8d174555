"""data.datasets.image_files: the one image lister (--data folders, --calib, --label-pattern)."""

from __future__ import annotations

from mobiledeploy.data.datasets import image_files


def test_image_files_by_suffix_sorted_hidden_skipped_one_level_or_all(tmp_path):
    for rel in ("b.JPG", "a.png", ".hidden.png", "notes.txt", "sub/c.jpeg", "sub/deeper/d.bmp"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    assert [p.name for p in image_files(tmp_path)] == ["a.png", "b.JPG"]
    assert [p.relative_to(tmp_path).as_posix() for p in image_files(tmp_path, recursive=True)] == [
        "a.png", "b.JPG", "sub/c.jpeg", "sub/deeper/d.bmp"]

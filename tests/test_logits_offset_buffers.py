"""Logits of a TFLite file whose weights sit after the flatbuffer (buffer offset/size, the layout
ai-edge-quantizer writes and files over 2 GB need): the tapped copy keeps them."""

from __future__ import annotations

import numpy as np
import pytest

from mobiledeploy import runtimes
from mobiledeploy.export.logits import artifact_logits, tap_tflite


def _with_offset_buffers(data: bytes) -> bytes:
    """``data`` with every non-empty buffer moved after the flatbuffer (16-byte aligned)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    moved = [(b, bytes(np.asarray(b.data, np.uint8))) for b in model.buffers if b.data is not None and len(b.data)]
    assert moved

    def pack(start: int) -> bytes:
        at = start
        for b, blob in moved:
            b.data, b.offset, b.size = None, at, len(blob)
            at = (at + len(blob) + 15) & ~15
        builder = flatbuffers.Builder(len(data))
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())

    head = pack(1 << 40)  # placeholder offsets: the same field sizes as the real ones
    start = (len(head) + 15) & ~15
    head = pack(start)
    assert (len(head) + 15) & ~15 == start
    out = bytearray(head.ljust(start, b"\0"))
    for b, blob in moved:
        out[b.offset:b.offset + len(blob)] = blob
        out.extend(b"\0" * (((len(out) + 15) & ~15) - len(out)))
    return bytes(out)


@pytest.fixture(scope="module")
def plain_tflite(tmp_path_factory):
    from mobiledeploy.export.pipeline import ExportConfig, export_model

    out = tmp_path_factory.mktemp("export")
    res = export_model(ExportConfig(alpha=0.25, resolution=32, classes=10, formats=("tflite",), precisions=("fp32",),
                                    calib="random", calib_samples=2, validate_samples=4, out=str(out)))
    (a,) = res.artifacts
    return out / a.file


def test_tapped_logits_of_a_file_with_offset_buffers(plain_tflite, tmp_path):
    x = np.random.default_rng(0).uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
    moved = tmp_path / "offset.tflite"
    moved.write_bytes(_with_offset_buffers(plain_tflite.read_bytes()))
    # the rewritten file is the same model to LiteRT
    same = [runtimes.predict(runtimes.open_session(p), x) for p in (plain_tflite, moved)]
    np.testing.assert_array_equal(same[0], same[1])
    tapped = tap_tflite(moved.read_bytes())
    assert tapped is not None
    want = artifact_logits(plain_tflite, "tflite", x)
    np.testing.assert_array_equal(artifact_logits(moved, "tflite", x), want)
    assert float(np.ptp(want)) > 0

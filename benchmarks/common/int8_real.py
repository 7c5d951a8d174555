"""Shared set-up of the real-model int8 studies (int8_real*, imagenet_*).

Assets come from ``make assets``. The photos are split once into a calibration group and
an evaluation group (no photo in both; motorcycle_left/right, one stereo pair, stay
together). Evaluation set: the 20 labelled ImageNet images (224x224 resize) plus seeded
random crops/flips of the evaluation photos; calibration set: seeded random crops/flips
of the calibration photos. Models are compared on logits (softmax removed).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

ASSETS = Path(os.environ.get("MOBILEDEPLOY_ASSETS") or "~/.cache/mobiledeploy/assets").expanduser()
WEIGHTS = Path(os.environ.get("KERAS_HOME") or "~/.keras").expanduser() / "models" / "mobilenet_1_0_224_tf.h5"
CALIB_PHOTOS = ("skimage_astronaut.png", "skimage_coffee.png", "skimage_rocket.jpg", "skimage_motorcycle_left.png",
                "skimage_motorcycle_right.png", "skimage_hubble_deep_field.jpg", "sklearn_china.jpg")
EVAL_PHOTOS = ("skimage_chelsea.png", "matplotlib_grace_hopper.jpg", "sklearn_flower.jpg", "skimage_retina.jpg",
               "skimage_ihc.png")
RES = 224


def require_assets() -> None:
    if not (WEIGHTS.is_file() and (ASSETS / "photos").is_dir()):
        raise SystemExit(f"real-model assets absent ({WEIGHTS}, {ASSETS}); run `make assets` first")


def _open(path: Path):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def crops(img, n: int, rng: np.random.Generator, *, min_area: float = 0.25) -> np.ndarray:
    """n random crops (area fraction min_area..1, aspect 3/4..4/3), random horizontal flip, PIL bilinear."""
    from PIL import Image

    w, h = img.size
    out = np.empty((n, RES, RES, 3), np.uint8)
    for i in range(n):
        area = rng.uniform(min_area, 1.0) * w * h
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        cw, ch = min(w, int(round(np.sqrt(area * aspect)))), min(h, int(round(np.sqrt(area / aspect))))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        c = img.crop((x0, y0, x0 + cw, y0 + ch)).resize((RES, RES), Image.BILINEAR)
        if rng.random() < 0.5:
            c = c.transpose(Image.FLIP_LEFT_RIGHT)
        out[i] = np.asarray(c)
    return out


def preprocess(pixels: np.ndarray) -> np.ndarray:
    return pixels.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def labelled20() -> tuple[np.ndarray, np.ndarray]:
    with np.load(ASSETS / f"imagenet20_{RES}.npz") as f:
        return preprocess(f["x"]), f["y"].astype(np.int64)


def eval_set(crops_per_photo: int = 20, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(x, y): the 20 labelled images (y = ImageNet id) then crops of EVAL_PHOTOS (y = -1)."""
    x20, y20 = labelled20()
    rng = np.random.default_rng(seed)
    extra = np.concatenate([crops(_open(ASSETS / "photos" / p), crops_per_photo, rng) for p in EVAL_PHOTOS])
    return np.concatenate([x20, preprocess(extra)]), np.concatenate([y20, -np.ones(len(extra), np.int64)])


def calib_set(per_photo: int = 24, seed: int = 0, photos=CALIB_PHOTOS, min_area: float = 0.25) -> np.ndarray:
    """The full calibration photos (resized) plus per_photo - 1 random crops/flips of each."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    parts = []
    for p in photos:
        img = _open(ASSETS / "photos" / p)
        parts.append(np.asarray(img.resize((RES, RES), Image.BILINEAR))[None])
        parts.append(crops(img, per_photo - 1, rng, min_area=min_area))
    return preprocess(np.concatenate(parts))


def keras_logits_model():
    """Keras MobileNet V1 1.0/224 with the real ImageNet weights, logits output (no softmax)."""
    import keras

    m = keras.applications.MobileNet(alpha=1.0, input_shape=(RES, RES, 3), weights=str(WEIGHTS))
    return keras.Model(m.inputs, m.get_layer("reshape_2").output, name="mobilenet_1.00_224")


def reference():
    """(Keras logits model, eval inputs, eval labels, its fp32 logits on them): every study's reference."""
    model = keras_logits_model()
    x, y = eval_set()
    return model, x, y, model.predict(x, batch_size=16, verbose=0)


def scores(ref: np.ndarray, out: np.ndarray, y: np.ndarray) -> dict:
    """top-1 agreement with the reference, logit SQNR (dB), top-1 on the labelled samples.

    ``agree_or_tie``: also counts a sample whose reference top-1 class ties for the maximum
    of ``out`` (int8 logits sit on a grid, here about 0.13 apart, and argmax breaks ties by
    the lower class index)."""
    lab = y >= 0
    noise = np.sum((ref - out) ** 2)
    tie = out[np.arange(len(out)), ref.argmax(1)] == out.max(1)
    return {"agree": float(np.mean(ref.argmax(1) == out.argmax(1))),
            "agree_n": f"{int(np.sum(ref.argmax(1) == out.argmax(1)))}/{len(ref)}",
            "agree_or_tie": float(np.mean(tie)), "ties_on_top": int(np.sum(np.sort(out, 1)[:, -2] == out.max(1))),
            "sqnr_db": float(10 * np.log10(np.sum(ref ** 2) / noise)) if noise > 0 else float("inf"),
            "top1_labelled": int(np.sum(out[lab].argmax(1) == y[lab])), "labelled": int(lab.sum())}


def run_tflite(data: bytes, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=data, num_threads=2)
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    out = []
    for k in range(len(x)):
        xi = x[k:k + 1]
        if i["dtype"] != np.float32:
            s, z = i["quantization"]
            xi = np.clip(np.round(xi / s + z), -128, 127).astype(i["dtype"])
        it.set_tensor(i["index"], xi)
        it.invoke()
        y = it.get_tensor(o["index"]).astype(np.float32)
        if o["dtype"] != np.float32:
            s, z = o["quantization"]
            y = (y - z) * s
        out.append(y.reshape(1, -1))
    return np.concatenate(out)


def run_onnx(path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return np.concatenate([s.run(None, {name: x[k:k + 16]})[0] for k in range(0, len(x), 16)])


def weight_quantized(model, *, qmax: int, only: str | None = None):
    """``model`` with its conv weights fake-quantized the way TFLite / ONNX Runtime do (symmetric
    max-abs per output channel of the batch-norm-folded kernel, [-qmax, qmax]); ``only``: one layer."""
    from mobiledeploy.export import equalize as E

    q = E.clone(model)
    for layer, bn in E.conv_targets(q):
        if only is not None and layer.name != only:
            continue
        w = q.get_layer(layer.name).get_weights()
        w[0] = w[0] + E.kernel_delta(layer, bn, per_channel=True, qmax=qmax)
        layer.set_weights(w)
    return q

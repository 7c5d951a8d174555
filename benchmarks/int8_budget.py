"""The accuracy budget on the real MobileNet V1 1.0/224, run as the user runs it and measured independently.

Needs ``make assets``. Run: ``nice python -m benchmarks run int8_budget [--validate-samples 96]
[--calib study-photos] [--estimate-method kernels] [--emulate cortex-a76]`` (10-20 min each on a 2-vCPU VM: the budget search converts up to 12
candidates). Every run is one entry of ``runs`` in ``benchmarks/results/int8_budget.json`` (a run
with the same options replaces its entry).

1. ``mobiledeploy export --weights imagenet --alpha 1.0 --res 224 --quant int8 --min-agreement
   0.98 --target pixel4 --out DIR`` as a subprocess of the installed CLI (the user's path), plus
   ``--validate-samples N`` and ``--calib FOLDER`` when asked; and ``--quant fp32`` with the same
   model for the float reference. The manifest's ``quantization.budget_search`` is recorded as
   written: float layers chosen, every candidate, agreement on the budget's own measurement set,
   device estimate against full int8.
2. Each written int8 artifact (TFLite, ONNX) and its fp32 counterpart are run with plain runtime
   calls (``ai_edge_litert`` Interpreter, ``onnxruntime`` InferenceSession, default kernels) on a
   copy of the file with the softmax's input added as a second output (``export.logits.tap_*``:
   nothing else changes) on 120 real images that no part of the export saw, and compared on top-1 (logits;
   and the shipped softmax output, what an app reads). With ``--emulate CPU`` (an ARM phone's files:
   the exports get ``--onnx-quant-types s8s8 --emulate CPU``) the int8 files run instead on the
   aarch64 runtimes under qemu on that CPU model (the emulation worker), the fp32 reference on the host.

Which 120 images: the export's calibration folder is split image by image (calibration photos,
held-out photos the budget measures on). The study reproduces that split and checks it pixel for
pixel against ``export.augment.split_folder``, then takes:

- default calibration (``--calib default``: the ``make assets`` photos, all 12 used by the export):
  the 20 labelled ImageNet images (224x224) + 5 seeded crops of each of their 512-px originals
  (``imagenet20/``, not in the photos folder);
- ``--calib study-photos``: a folder of the 7 calibration photos of the int8_real studies, so the
  int8_real studies' 120 images (20 labelled + 100 crops of 5 other photos) are disjoint from it.

For comparison (unless ``--no-compare``), the same export without a budget, same data options:
``--float-layers none`` (full int8) and the default recipe, measured on the same 120 images.

Nothing is tuned on these images; the figures are recorded as measured.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import harness
from benchmarks.common import int8_real as C

KIND = "study"
COMMAND = ("export", "--weights", "imagenet", "--alpha", "1.0", "--res", "224", "--quant", "int8",
           "--min-agreement", "0.98", "--target", "pixel4")
CROPS_PER_LABELLED = 5
CROP_SEED = 1


def add_arguments(ap) -> None:
    ap.add_argument("--calib", choices=("default", "study-photos"), default="default",
                    help="default: the export's own default (no --calib); study-photos: --calib a folder of the 7 "
                         "int8_real calibration photos")
    ap.add_argument("--validate-samples", type=int, default=None,
                    help="the budget's measurement set size (--validate-samples; default: the export's, 32)")
    ap.add_argument("--estimate-method", choices=("cost", "kernels"), default="cost",
                    help="how the budget prices its candidates (export --estimate-method; kernels needs make arm-env)")
    ap.add_argument("--emulate", metavar="CPU", default=None,
                    help="for an ARM phone: export with --onnx-quant-types s8s8 --emulate CPU (the budget judged on "
                         "the aarch64 runtimes under qemu), and measure the int8 files the same way")
    ap.add_argument("--reuse-export", action="store_true",
                    help="measure the exports an earlier run of the same options wrote (recorded as reused)")
    ap.add_argument("--no-compare", action="store_true",
                    help="skip the comparison exports without a budget (full int8, default recipe)")


def _cli() -> str:
    exe = Path(sys.executable).with_name("mobiledeploy")
    return str(exe) if exe.exists() else "mobiledeploy"


def _export(argv: list[str], out: Path, *, reuse: bool = False) -> dict:
    """Run the CLI; (command, seconds, exit code, stderr tail), the manifest on success. ``reuse``: the
    record of an earlier run of the same command into ``out`` (after a failure in the measurement)."""
    out.mkdir(parents=True, exist_ok=True)
    saved = out.with_name(out.name + ".record.json")  # beside --out, not in it
    if reuse and saved.exists() and (rec := json.loads(saved.read_text()))["argv"] == argv and not rec["exit_code"]:
        return {**rec, "reused": True, "manifest": json.loads((out / "manifest.json").read_text())}
    t = time.time()
    p = subprocess.run([_cli(), *argv, "--out", str(out)], capture_output=True, text=True)
    out.with_name(out.name + ".log").write_text(p.stdout + p.stderr)
    rec = {"command": " ".join(["mobiledeploy", *argv, "--out", "DIR"]), "exit_code": p.returncode,
           "seconds": round(time.time() - t), "summary_line": next(
               (ln.strip() for ln in p.stdout.splitlines() if "accuracy budget:" in ln), None),
           "stderr_tail": p.stderr.strip().splitlines()[-5:], "argv": argv,
           "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    saved.write_text(json.dumps(rec))
    if p.returncode == 0:
        rec["manifest"] = json.loads((out / "manifest.json").read_text())
    return rec


def _study_photos(root: Path) -> Path:
    d = root / "study_calib_photos"
    d.mkdir(parents=True, exist_ok=True)
    for p in C.CALIB_PHOTOS:
        link = d / p
        if not link.exists():
            link.symlink_to(C.ASSETS / "photos" / p)
    return d


def _open(path: Path):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def _split_evidence(folder: Path, manifest: dict) -> dict:
    """Which photos the export calibrated and measured on: its split reproduced (same seed and rule as
    ``export.augment.split_folder``) and checked pixel for pixel: each side starts with its photos whole."""
    from PIL import Image

    from mobiledeploy.data.datasets import image_files
    from mobiledeploy.export.augment import split_folder

    cal = manifest["calibration"]
    files = list(image_files(folder, recursive=True))
    n, samples, validate = len(files), cal["samples"], cal["validation_samples"]
    order = np.random.default_rng(0).permutation(n)  # the export's --seed 0
    held = max(1, min(validate, max(n - samples, n // 5)))
    val_names = sorted(files[i].name for i in order[:held])
    cal_names = sorted(files[i].name for i in order[held:held + samples])
    sp = split_folder(folder, resolution=C.RES, samples=samples, validate=validate, seed=0)

    def whole(names):
        return np.stack([np.asarray(_open(folder / nm).resize((C.RES, C.RES), Image.BILINEAR)) for nm in names])

    checked = (sp.calib_images == len(cal_names) and sp.validation_images == len(val_names)
               and np.array_equal(sp.calib[:len(cal_names)], whole(cal_names))
               and np.array_equal(sp.validation[:len(val_names)], whole(val_names)))
    return {"folder": str(folder), "calibration_photos": cal_names, "measurement_photos": val_names,
            "calibration_samples": samples, "measurement_samples": validate, "split_seed": 0,
            "checked_against_split_folder": bool(checked),
            "manifest_validation_inputs": cal["validation_inputs"]}


def _independent_set(calib: str):
    """(x, y, description, source photos): 120 real images no part of the export saw."""
    if calib == "study-photos":
        x, y = C.eval_set()
        return x, y, ("the int8_real studies' 120 images: the 20 labelled ImageNet images + 20 crops (seed 1) of "
                      f"each of {', '.join(C.EVAL_PHOTOS)}"), ["imagenet20_224.npz", *C.EVAL_PHOTOS]
    x20, y20 = C.labelled20()
    rng = np.random.default_rng(CROP_SEED)
    originals = sorted((C.ASSETS / "imagenet20").glob("*/*.jpg"), key=lambda p: p.name)
    extra = np.concatenate([C.crops(_open(p), CROPS_PER_LABELLED, rng) for p in originals])
    return (np.concatenate([x20, C.preprocess(extra)]), np.concatenate([y20, -np.ones(len(extra), np.int64)]),
            f"the 20 labelled ImageNet images (224x224) + {CROPS_PER_LABELLED} crops (area 25-100 %, flips, seed "
            f"{CROP_SEED}) of each of their originals in imagenet20/",
            ["imagenet20_224.npz", *[f"imagenet20/{p.parent.name}/{p.name}" for p in originals]])


def _tflite(path: Path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(logits, shipped output) of a TFLite file, the softmax's input added as a second graph output."""
    from ai_edge_litert.interpreter import Interpreter

    from mobiledeploy.export.logits import tap_tflite

    it = Interpreter(model_content=tap_tflite(path.read_bytes()), num_threads=1)
    it.allocate_tensors()
    i = it.get_input_details()[0]
    assert i["dtype"] == np.float32, "the export's default: float input (no --int8-io)"
    outs = it.get_output_details()  # in graph order: the shipped output, then the tap

    def read(d):
        v = it.get_tensor(d["index"]).astype(np.float32).reshape(1, -1)
        s, z = d["quantization"]
        return (v - z) * s if d["dtype"] != np.float32 else v

    got = []
    for k in range(len(x)):
        it.set_tensor(i["index"], x[k:k + 1])
        it.invoke()
        got.append([read(d) for d in outs])
    return np.concatenate([g[1] for g in got]), np.concatenate([g[0] for g in got])


def _onnx(path: Path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(logits, shipped output) of an ONNX file, the softmax's input added as a second graph output."""
    import onnxruntime as ort

    from mobiledeploy.export.logits import tap_onnx

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(tap_onnx(path.read_bytes()), so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    parts = [s.run(None, {name: x[k:k + 8]}) for k in range(0, len(x), 8)]
    return (np.concatenate([p[1] for p in parts]).reshape(len(x), -1),
            np.concatenate([p[0] for p in parts]).reshape(len(x), -1))


RUN = {"tflite": _tflite, "onnx": _onnx}


def _emulated(path: Path, x: np.ndarray, cpu: str) -> tuple[np.ndarray, np.ndarray]:
    """(logits, shipped output) of a file run on the aarch64 runtime under qemu on ``cpu`` (the emulation
    worker, default kernels, 1 thread, on a copy with the softmax's input as a second graph output)."""
    from mobiledeploy.export.emulated import emulated_values

    out, logits, _ = emulated_values(path, x, cpu, logits=True, timeout_s=7200.0)
    return logits, out


def _measure(int8: dict, fp32: dict, x: np.ndarray, y: np.ndarray, emulate: str | None = None) -> dict:
    """Per format: the int8 artifact against the fp32 export (logits and shipped output), labelled top-1;
    ``emulate``: the int8 files run on that emulated ARM CPU (the fp32 reference on the host)."""
    out = {}
    lab = y >= 0
    for fmt, path in int8.items():
        ref_logits, ref_out = RUN[fmt](fp32[fmt], x)
        q_logits, q_out = _emulated(path, x, emulate) if emulate else RUN[fmt](path, x)
        s = C.scores(ref_logits, q_logits, y)
        out[fmt] = {"agreement": s["agree"], "agreement_n": s["agree_n"], "sqnr_db": round(s["sqnr_db"], 2),
                    "ties_on_top": s["ties_on_top"],
                    "shipped_output_agreement_n": f"{int(np.sum(ref_out.argmax(1) == q_out.argmax(1)))}/{len(x)}",
                    "top1_labelled_int8": f"{s['top1_labelled']}/{s['labelled']}",
                    "top1_labelled_fp32": f"{int(np.sum(ref_logits[lab].argmax(1) == y[lab]))}/{int(lab.sum())}"}
    return out


def run(args) -> dict:
    C.require_assets()
    from mobiledeploy.export.calibration import assets_photos

    root = harness.BUILD / "int8_budget"
    key = f"calib={args.calib},validate_samples={args.validate_samples or 'default'}"
    extra = ["--validate-samples", str(args.validate_samples)] if args.validate_samples else []
    if args.estimate_method != "cost":  # the default is not in the key: earlier entries stay theirs
        key += f",estimate_method={args.estimate_method}"
        extra += ["--estimate-method", args.estimate_method]
    if args.emulate:  # an ARM phone's files: S8S8 ONNX, judged and measured on the emulated CPU
        key += f",emulate={args.emulate}"
        extra += ["--onnx-quant-types", "s8s8", "--emulate", args.emulate]
    folder = assets_photos()
    if args.calib == "study-photos":
        folder = _study_photos(root)
        extra += ["--calib", str(folder)]
    name = key.replace("=", "-").replace(",", "_")
    fp32 = _export(["export", "--weights", "imagenet", "--alpha", "1.0", "--res", "224", "--quant", "fp32"],
                   root / "fp32", reuse=args.reuse_export)
    budget = _export([*COMMAND, *extra], root / name, reuse=args.reuse_export)
    entry = {"key": key, "run": harness.run_record("int8_budget", args.tag), "export": {
        k: v for k, v in budget.items() if k != "manifest"}, "fp32_export_seconds": fp32["seconds"]}
    if budget["exit_code"] or fp32["exit_code"]:
        entry["failed"] = {"budget": budget["stderr_tail"], "fp32": fp32["stderr_tail"]}
        return _save(entry)
    m = budget["manifest"]
    bs = m["quantization"]["budget_search"]
    chosen = bs["candidates"][bs["chosen"]]
    entry["budget_search"] = {
        "float_layers": chosen["float_layers"], "float_layer_count": len(chosen["float_layers"]),
        "weighted_layers": len(bs["sensitivity"]), "measured_on": bs["measured_on"],
        "agreement_on_measurement_set": chosen["top1_agreement"], "estimate": bs["estimate"],
        "estimate_ms": chosen["estimate_ms"], "full_int8_ms": bs["full_int8_ms"], "cost_ms": bs["cost_ms"],
        "summary": bs["summary"], "candidates": [
            {"float_layers": len(c["float_layers"]), "top1_agreement": c["top1_agreement"],
             "estimate_ms": c["estimate_ms"], "meets": c["meets"],
             **({"estimate_ms_by_format": c["estimate_ms_by_format"]} if "estimate_ms_by_format" in c else {})}
            for c in bs["candidates"]]}
    entry["calibration"] = {k: m["calibration"].get(k) for k in (
        "source", "samples", "validation_samples", "validation_inputs", "distinct_images", "disjoint_from_validation")}
    entry["split"] = _split_evidence(folder, m)
    x, y, what, sources = _independent_set(args.calib)
    used = set(entry["split"]["calibration_photos"]) | set(entry["split"]["measurement_photos"])
    entry["independent_set"] = {"images": len(x), "labelled": int((y >= 0).sum()), "what": what,
                                "source_files": sources, "photos_shared_with_export": sorted(used & set(sources))}
    arts = {a["format"]: a for a in m["artifacts"] if a["precision"] == "int8"}
    ref = {a["format"]: root / "fp32" / a["file"] for a in fp32["manifest"]["artifacts"]}
    entry["sizes_bytes"] = {f"{fmt}_int8": a["size_bytes"] for fmt, a in arts.items()} | {
        f"{a['format']}_fp32": a["size_bytes"] for a in fp32["manifest"]["artifacts"]}
    entry["independent"] = _measure({fmt: root / name / a["file"] for fmt, a in arts.items()}, ref, x, y,
                                    args.emulate)
    if args.emulate:
        entry["independent_runtime"] = f"int8 files on the aarch64 runtimes under qemu on {args.emulate}"
    entry["degraded"] = {fmt: a.get("degraded") for fmt, a in arts.items()}
    if not args.no_compare:
        entry["compare"] = _compare(root, name, extra, ref, x, y, reuse=args.reuse_export, emulate=args.emulate)
    for fmt, r in entry["independent"].items():
        print(f"{key} {fmt}: measurement set {chosen['top1_agreement'][fmt]:.3f} on {bs['measured_on']['samples']}; "
              f"independent {r['agreement_n']} ({100 * r['agreement']:.1f} %), labelled {r['top1_labelled_int8']} "
              f"(fp32 {r['top1_labelled_fp32']}); {bs['cost_ms']:+.2f} ms on pixel4 vs full int8", flush=True)
    return _save(entry)


COMPARE = {"full_int8": ("--float-layers", "none"), "default_recipe": ()}  # default: --float-layers auto


def _compare(root: Path, name: str, extra: list[str], ref: dict, x: np.ndarray, y: np.ndarray, *,
             reuse: bool, emulate: str | None = None) -> dict:
    """Without a budget, same data options: full int8 and the default recipe, measured on the same images."""
    out = {}
    for label, flags in COMPARE.items():
        rec = _export(["export", "--weights", "imagenet", "--alpha", "1.0", "--res", "224", "--quant", "int8", *flags,
                       *extra], root / f"{name}_{label}", reuse=reuse)
        if rec["exit_code"]:
            out[label] = {"command": rec["command"], "failed": rec["stderr_tail"]}
            continue
        m = rec["manifest"]
        arts = {a["format"]: a for a in m["artifacts"] if a["precision"] == "int8"}
        out[label] = {"command": rec["command"], "seconds": rec["seconds"],
                      "float_layers": (m["quantization"].get("float_layers") or {}).get("layers", []),
                      "agreement_on_measurement_set": {f: a["validation"]["top1_agreement"] for f, a in arts.items()},
                      "sizes_bytes": {f: a["size_bytes"] for f, a in arts.items()},
                      "independent": _measure({f: root / f"{name}_{label}" / a["file"] for f, a in arts.items()},
                                              ref, x, y, emulate)}
        for f, r in out[label]["independent"].items():
            print(f"{label} {f}: independent {r['agreement_n']}, labelled {r['top1_labelled_int8']}", flush=True)
    return out


def _save(entry: dict) -> dict:
    """Every run in one file: this run's entry replaces an earlier one with the same options."""
    path = harness.result_path("int8_budget")
    runs = json.loads(path.read_text()).get("runs", []) if path.exists() else []
    runs = [r for r in runs if r.get("key") != entry["key"]] + [entry]
    return {"runs": runs}

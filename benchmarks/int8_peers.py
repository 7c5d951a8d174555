"""int8 beside its peers: NNCF and ai-edge-quantizer on the same model, calibration and 120 real images as this project.

Needs ``make assets``. Run: ``nice python -m benchmarks run int8_peers`` (about 12 min on a
2-vCPU VM, plus the peers' installation the first time). Writes
``benchmarks/results/int8_peers.json`` and ``.md``.

One fp32 model, MobileNet V1 1.0/224 with Keras' ImageNet weights, exported once by this
project (``export_model``, ``--weights imagenet``, TFLite + ONNX). The same inputs for all:

- the fp32 files of that export: the ONNX from tf2onnx (opset 17) for NNCF, the TFLite
  (with its ``serving_default`` signature) for ai-edge-quantizer;
- the same calibration samples: the ones the export takes from ``--calib`` a folder of
  the 7 calibration photos of ``benchmarks/common/int8_real.py`` (its own split,
  augmentation and seed: 200 samples), saved to a ``.npy`` for the peers;
- the same 120 evaluation images, disjoint from calibration (the 20 labelled ImageNet
  images plus 100 crops/flips of 5 other photos), scored the same way for every file:
  its pre-softmax logits (``mobiledeploy.export.logits.artifact_logits``: a copy of the file
  with the softmax input as an output, run by LiteRT / ONNX Runtime) against the fp32 Keras
  model: top-1 agreement, logit SQNR, top-1 on the labelled 20; plus size and host latency
  (p50 of 50 runs, 1 thread; this machine, not a phone).

Peers (pinned in ``PEERS``, installed from the registry into their own virtual environments
under ``--venv``, never into the project's; each runs ``benchmarks/common/peer_quantize.py``
in a child process): NNCF ``nncf.quantize`` on the ONNX with its defaults (fast bias
correction), NNCF with ``preset=MIXED`` and full bias correction, ai-edge-quantizer's
``static_wi8_ai8`` recipe on the TFLite. A peer that cannot be installed is recorded with
pip's error line. This project: the default int8 recipe and ``--float-layers none``, plus
any ``--recipes NAME='export options'`` (e.g. full-int8 recipe options of ``mobiledeploy
export``), each exported as TFLite and ONNX.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import int8_real as C
from benchmarks.harness import BUILD, ROOT

KIND = "study"
OUT = BUILD / "int8_peers"
DRIVER = ROOT / "benchmarks" / "common" / "peer_quantize.py"
DEFAULT_VENV = Path(os.environ.get("MOBILEDEPLOY_PEERS_VENV") or "~/.cache/mobiledeploy/peers-venv").expanduser()
# peer -> the exact packages its environment gets (onnx/onnxruntime: the project's, which NNCF 3.4 supports)
PEERS = {"nncf": ("nncf==3.4.0", "onnx==1.23.2", "onnxruntime==1.32.0"),
         "ai-edge-quantizer": ("ai-edge-quantizer==0.10.0",)}
PEER_RECIPES = {  # recipe -> (peer, fp32 input format, what it is)
    "nncf_default": ("nncf", "onnx", "nncf.quantize on the ONNX, defaults (preset PERFORMANCE, fast bias correction)"),
    "nncf_mixed_full_bc": ("nncf", "onnx", "nncf.quantize on the ONNX, preset=MIXED, fast_bias_correction=False "
                                           "(full bias correction)"),
    "aeq_static_wi8_ai8": ("ai-edge-quantizer", "tflite", "static_wi8_ai8 recipe on the TFLite (serving_default "
                                                          "signature)"),
}
OWN_RECIPES = {"default": "", "full_int8": "--float-layers none"}  # name -> `mobiledeploy export` options
SHOWN = ("recipe", "format", "agree_n", "agree", "sqnr_db", "top1_labelled", "size_mb", "host_p50_ms_1thread")


def add_arguments(ap) -> None:
    ap.add_argument("--venv", type=Path, default=DEFAULT_VENV,
                    help="where the peers' virtual environments live (one folder per peer; created and "
                         "installed from the registry when missing; default: $MOBILEDEPLOY_PEERS_VENV or "
                         "~/.cache/mobiledeploy/peers-venv)")
    ap.add_argument("--recipes", nargs="*", default=[], metavar="NAME=OPTIONS",
                    help="more recipes of this project, each NAME='mobiledeploy export options', e.g. "
                         "cle='--float-layers none --equalize' (--quant/--formats/--weights/--calib/--out are "
                         "the study's)")
    ap.add_argument("--peers", default=",".join(PEER_RECIPES),
                    help=f"comma list of peer recipes to run (default: all: {', '.join(PEER_RECIPES)}; '' none)")
    ap.add_argument("--no-bench", action="store_true", help="skip the host latency (agreement and SQNR only)")


def _recipes(specs: list[str]) -> dict[str, str]:
    out = dict(OWN_RECIPES)
    for spec in specs:
        name, sep, opts = spec.partition("=")
        if not sep or not name.isidentifier():
            raise SystemExit(f"error: --recipes {spec!r}: expected NAME='export options'")
        out[name] = opts
    return out


def _export_config(name: str, options: str, calib_dir: Path, precisions: tuple[str, ...]):
    """``mobiledeploy export`` options -> ExportConfig (parsed by the command itself), the study's fields set."""
    from mobiledeploy.cli.export import export as command
    from mobiledeploy.export.pipeline import ExportConfig

    ctx = command.make_context("export", shlex.split(options))
    fields = {k: v for k, v in ctx.params.items() if k not in ("json_path", "wide")}
    fields.update(weights="imagenet", alpha=1.0, resolution=224, formats=("tflite", "onnx"), precisions=precisions,
                  calib=str(calib_dir), out=str(OUT / name))
    return ExportConfig(**fields)


# ------------------------------------------------------------------ the peers' environments


def peer_python(venv: Path, peer: str) -> tuple[Path | None, dict]:
    """The Python of ``peer``'s environment (created and installed with its pins when missing)."""
    env, pins = venv / peer, PEERS[peer]
    py, stamp = env / "bin" / "python", env / "installed.json"
    info = {"pins": list(pins), "venv": str(env)}
    if stamp.is_file() and json.loads(stamp.read_text()).get("pins") == list(pins) and py.is_file():
        return py, {**info, "installed": "reused", **json.loads(stamp.read_text())}
    t = time.perf_counter()
    steps = ([] if py.is_file() else [[sys.executable, "-m", "venv", str(env)]]) + [
        [str(py), "-m", "pip", "install", "--disable-pip-version-check", "--quiet", *pins]]
    for cmd in steps:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        if out.returncode:
            lines = [ln for ln in (out.stderr + out.stdout).splitlines() if ln.startswith("ERROR")] or \
                    (out.stderr + out.stdout).strip().splitlines()[-1:]
            return None, {**info, "installed": False, "error": lines[0] if lines else f"exit {out.returncode}"}
    frozen = subprocess.run([str(py), "-m", "pip", "freeze"], capture_output=True, text=True, timeout=120).stdout
    done = {"pins": list(pins), "freeze": frozen.split(), "install_s": round(time.perf_counter() - t)}
    stamp.write_text(json.dumps(done, indent=1))
    return py, {**info, "installed": "now", **done}


def run_peer(py: Path, recipe: str, fp32: Path, calib: Path, out: Path) -> dict:
    t = time.perf_counter()
    proc = subprocess.run([str(py), str(DRIVER), recipe, str(fp32), str(calib), str(out)], capture_output=True,
                          text=True, timeout=7200, env={**os.environ, "PYTHONNOUSERSITE": "1", "PYTHONPATH": ""})
    wall = round(time.perf_counter() - t, 1)
    if proc.returncode or not out.is_file():
        err = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        return {"ok": False, "error": err[-1] if err else f"exit {proc.returncode}", "wall_s": wall}
    return {"ok": True, **json.loads(proc.stdout.strip().splitlines()[-1]), "wall_s": wall}


# ------------------------------------------------------------------ scoring


def score(path: Path, fmt: str, x, y, ref, bench: bool) -> dict:
    from mobiledeploy.bench.core import BenchSettings, bench_model
    from mobiledeploy.export.logits import artifact_logits

    s = C.scores(ref, artifact_logits(path, fmt, x), y)
    row = {"format": fmt, "file": path.name, "size_mb": round(path.stat().st_size / 2**20, 2),
           "agree_n": s["agree_n"], "agree": round(s["agree"], 4), "agree_or_tie": round(s["agree_or_tie"], 4),
           "sqnr_db": round(s["sqnr_db"], 1), "top1_labelled": f"{s['top1_labelled']}/{s['labelled']}"}
    if bench:
        b = bench_model(path, BenchSettings(threads=1, runs=50))
        row["host_p50_ms_1thread"] = round(b.latency_ms["p50"], 2) if b.ok else None
    return row


def _markdown(rows: list[dict], set_up: dict) -> str:
    lines = [f"MobileNet V1 1.0/224 (ImageNet), {set_up['eval_samples']} real images disjoint from calibration "
             f"({set_up['labelled']} labelled; fp32 Keras {set_up['fp32_keras_top1_labelled']}/"
             f"{set_up['labelled']}), {set_up['calib_samples']} calibration samples; host latency on this machine, "
             "not a phone.", "",
             "| tool | recipe | format | agreement | logit SQNR | labelled top-1 | size | host p50, 1 thread |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if not r.get("ok", True):
            lines.append(f"| {r['tool']} | {r['recipe']} | {r.get('format', '')} | not run: {r['error']} | | | | |")
            continue
        lat = r.get("host_p50_ms_1thread")
        lines.append(f"| {r['tool']} | {r['recipe']} | {r['format']} | {r['agree_n']} ({100 * r['agree']:.1f} %) | "
                     f"{r['sqnr_db']} dB | {r['top1_labelled']} | {r['size_mb']} MB | "
                     f"{'' if lat is None else f'{lat} ms'} |")
    return "\n".join(lines) + "\n"


def run(args) -> dict:
    C.require_assets()
    from mobiledeploy.export import augment
    from mobiledeploy.export.calibration import load_calibration
    from mobiledeploy.export.pipeline import export_model
    from mobiledeploy.machine import conditions

    recipes = _recipes(args.recipes)
    peers = [p for p in args.peers.split(",") if p]
    unknown = set(peers) - set(PEER_RECIPES)
    if unknown:
        raise SystemExit(f"error: --peers: unknown {', '.join(sorted(unknown))}; choose from {', '.join(PEER_RECIPES)}")
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    _, x, y, ref = C.reference()
    rows, exports, timings = [], {}, {}
    with tempfile.TemporaryDirectory() as d:
        calib_dir = Path(d) / "calibration_photos"
        calib_dir.mkdir()
        for p in C.CALIB_PHOTOS:
            shutil.copy(C.ASSETS / "photos" / p, calib_dir / p)
        fp32_files, first = {}, None
        for name, options in recipes.items():  # this project's recipes; the first export also gives the fp32 files
            cfg = _export_config(name, options, calib_dir, ("fp32", "int8") if not fp32_files else ("int8",))
            t = time.perf_counter()
            res = export_model(cfg)
            first = first or (cfg, res)
            timings[f"export_{name}"] = round(time.perf_counter() - t, 1)
            exports[name] = {"options": options, "seconds": timings[f"export_{name}"],
                             "calibration": res.calibration, "quantization": res.quantization,
                             "warnings": list(res.warnings)}
            print(f"export {name}: {timings[f'export_{name}']:.0f} s", flush=True)
            for a in res.artifacts:
                if a.precision == "fp32":
                    fp32_files.setdefault(a.format, res.out_dir / a.file)
                tool = "fp32 (reference files)" if a.precision == "fp32" else "mobiledeploy"
                rows.append({"tool": tool, "recipe": name if a.precision != "fp32" else "fp32", "options": options,
                             "degraded": a.degraded,
                             **score(res.out_dir / a.file, a.format, x, y, ref, not args.no_bench)})
                print(json.dumps(rows[-1]), flush=True)
        # the calibration samples the (first) export calibrated on, for the peers: checked by their statistics
        cfg, res = first
        cal = load_calibration(str(calib_dir), resolution=C.RES, preprocessing=res.calibration["preprocessing"],
                               samples=cfg.calib_samples, validate=cfg.validate_samples, seed=cfg.seed).calib
        if augment.channel_stats(cal) != res.calibration["stats"]["calibration"]:
            raise SystemExit("error: the calibration samples differ from the export's")
        calib_npy = OUT / "calibration.npy"
        np.save(calib_npy, cal.astype(np.float32))
        envs, pythons = {}, {}
        for peer in dict.fromkeys(PEER_RECIPES[r][0] for r in peers):
            t = time.perf_counter()
            pythons[peer], envs[peer] = peer_python(args.venv, peer)
            timings[f"env_{peer}"] = round(time.perf_counter() - t, 1)
            print(f"environment {peer}: {envs[peer].get('installed')} {envs[peer].get('error', '')}", flush=True)
        for recipe in peers:
            peer, fmt, what = PEER_RECIPES[recipe]
            base = {"tool": peer, "recipe": recipe, "what": what}
            if pythons[peer] is None:
                rows.append({**base, "ok": False, "format": fmt, "error": f"not installed: {envs[peer]['error']}"})
                continue
            out = OUT / "peers" / f"{recipe}.{fmt}"
            out.parent.mkdir(parents=True, exist_ok=True)
            ran = run_peer(pythons[peer], recipe, fp32_files[fmt], calib_npy, out)
            timings[f"peer_{recipe}"] = ran["wall_s"]
            print(f"{recipe}: {json.dumps(ran)}", flush=True)
            if not ran["ok"]:
                rows.append({**base, "ok": False, "format": fmt, "error": ran["error"]})
                continue
            rows.append({**base, "run": ran, **score(out, fmt, x, y, ref, not args.no_bench)})
            print(json.dumps(rows[-1]), flush=True)
    set_up = {"model": "MobileNet V1 1.0/224, Keras ImageNet weights (mobilenet_1_0_224_tf.h5)",
              "eval_samples": len(x), "labelled": int((y >= 0).sum()),
              "fp32_keras_top1_labelled": int(np.sum(ref[y >= 0].argmax(1) == y[y >= 0])),
              "calib_samples": int(len(cal)), "calib_photos": list(C.CALIB_PHOTOS), "eval_photos": list(C.EVAL_PHOTOS),
              "calibration": "the samples export --calib FOLDER takes (its split, augmentation and seed), the same "
                             "array for every tool",
              "fp32_inputs": {k: str(v.relative_to(ROOT)) if v.is_relative_to(ROOT) else str(v)
                              for k, v in fp32_files.items()},
              "scoring": "pre-softmax logits of each file (artifact_logits: LiteRT / ONNX Runtime of the project's "
                         "environment) against fp32 Keras logits"}
    return {"what": "int8 on the real MobileNet V1 1.0/224: this project's recipes beside NNCF and "
                    "ai-edge-quantizer, same fp32 model, calibration samples and evaluation images",
            "machine": conditions(), "set_up": set_up, "peers": envs, "exports": exports, "timings_s": timings,
            "rows": rows, "_text": _markdown(rows, set_up)}

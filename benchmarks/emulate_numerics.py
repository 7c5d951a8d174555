"""The numerics matrix: every exported artifact on emulated ARM CPUs (real aarch64 kernels) vs. this x86 host.

    make arm-env                                   # once
    python -m benchmarks run emulate_numerics [--samples 5] [--cpus cortex-a53,...] [--tag max]

Three exports of MobileNet V1 (each: fp32 + int8, TFLite + ONNX, by `mobiledeploy export`):

- ``demo``: ``--alpha 0.25 --res 128`` as ``make demo`` builds it. Its random weights
  with untouched batch-norm statistics give the same output for every input, so its
  rows check little beyond "runs and matches";
- ``randbn``: the same architecture with random weights and batch-norm statistics
  re-estimated on random data (plus random scales and shifts): input-dependent outputs,
  so bit-exactness and top-1 agreement mean something;
- ``reference``: the committed trained model (V1 0.25, 32 px, digits).

Each artifact runs on the digits test images (``--samples``, resized to the model's
resolution) once on the host and once per emulated CPU, one thread, through the same
worker script. Reported per row: raw outputs bit-exact, max |difference| of the float
outputs, top-1 agreement, and the emulated wall time, which is **not a latency**.
Writes benchmarks/results/emulate_numerics.json and prints a Markdown table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.harness import BUILD, ROOT

KIND = "study"
BIN = Path(sys.executable).parent / "mobiledeploy"
CPUS = ("cortex-a53", "cortex-a55", "cortex-a76", "neoverse-n1", "max", "max,sme=off")
RANDBN = """
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np, keras
keras.utils.set_random_seed(0)
m = keras.applications.MobileNet(input_shape=(128, 128, 3), alpha=0.25, weights=None, classes=1000)
rng = np.random.default_rng(1)
for layer in m.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
        g, b, mu, var = layer.get_weights()
        layer.set_weights([rng.uniform(0.5, 1.5, g.shape).astype("float32"),
                           rng.normal(0, 0.2, b.shape).astype("float32"), mu, var])
        layer.momentum = 0.0  # one training-mode call sets the moving statistics to the batch's
m(rng.uniform(-1, 1, (32, 128, 128, 3)).astype("float32"), training=True)
preds = m.get_layer("conv_preds")
w, bias = preds.get_weights()
preds.set_weights([w * 10, bias])  # a peaked softmax: int8 outputs keep several levels
m.save(sys.argv[1])
"""


def export(name: str, work: Path, env: dict) -> tuple[Path, float]:
    """(export directory, seconds); reused when it already holds a manifest."""
    out = work / name
    if (out / "manifest.json").is_file():
        return out, 0.0
    t0 = time.perf_counter()
    if name == "demo":
        args = ["--alpha", "0.25", "--res", "128"]
    elif name == "randbn":
        keras_path = work / "randbn.keras"
        subprocess.run([sys.executable, "-c", RANDBN, str(keras_path)], check=True, env=env)
        args = ["--model", str(keras_path)]
    else:
        args = ["--model", str(ROOT / "models/mobilenet_v1_0.25_32_digits.keras")]
    subprocess.run([str(BIN), "export", *args, "--calib", "digits", "--out", str(out)], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    return out, time.perf_counter() - t0


def add_arguments(ap) -> None:
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--cpus", default=",".join(CPUS).replace("max,sme=off", "max-sme-off"))
    ap.add_argument("--models", default="demo,randbn,reference")
    ap.add_argument("--builtin-cpus", default="max,max-sme-off",
                    help="CPUs (of --cpus) that also run int8 TFLite with LiteRT's built-in kernels")
    ap.add_argument("--work", type=Path, default=BUILD / "emulate_numerics")
    ap.add_argument("--timeout", type=float, default=900.0, help="per emulated run, seconds")


def run(args) -> dict:

    from mobiledeploy.bench.core import machine_conditions
    from mobiledeploy.data.datasets import load_dataset
    from mobiledeploy.errors import MobiledeployError
    from mobiledeploy.runtimes import emulate as emu

    try:
        arm = emu.find_env()
        cpus = [emu.cpu(c.replace("max-sme-off", "max,sme=off")).name for c in args.cpus.split(",")]
        builtin_cpus = {emu.cpu(c.replace("max-sme-off", "max,sme=off")).name for c in args.builtin_cpus.split(",")}
    except MobiledeployError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    args.work.mkdir(parents=True, exist_ok=True)
    start = machine_conditions()
    rows, exports, t_all = [], {}, time.perf_counter()
    for name in args.models.split(","):
        out, secs = export(name, args.work, env)
        manifest = json.loads((out / "manifest.json").read_text())
        res = int(manifest["model"].get("resolution") or manifest["model"]["input_shape"][1])
        x = load_dataset("digits", resolution=res, preprocessing=manifest["model"].get("preprocessing") or "mobilenet",
                         limit=args.samples).x
        exports[name] = {"dir": str(out.relative_to(ROOT) if out.is_relative_to(ROOT) else out),
                         "export_seconds": round(secs, 1), "resolution": res}
        arts = sorted(list(out.glob("*.tflite")) + list(out.glob("*.onnx")))
        # + int8 TFLite with LiteRT's built-in kernels instead of XNNPACK, on --builtin-cpus
        runs = [(a, True, cpus) for a in arts] + [(a, False, [c for c in cpus if c in builtin_cpus])
                                                  for a in arts if a.suffix == ".tflite" and "int8" in a.name]
        for art, xnnpack, on in runs:
            host = emu.run_worker(art, x, cpu_name=None, timeout_s=120, xnnpack=xnnpack)
            host_top1 = host["float_0"].reshape(len(x), -1).argmax(1)
            for c in on:
                t0 = time.perf_counter()
                r = emu.compare_emulated(art, x, c, args.timeout, env=arm, host=host, xnnpack=xnnpack)
                row = {"export": name, **r.to_json(), "wall_seconds": round(time.perf_counter() - t0, 1),
                       "host_top1_distinct": int(len(set(host_top1.tolist())))}
                rows.append(row)
                print(f"{name:9s} {art.name:38s} {'' if xnnpack else 'builtin':7s} {c:12s} " + (
                      f"error: {r.error}" if r.error else f"bit-exact {r.bit_exact!s:5s} max|diff| "
                      f"{r.max_abs_diff:.2e} top-1 agree {r.top1_agreement:.0%}"), flush=True)
    hw = {c: arm.info["cpus"][c] for c in cpus}
    result = {"what": "outputs of each artifact on emulated ARM CPUs (qemu-user, aarch64 LiteRT and ONNX Runtime "
                      "wheels) vs. the same artifact on this x86 host; emulated seconds are not latencies",
              "machine_start": start, "machine_end": machine_conditions(),
              "qemu": arm.info["qemu_version"], "guest_python": arm.info["python"], "guest_wheels": arm.info["wheels"],
              "setup": {k: arm.info.get(k) for k in ("setup_seconds", "from_nothing", "download_bytes",
                                                     "artifact_bytes", "disk_bytes", "loadavg_1_5_15", "created")},
              "hwcaps": hw, "samples": args.samples, "threads": 1, "exports": exports,
              "seconds": round(time.perf_counter() - t_all, 1), "results": rows}
    print_markdown(result)
    return result


def print_markdown(result: dict) -> None:
    s = result["setup"]
    how = "from nothing" if s.get("from_nothing", True) else "not from nothing: qemu or downloads were there"
    print(f"\nset-up (`make arm-env`, {how}): {s['setup_seconds']} s, {s['download_bytes'] / 1e6:.0f} MB "
          f"downloaded (load {s['loadavg_1_5_15']})\n")
    print("| CPU | qemu -cpu | dotprod | i8mm | SVE | SME |\n|---|---|---|---|---|---|")
    for c, h in result["hwcaps"].items():
        print(f"| {c} | `{h['qemu_cpu']}` | " + " | ".join("yes" if h[k] else "-" for k in
                                                         ("dotprod", "i8mm", "sve", "sme")) + " |")
    cpus = list(result["hwcaps"])
    print("\n| export | artifact | " + " | ".join(cpus) + " |\n|---|---|" + "---|" * len(cpus))
    by = {}
    for r in result["results"]:
        by.setdefault((r["export"], r["model"], r["xnnpack"]), {})[r["cpu"]] = r
    for (exp, model, xnnpack), cells in by.items():
        label = model if xnnpack else f"{model} (LiteRT built-in kernels, no XNNPACK)"
        print(f"| {exp} | {label} | " + " | ".join(_cell(cells.get(c)) for c in cpus) + " |")
    print("\ncell: bit-exact with x86 (=) or max |diff| of the outputs, then top-1 agreement with x86; "
          "emulated seconds are in the JSON (emulated, not a latency)")
    emu_s = [r["emulated_seconds"] / r["host_seconds"] for r in result["results"] if r["emulated_seconds"]]
    if emu_s:
        print(f"emulated / host inference wall time: {min(emu_s):.0f}x to {max(emu_s):.0f}x (not a latency)")


def _cell(r: dict | None) -> str:
    if r is None:
        return ""
    if r["error"]:
        return "error: " + r["error"][:60]
    diff = "= bit-exact" if r["bit_exact"] else f"{r['max_abs_diff']:.1e}"
    return f"{diff}, {r['top1_agreement']:.0%}"

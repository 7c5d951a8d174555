"""ONNX Runtime int8 types on the real MobileNet V1 1.0/224 ImageNet model: S8S8 vs U8S8 + reduce_range.

Needs ``make assets``. Run: ``python -m benchmarks run int8_real_onnx_types`` (about 3 min on a
2-vCPU VM). Writes ``benchmarks/results/int8_real_onnx_types.json``.

The export's default int8 recipe (per-channel weights, bias correction for the weight grid of
the types, the stem ``conv1/conv_dw_1/conv_pw_1`` in float) with each of ONNX Runtime's two
type choices, run on *this* CPU; set-up and metrics as in the int8_real study
(120 real images disjoint from calibration, logits against fp32 Keras). On x86-64 without
VNNI, ONNX Runtime's u8 x s8 kernel (vpmaddubsw) can saturate with S8S8 activations; on a
CPU with VNNI or on ARM the two should be close.

``--emulate CPU`` (after ``make arm-env``) also runs each file on the aarch64 ONNX Runtime under
qemu on that ARM CPU model (``runtimes.emulate.run_worker``): the numerics a phone's ONNX
Runtime gives the same file (an emulated run gives results, never a latency).
``--full-int8`` keeps no layer in float. Give such runs a ``--tag`` (own results file).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks.common import int8_real as C

KIND = "study"


def add_arguments(ap) -> None:
    ap.add_argument("--emulate", metavar="CPU", default=None,
                    help="also run each file under qemu on this ARM CPU model (e.g. cortex-a76)")
    ap.add_argument("--full-int8", action="store_true", help="no layer in float (default: the float stem)")


def run(args) -> dict:
    C.require_assets()
    from mobiledeploy.bench.core import machine_conditions
    from mobiledeploy.export.formats import onnx as O
    from mobiledeploy.export.recipes import Calibration, OnnxQuant, OnnxQuantTypes, QuantRecipe
    from mobiledeploy.machine import cpu_flags

    model, x, y, ref = C.reference()
    cal = C.calib_set()
    stem = () if args.full_int8 else ("conv1", "conv_dw_1", "conv_pw_1")
    out = {"what": __doc__.splitlines()[0], "machine": machine_conditions(),
           "vnni_flags": sorted(f for f in cpu_flags() if "vnni" in f), "float_layers": list(stem), "types": {}}
    if args.emulate:
        from mobiledeploy.runtimes import emulate as emu

        env = emu.find_env()
        out["emulated"] = {"cpu": args.emulate, "guest_versions": emu.guest_versions(args.emulate, env=env),
                           "label": emu.EMULATED_LABEL}
    for name in ("u8s8", "s8s8"):
        recipe = QuantRecipe(onnx=OnnxQuant(OnnxQuantTypes(name, name == "u8s8", "")), bias_correction=True,
                             float_layers=stem)
        with tempfile.TemporaryDirectory() as d:
            path = O.convert(model, "int8", recipe, Calibration(cal), Path(d), "m")
            row = out["types"][name] = {"reduce_range": name == "u8s8", **C.scores(ref, C.run_onnx(path, x), y)}
            if args.emulate:
                got = emu.run_worker(path, x, cpu_name=args.emulate, timeout_s=7200.0, env=env)
                row["emulated"] = {**C.scores(ref, got["float_0"].reshape(len(x), -1), y),
                                   "emulated_seconds": got["meta"]["seconds"]}
        print(name, row, flush=True)
    return out

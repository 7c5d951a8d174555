"""The examples of docs/emulate.md, measured: `eval --emulate` on the reference model and
`bench --emulate` on cortex-a53 vs. cortex-a76.

    make arm-env                                   # once
    python -m benchmarks run emulate_cli [--out DIR]

1. exports the committed reference model (``--calib digits``) and runs
   ``mobiledeploy eval DIR --data digits --emulate cortex-a76``;
2. exports ``--alpha 0.25 --res 128 --classes 10 --calib digits`` and runs
   ``mobiledeploy bench DIR/mobilenet_v1_0.25_128_int8.tflite --emulate CPU`` for
   cortex-a53 and cortex-a76: the ISA features each run saw and its emulated p50 (emulated,
   not a latency: the a53/a76 ratio is qemu's, not the phones').

Writes benchmarks/results/emulate_cli.json (each command's JSON and stdout, the machine's
load at start and end).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.harness import ROOT

KIND = "study"


def _run(*args, json_out: Path | None = None) -> dict:
    cmd = [sys.executable, "-m", "mobiledeploy", *map(str, args)] + (["--json", str(json_out)] if json_out else [])
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="80")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"emulate_cli: {' '.join(map(str, args))} failed ({proc.returncode}): "
                         f"{proc.stderr.strip().splitlines()[-1:]}")
    out = {"command": "mobiledeploy " + " ".join(map(str, args)), "stdout": proc.stdout}
    if json_out:
        out["json"] = json.loads(json_out.read_text())
    return out


def add_arguments(ap) -> None:
    ap.add_argument("--out", type=Path, help="where to export (default: a temporary folder)")


def run(args) -> dict:
    from mobiledeploy.bench.core import machine_conditions

    start = machine_conditions()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        ref, demo = out / "reference", out / "demo"
        _run("export", "--model", ROOT / "models/mobilenet_v1_0.25_32_digits.keras", "--calib", "digits", "--out", ref)
        ev = _run("eval", ref, "--data", "digits", "--emulate", "cortex-a76", json_out=out / "eval.json")
        _run("export", "--alpha", "0.25", "--res", "128", "--classes", "10", "--calib", "digits", "--out", demo)
        model = demo / "mobilenet_v1_0.25_128_int8.tflite"
        benches = {cpu: _run("bench", model, "--emulate", cpu, json_out=out / f"bench-{cpu}.json")
                   for cpu in ("cortex-a53", "cortex-a76")}
    p50 = {cpu: b["json"]["results"][0]["latency_ms"]["p50"] for cpu, b in benches.items()}
    summary = {"eval": [{k: e[k] for k in ("model", "top1", "top1_agreement", "max_abs_diff", "bit_exact",
                                            "emulated_seconds")} for e in ev["json"]["emulated"]],
               "bench": {cpu: {"features": b["json"]["emulation"]["hwcaps"]["features"],
                               "dotprod": b["json"]["emulation"]["hwcaps"]["dotprod"],
                               "emulated_p50_ms": p50[cpu], "label": b["json"]["label"]}
                         for cpu, b in benches.items()},
               "a53_over_a76_emulated_p50": p50["cortex-a53"] / p50["cortex-a76"]}
    doc = {"summary": summary, "eval": ev, "bench": benches, "machine_start": start,
           "machine_end": machine_conditions()}
    print(json.dumps(summary, indent=1))
    return doc

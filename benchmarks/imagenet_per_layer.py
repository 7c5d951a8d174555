"""`eval --per-layer` on the real MobileNet V1 1.0/224 ImageNet exports: which layers does each recipe break?

Run after the imagenet_artifacts study (it reuses its exports under
``build/imagenet_artifacts``). For the default recipe and for ``--per-tensor``, runs
``mobiledeploy eval DIR --data <the 20 labelled ImageNet images, .npz> --per-layer --json`` in a
child process (the CLI as a user runs it) and keeps top-1 per artifact and the five worst
layers per int8 artifact. Writes ``benchmarks/results/imagenet_per_layer.json``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import int8_real as C
from benchmarks.harness import BUILD, ROOT

KIND = "study"
EXPORTS = BUILD / "imagenet_artifacts"


def add_arguments(ap) -> None:
    pass


def run(args) -> dict:
    C.require_assets()
    from mobiledeploy.bench.core import machine_conditions

    out = {"what": "mobiledeploy eval --per-layer on the real-model exports of the imagenet_artifacts study",
           "machine": machine_conditions(), "recipes": {}}
    for tag in ("default", "per_tensor"):
        d = EXPORTS / tag
        if not (d / "manifest.json").is_file():
            raise SystemExit(f"{d} has no export: run `python -m benchmarks run imagenet_artifacts` first")
        with tempfile.TemporaryDirectory() as tmp:
            js = Path(tmp) / "eval.json"
            proc = subprocess.run([sys.executable, "-m", "mobiledeploy", "eval", str(d), "--data",
                                   str(C.ASSETS / "imagenet20_224.npz"), "--per-layer", "--json", str(js)],
                                  capture_output=True, text=True, cwd=ROOT)
            if proc.returncode != 0:
                raise SystemExit(f"eval failed on {d}: {proc.stderr.strip()[-300:]}")
            report = json.loads(js.read_text())
        rows = {}
        for r in report["results"]:
            row = {"top1": r.get("top1"), "agreement": r.get("agreement")}
            pl = r.get("per_layer")
            if pl:
                row |= {"metric": pl["metric"], "flagged": pl.get("flagged"),
                        "worst": [(layer["name"], layer["value"]) for layer in pl["layers"][:5]]}
            rows[Path(r["model"]).name] = row
        out["recipes"][tag] = rows
        print(tag, json.dumps(rows, indent=1), flush=True)
    return out

"""The random-weight .tflite exports the kernel-count studies estimate (exported once, then cached)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchmarks.harness import BUILD

ARTIFACTS = BUILD / "estimate_kernels"


def artifact(model: str, precision: str = "fp32") -> Path:
    """The .tflite of "arch alpha res" (exported once with `mobiledeploy export`, then cached)."""
    arch, alpha, res = model.split()
    path = ARTIFACTS / f"{arch}_{alpha}_{res}_{precision}.tflite"
    if not path.is_file():
        out = ARTIFACTS / f"{arch}_{alpha}_{res}"
        subprocess.run([str(Path(sys.executable).with_name("mobiledeploy")), "export", "--arch", arch, "--alpha", alpha,
                        "--res", res, "--quant", precision, "--formats", "tflite", "--calib", "random",
                        "--out", str(out)], check=True)
        next(out.glob(f"*_{precision}.tflite")).rename(path)
    return path

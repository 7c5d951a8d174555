"""Wall time of `mobiledeploy export --alpha 0.25 --res 128` (the demo job), end to end.

Each run is a fresh subprocess, so TensorFlow's import (~5 s of CPU) is included, as a
user would pay it. Reports median and min wall time over --runs, the per-step times the
exporter records in its manifest, and the machine's conditions (CPU, cores, load
average before and after) so the figure can be read honestly. Writes
benchmarks/results/export_time.json.

    python -m benchmarks run export_time [--runs 5] [-- extra export args]
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mobiledeploy.bench.core import host_info

KIND = "regression"
TARGET_S = 20.0


def add_arguments(ap) -> None:
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("extra", nargs="*", help="extra arguments for mobiledeploy export")


def run(args) -> dict:
    exe = Path(sys.executable).with_name("mobiledeploy")
    cmd = [str(exe), "export", "--alpha", "0.25", "--res", "128", *args.extra]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    runs = []
    load_before = os.getloadavg()
    for i in range(args.runs):
        out = Path(tempfile.mkdtemp(prefix="export_time_"))
        try:
            t0 = time.perf_counter()
            r0 = os.times()
            proc = subprocess.run(cmd + ["--out", str(out)], capture_output=True, text=True, env=env)
            wall = time.perf_counter() - t0
            r1 = os.times()
            if proc.returncode != 0:
                print(proc.stderr, file=sys.stderr)
                return proc.returncode
            manifest = json.loads((out / "manifest.json").read_text())
        finally:
            shutil.rmtree(out, ignore_errors=True)
        cpu = (r1.children_user - r0.children_user) + (r1.children_system - r0.children_system)
        runs.append({"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "load_avg_1m": round(os.getloadavg()[0], 2),
                     "steps_s": manifest.get("timings_s", {})})
        print(f"run {i + 1}: {wall:.1f} s wall, {cpu:.1f} s CPU, load {os.getloadavg()[0]:.1f}", file=sys.stderr)
    walls = [r["wall_s"] for r in runs]
    result = {
        "command": "mobiledeploy export --alpha 0.25 --res 128" + (" " + " ".join(args.extra) if args.extra else ""),
        "runs": len(runs), "median_wall_s": round(statistics.median(walls), 2), "min_wall_s": min(walls),
        "max_wall_s": max(walls), "median_cpu_s": round(statistics.median(r["cpu_s"] for r in runs), 2),
        "target_s": TARGET_S, "meets_target_median": statistics.median(walls) <= TARGET_S,
        "machine": {**host_info(), "load_avg_1m_before": round(load_before[0], 2), "load_avg_1m_after": round(os.getloadavg()[0], 2)},
        "per_run": runs,
        "measured_at_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    print(json.dumps({k: result[k] for k in ("median_wall_s", "min_wall_s", "median_cpu_s", "meets_target_median")}))
    return result

"""Wall time of the default 16-config sweep (MobileNet V1 alpha x resolution, fp32 + int8,
TFLite + ONNX): serial vs local-parallel vs Ray local, the resume, and a model of N nodes.

    python -m benchmarks run sweep_scaleout [--modes serial,local,resume,ray] [--alpha ...] [--res ...]

Each mode is `mobiledeploy sweep` in a child process (TensorFlow import included), from an
empty output directory under build/sweep_scaleout/<mode> (``resume`` reruns ``local``'s).
The machine's load average is recorded before and after each mode: on a shared machine
the modes are not equally disturbed, so read the ratios with the loads beside them.

N nodes: from the serial run's per-config stage times (the least disturbed), a sweep on N
nodes of W workers takes about max(total work / (N * W), bench time / N, longest config)
(benches are serialised per node, exports and evals are not), plus the start-up measured
here. The model is checked against the measured local-parallel run (N = 1, W = jobs).

Writes benchmarks/results/sweep_scaleout.json (a smaller --alpha/--res grid: sweep_scaleout_<grid>.json),
merged with earlier modes' results for the same grid.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

from benchmarks import harness
from benchmarks.harness import BUILD, ROOT

KIND = "regression"
OUT = BUILD / "sweep_scaleout"
MODES = {"serial": ["--jobs", "1"], "local": [], "resume": [], "ray": ["--executor", "ray"]}


def run_mode(mode: str, grid: list[str]) -> dict:
    out = OUT / ("local" if mode == "resume" else mode)
    if mode != "resume":
        shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "mobiledeploy", "sweep", "--out", str(out), *grid, *MODES[mode]]
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    wall = time.perf_counter() - t0
    summary = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {}
    configs = summary.get("configs", [])
    return {"mode": mode, "command": " ".join(cmd[2:]), "exit_code": proc.returncode, "wall_s": round(wall, 1),
            "stderr_tail": proc.stderr.strip().splitlines()[-3:], "loadavg_before": [round(x, 2) for x in load0],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()], "configs": len(configs),
            "failed": sum(c["status"] != "ok" for c in configs), "ran": summary.get("executor", {}).get("ran"),
            "workers": summary.get("executor", {}).get("workers"),
            "nodes": sorted({(c.get("node") or {}).get("host") for c in configs if c.get("node")}),
            "stage_s": {k: round(sum((c.get("timings_s") or {}).get(k, 0.0) for c in configs), 1)
                        for k in ("export", "bench_wait", "bench", "eval", "total", "cpu")}}


def n_node_model(serial: dict, startup_s: float, workers: int, nodes=(1, 2, 4, 8, 16)) -> list[dict]:
    summary = json.loads((OUT / "serial" / "results.json").read_text())
    per = [c["timings_s"] for c in summary["configs"] if c.get("timings_s")]
    work = sum(t.get("total", 0.0) - t.get("bench_wait", 0.0) for t in per)  # waiting for the lock is not work
    bench = sum(t.get("bench", 0.0) for t in per)
    longest = max(t.get("total", 0.0) - t.get("bench_wait", 0.0) for t in per)
    return [{"nodes": n, "workers_per_node": workers,
             "predicted_wall_s": round(startup_s + max(work / (n * workers), bench / n, longest), 1)}
            for n in nodes]


def add_arguments(ap) -> None:
    ap.add_argument("--modes", default="serial,local,resume,ray")
    ap.add_argument("--alpha", default=None, help="comma list (default: the sweep's, the paper's 4)")
    ap.add_argument("--res", default=None, help="comma list; with --alpha/--res the default --tag is the grid's")


def run(args) -> dict:
    from mobiledeploy.bench.core import machine_conditions

    grid = [*(["--alpha", args.alpha] if args.alpha else []), *(["--res", args.res] if args.res else [])]
    global OUT
    tag = args.tag = args.tag or "_".join(x.replace(",", "-") for x in grid[1::2]) or None
    results_path = harness.result_path("sweep_scaleout", tag)
    OUT = OUT.with_name(f"sweep_scaleout_{tag}") if tag else OUT
    prev = json.loads(results_path.read_text()) if results_path.exists() else {}
    runs = {r["mode"]: r for r in prev.get("runs", []) if prev.get("grid") == grid}
    for mode in args.modes.split(","):
        print(f"running {mode} ...", flush=True)
        runs[mode] = run_mode(mode, grid)
        print(json.dumps({k: v for k, v in runs[mode].items() if k != "command"}), flush=True)
        result = {"what": "wall time of `mobiledeploy sweep` (default: 16 MobileNet V1 configs, fp32+int8, "
                          "TFLite+ONNX) by executor; host timings on this machine",
                  "grid": grid, "machine": machine_conditions(), "runs": list(runs.values())}
        if ("serial" in runs and runs["serial"]["exit_code"] == 0 and "resume" in runs
                and (OUT / "serial" / "results.json").exists()):
            local = runs.get("local", {})
            result["n_node_model"] = n_node_model(runs["serial"], runs["resume"]["wall_s"],
                                                  local.get("workers") or 2)
            if local:
                pred = result["n_node_model"][0]["predicted_wall_s"]
                result["model_check"] = {"predicted_local_s": pred, "measured_local_s": local["wall_s"]}
        for mode in ("local", "ray"):
            if mode in runs and "serial" in runs:
                result[f"speedup_{mode}_vs_serial"] = round(runs["serial"]["wall_s"] / runs[mode]["wall_s"], 2)
        harness.write_result("sweep_scaleout", result, tag=tag)  # after every mode
    return result

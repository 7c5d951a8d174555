"""Does `bench --profile` account for the end-to-end time? Sum of per-operator times vs. bench's p50.

Exports MobileNet V1 0.25/128 (fp32 + int8, TFLite + ONNX; random init, as `make demo`)
to build/profile_sum unless it is there, then runs
``mobiledeploy bench DIR --threads 1 --affinity 1 --runs 200 --profile --json`` in a child
process and compares, per artifact, the sum of the operator times with the end-to-end p50
measured beside them in the profiling process (interleaved rounds) and with bench's own p50
(another process, earlier), and lists `estimate --target host`'s total and how many of its
layers were matched to a measured operator, and how well the estimate sizes and ranks the
operators that hold >= 2 % of the time (median |error|, Spearman correlation); 6 times over. Host times on this machine. Writes
``benchmarks/results/profile_sum.json``.

    python -m benchmarks run profile_sum [--tag varying]
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.harness import BUILD, ROOT

KIND = "study"
OUT = BUILD / "profile_sum"
REPEATS = 6  # whole bench --profile runs, one after another


def layer_agreement(ops: list[dict]) -> dict:
    """How well `estimate --target host` ranks and sizes the operators that matter: over the
    matched operators holding >= 2 % of the measured sum, the median |estimate / measured - 1|
    and the Spearman rank correlation of the two."""
    from scipy.stats import spearmanr

    total = sum(o["ms"] for o in ops)
    big = [o for o in ops if o.get("estimate_ms") is not None and o["ms"] >= 0.02 * total]
    if len(big) < 3:
        return {"layers_compared": len(big)}
    err = statistics.median(abs(o["estimate_ms"] / o["ms"] - 1.0) for o in big)
    rho = spearmanr([o["ms"] for o in big], [o["estimate_ms"] for o in big]).statistic
    return {"layers_compared": len(big), "layer_median_abs_error_pct": round(100 * err, 1),
            "layer_rank_correlation": round(float(rho), 3)}


def add_arguments(ap) -> None:
    pass


def run(args) -> dict:
    from mobiledeploy.bench.core import machine_conditions

    if not (OUT / "manifest.json").is_file():
        subprocess.run([sys.executable, "-m", "mobiledeploy", "export", "--alpha", "0.25", "--res", "128",
                        "--out", str(OUT)], check=True, cwd=ROOT, capture_output=True)
    before = machine_conditions()
    rows = []
    for rep in range(1, REPEATS + 1):
        with tempfile.TemporaryDirectory() as tmp:
            js = Path(tmp) / "bench.json"
            subprocess.run([sys.executable, "-m", "mobiledeploy", "bench", str(OUT), "--threads", "1", "--affinity", "1",
                            "--runs", "200", "--profile", "--json", str(js)], check=True, cwd=ROOT, capture_output=True)
            report = json.loads(js.read_text())
        for r in report["results"]:
            prof = report["profiles"][r["model"]]
            p50 = r["latency_ms"]["p50"]
            rows.append({"repeat": rep, "model": Path(r["model"]).name, "runtime": r["runtime"],
                         "operators": len(prof["ops"]), "sum_ms": round(prof["sum_ms"], 4),
                         "run_p50_ms": round(prof["run_p50_ms"], 4),
                         "sum_over_run_p50": round(prof["sum_ms"] / prof["run_p50_ms"], 3),
                         "bench_p50_ms": round(p50, 4), "sum_over_p50": round(prof["sum_ms"] / p50, 3),
                         "profiler_cost_us": prof.get("profiler_cost_us"), "kernel_sum_ms": prof.get("kernel_sum_ms"),
                         "host_estimate_ms": round(prof["estimate"]["latency_ms"], 4),
                         "estimate_layers_matched": f"{prof['estimate']['layers_matched']}/{prof['estimate']['layers']}",
                         **layer_agreement(prof["ops"]),
                         "method": prof["method"]})
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "method"}), flush=True)
    after = machine_conditions()
    before = {**before, "loadavg_after": after.get("loadavg_1_5_15"), "time_utc_after": after.get("time_utc")}
    return {"what": __doc__.splitlines()[0], "machine": before, "rows": rows}

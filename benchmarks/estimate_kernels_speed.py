"""How long `estimate --method kernels` takes: a first estimate of a 1.0/224 model, and a cached repeat.

    python -m benchmarks run estimate_kernels_speed [--target pixel4-big] [--model "mobilenet_v1 1.0 224"]

The first estimate counts the artifact again (``refresh``) with the discovery run of the
runtime's libraries forgotten too, so it pays both emulated runs, as a new artifact on a
core does; only the per-core sysroot (one HWCAP probe, once per core) is already there.
Then the same estimate again, from the cache, in this process and as a fresh
``mobiledeploy estimate ... --method kernels --json -`` process (Python start-up included).
Wall times on this machine; the load is recorded beside them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

KIND = "study"


def add_arguments(ap) -> None:
    ap.add_argument("--target", default="pixel4-big")
    ap.add_argument("--model", default="mobilenet_v1 1.0 224", help='"arch alpha res", fp32 (exported if missing)')


def run(a) -> dict:
    from benchmarks.common.kernel_artifacts import artifact
    from mobiledeploy.kernels import estimate as ke
    from mobiledeploy.kernels import trace
    from mobiledeploy.runtimes import emulate as emu
    from mobiledeploy.targets import load_target

    path = artifact(a.model)
    target = load_target(a.target)
    env = emu.find_env()
    core = ke.core_of(target)
    n = target.threads or 1
    root = trace.cpu_root(env, core.cpu, core.midr)
    trace.maps_file(env, root, core.cpu, path, n, not target.xnnpack, env.cache / "kernels").unlink(missing_ok=True)
    load_before = os.getloadavg()
    t0 = time.monotonic()
    first = ke.estimate_kernels(path, target, refresh=True)
    t1 = time.monotonic()
    again = ke.estimate_kernels(path, target)
    t2 = time.monotonic()
    cli = [str(Path(sys.executable).with_name("mobiledeploy")), "estimate", str(path), "--target", a.target,
           "--method", "kernels", "--json", "-"]
    t3 = time.monotonic()
    proc = subprocess.run(cli, capture_output=True, text=True)
    t4 = time.monotonic()
    doc = {"model": a.model, "artifact": str(path), "target": a.target, "threads": n, "core": core.to_json(),
           "first_estimate_s": round(t1 - t0, 1), "cached_in_process_s": round(t2 - t1, 2),
           "cached_cli_process_s": round(t4 - t3, 2), "cli_exit_code": proc.returncode,
           "latency_ms": round(first.latency_ms, 2), "cached_latency_ms": round(again.latency_ms, 2),
           "instructions_m": round(first.instructions / 1e6, 1),
           "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in os.getloadavg()]}
    print(doc)
    return doc

"""False alarms: `mobiledeploy check` of an artifact against an identical copy of itself.

MobileNet V1 alpha 0.25 at 128x128 (fp32 .tflite, LiteRT), max_latency_ratio 1.10, the
check's default [latency] settings, 20 independent checks on this shared 2-core machine.
Target: 0 latency regressions. Writes benchmarks/results/check_false_alarms.json.

    .venv/bin/python benchmarks/check_false_alarms.py [--checks 20] [--limit 1.10]
"""

from __future__ import annotations

import argparse

from check_common import identical_copy, mobilenet_tflite, run_series

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checks", type=int, default=20)
    ap.add_argument("--limit", type=float, default=1.10)
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--name", default="check_false_alarms")
    ap.add_argument("--threads", default=None, help='[latency] threads: a number or "target" (default: 1)')
    a = ap.parse_args()
    base = mobilenet_tflite(a.resolution)
    run_series(name=a.name, candidate=identical_copy(base), baseline=base, limit=a.limit,
               checks=a.checks, threads=a.threads)

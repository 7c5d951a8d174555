"""False alarms: `mobiledeploy check` of an artifact against an identical copy of itself.

MobileNet V1 alpha 0.25 at 128x128 (fp32 .tflite, LiteRT), max_latency_ratio 1.10, the
check's default [latency] settings, 20 independent checks on this shared 2-core machine.
Target: 0 latency regressions. Writes benchmarks/results/check_false_alarms[_TAG].json.

    python -m benchmarks run check_false_alarms [--checks 20] [--limit 1.10] [--tag idle]
"""

from __future__ import annotations

from benchmarks.common.check import identical_copy, mobilenet_tflite, run_series

KIND = "study"


def add_arguments(ap) -> None:
    ap.add_argument("--checks", type=int, default=20)
    ap.add_argument("--limit", type=float, default=1.10)
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--threads", default=None, help='[latency] threads: a number or "target" (default: 1)')


def run(a) -> dict:
    base = mobilenet_tflite(a.resolution)
    name = "check_false_alarms" + (f"_{a.tag}" if a.tag else "")
    return run_series(name=name, candidate=identical_copy(base), baseline=base, limit=a.limit,
                      checks=a.checks, threads=a.threads)

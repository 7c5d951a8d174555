"""``BenchRequest``: what ``bench`` (and ``sweep``'s bench step) measures, each field also its option.

Kept apart from ``bench/service.py`` and ``bench/core.py`` so that ``bench --help`` builds its
options without importing the runtimes (``mobiledeploy.options``: declared once).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from mobiledeploy.options import AtLeast, OneOf, Seconds, option

DEFAULT_TIMEOUT_S = 300.0  # seconds per model (load + all runs) before its child process is killed
ORT_OPT_LEVELS = ("disable", "basic", "extended", "all")


@dataclass(frozen=True)
class BenchRequest:
    """What to measure: models (files or export directories), the target profile and overrides."""

    models: tuple[str, ...]
    target: str | None = None  # a shipped profile's name (None: host)
    target_file: str | None = None  # or a profile TOML of one's own
    threads: int | None = option(None, check=AtLeast(1),  # None: the profile's (the overrides below likewise)
                                 help="Thread count (overrides the profile).")
    affinity: str | None = option(None, metavar="POLICY",
                                  help="Cores to pin: none, first, or ids such as 0,1 (overrides the profile).")
    xnnpack: bool | None = option(None, flag="--xnnpack/--no-xnnpack",
                                  help="LiteRT: XNNPACK delegate (default on) or builtin kernels without default "
                                       "delegates.")
    ort_opt_level: str | None = option(None, check=OneOf(ORT_OPT_LEVELS, "ONNX Runtime optimization level"),
                                       help="ONNX Runtime graph optimization level (default from the profile: all).")
    warmup: int = option(10, check=AtLeast(0), help="Untimed runs after the first.")
    runs: int | None = option(None, check=AtLeast(1),
                              help="Timed runs (alone: exactly N; with --min-time: at least N).")
    min_time_s: float | None = option(None, flag="--min-time", check=Seconds(),
                                      help="Time for at least S seconds. Default: at least 50 runs and at least 2 s.")
    timeout_s: float = option(DEFAULT_TIMEOUT_S, flag="--timeout", check=Seconds(),
                              help="Seconds per model (load + all runs) before its child process is killed (x50 "
                                   "under --emulate).")
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    samples: bool = option(False, help="Include every run's latency (samples_ms) in --json.")
    emulate: str | None = option(  # a CPU model or "target": run under qemu
        None, metavar="CPU|target",
        help="Run on the real aarch64 runtimes under qemu on this CPU model (cortex-a53, cortex-a55, cortex-a76, "
             "neoverse-n1, max, 'max,sme=off'), or 'target' for the profile's; needs `make arm-env`. Times are "
             "emulated, not a latency.")
    profile: bool = option(False, help="Also time every operator (ONNX Runtime's profiler; LiteRT by prefix "
                                       "differencing), host times.")
    data: str | None = option(None, metavar="SOURCE",  # top-1 on this labelled data set
                              help="Also measure top-1 on this labelled data set (digits, image folder, .npz); see "
                                   "`eval`.")
    eval_limit: int | None = None  # evaluate on this many samples of ``data``
    estimates: bool = True  # the device estimate of a target other than the host

"""Simulation (no timing): how often does the latency decision flag a model whose true
ratio is exactly at the limit, or clearly above/below it?

Per-round figures are drawn as: true ratio x lognormal own noise (sd 3 % or 10 %), and a
share of child processes (0 % or 30 %) slowed as a whole by 1.1-1.7x, the failure mode
seen on the shared machine (docs/check.md). The sequential rule of `check` is applied as
is (mobiledeploy.check.stats: decide after 6 rounds, then every 2, up to 20).
Writes benchmarks/results/check_at_limit_sim.json.

    python -m benchmarks run check_at_limit_sim [--sims 200]
"""

from __future__ import annotations

import numpy as np

from mobiledeploy.check import stats

KIND = "study"


def one_check(rng, true, sd, disturbed, limit=1.10, first=6, max_rounds=20):
    c, b = [], []
    for n in range(1, max_rounds + 1):
        for acc, scale in ((c, true), (b, 1.0)):
            x = scale * np.exp(rng.normal(0, sd))
            acc.append(x * rng.uniform(1.1, 1.7) if rng.random() < disturbed else x)
        if n < first or (n - first) % 2:
            continue
        d = stats.decide(stats.paired_ratio(c, b, resamples=1000), limit)
        if d != stats.INCONCLUSIVE:
            return d
    return stats.INCONCLUSIVE


def add_arguments(ap) -> None:
    ap.add_argument("--sims", type=int, default=200)


def run(a) -> dict:
    rng = np.random.default_rng(0)
    rows = []
    for true in (1.0, 1.10, 1.23):
        for sd in (0.03, 0.10):
            for disturbed in (0.0, 0.3):
                v = [one_check(rng, true, sd, disturbed) for _ in range(a.sims)]
                row = {"true_ratio": true, "own_noise_sd": sd, "disturbed_share": disturbed, "limit": 1.10,
                       **{k: v.count(k) / a.sims for k in (stats.REGRESSION, stats.PASS, stats.INCONCLUSIVE)}}
                rows.append(row)
                print(row, flush=True)
    return {"sims_per_row": a.sims, "rows": rows}

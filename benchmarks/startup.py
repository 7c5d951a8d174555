"""Start-up cost of the CLI and of a full bench, and proof that TensorFlow is never imported.

Wall time of several runs each (subprocesses, as a user would type them):

- ``mobiledeploy --help``
- ``mobiledeploy bench --help``           (goal: under 0.3 s)
- ``mobiledeploy bench <MobileNet V1 0.25 @128 .tflite> --runs 20 --warmup 2``  (full bench, one child)
- ``python -c "import tensorflow"``     (what the bench path avoids, for scale)
- ``python -c pass`` and ``python -c "import click"`` (the floor any CLI pays)

TensorFlow check: ``python -X importtime`` (PYTHONPROFILEIMPORTTIME=1) on the two CLI
commands, whose import lists must not contain tensorflow or keras, and the child's own
``"tensorflow" in sys.modules`` report. Results: benchmarks/results/startup.json.

    .venv/bin/python benchmarks/startup.py [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from harness_overhead import RESULTS, build_models, conditions, model_paths  # noqa: E402

BIN = Path(sys.executable).parent / "mobiledeploy"


def wall(cmd: list[str], runs: int, env=None) -> dict:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        times.append(time.perf_counter() - t0)
    return {"cmd": " ".join(Path(c).name if i == 0 else c for i, c in enumerate(cmd)), "runs": runs,
            "median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
            "max_s": round(max(times), 3)}


def heavy_imports(cmd: list[str]) -> list[str]:
    env = dict(os.environ, PYTHONPROFILEIMPORTTIME="1")
    err = subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True).stderr
    mods = {line.rsplit("|", 1)[-1].strip() for line in err.splitlines() if line.startswith("import time:")}
    return sorted(m for m in mods if m.split(".")[0] in ("tensorflow", "keras", "tf2onnx", "tf_keras"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    build_models(((0.25, 128),))
    model = model_paths(0.25, 128)["tflite"]
    before = conditions()
    bench_cmd = [str(BIN), "bench", str(model), "--runs", "20", "--warmup", "2"]
    rows = [wall([sys.executable, "-c", "pass"], args.runs),  # the interpreter alone, for scale
            wall([sys.executable, "-c", "import click"], args.runs),
            wall([str(BIN), "--help"], args.runs), wall([str(BIN), "bench", "--help"], args.runs),
            wall(bench_cmd, args.runs), wall([sys.executable, "-c", "import tensorflow"], max(2, args.runs // 3))]
    for r in rows:
        print(f"{r['cmd']:<70} median {r['median_s']:6.3f} s  min {r['min_s']:6.3f} s  max {r['max_s']:6.3f} s")
    tf_in = {"bench --help": heavy_imports([str(BIN), "bench", "--help"]),
             "bench (parent)": heavy_imports(bench_cmd)}
    from mobiledeploy.bench.core import BenchSettings, _run_child

    child = _run_child(model, BenchSettings(warmup=1, runs=3))
    tf_in["bench (child)"] = ["tensorflow"] if child.get("tensorflow_imported") else []
    for where, mods in tf_in.items():
        print(f"TensorFlow/Keras imported by {where}: {'NO' if not mods else ', '.join(mods)}")
    from mobiledeploy import io

    help_s = rows[3]["median_s"]
    ok = not any(tf_in.values()) and help_s < 0.3
    io.write_json(RESULTS / "startup.json", {"conditions_before": before, "loadavg_after": list(os.getloadavg()),
                                             "wall": rows, "heavy_imports": tf_in,
                                             "bench_help_under_0_3_s": help_s < 0.3})
    print(f"wrote {RESULTS / 'startup.json'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

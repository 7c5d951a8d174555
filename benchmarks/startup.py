"""Start-up cost of the CLI and of a full bench, and proof that TensorFlow is never imported.

Wall time (and the user + system CPU time, which load on a shared machine inflates less) of
several runs each (subprocesses, as a user would type them):

- ``mobiledeploy --help``
- ``mobiledeploy bench --help``           (goal: under 0.3 s)
- ``mobiledeploy bench <MobileNet V1 0.25 @128 .tflite> --runs 20 --warmup 2``  (full bench, one child)
- ``mobiledeploy estimate --arch mobilenet_v1 --alpha 0.5 --res 160 --target pixel4``  (goal: under 1 s;
  the layers are laid out without TensorFlow) and, for scale, the same estimate from the Keras-built
  model (``cost.info.keras_config_stats``, the path it took before: imports TensorFlow)
- ``python -c "import tensorflow"``     (what the bench path avoids, for scale)
- ``python -c pass`` and ``python -c "import click"`` (the floor any CLI pays)

TensorFlow check: ``python -X importtime`` (PYTHONPROFILEIMPORTTIME=1) on the CLI
commands, whose import lists must not contain tensorflow or keras, and the child's own
``"tensorflow" in sys.modules`` report. Results: benchmarks/results/startup.json.

    python -m benchmarks run startup [--runs 7]
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common.bench_models import build_models, conditions, model_paths

KIND = "regression"
BIN = Path(sys.executable).parent / "mobiledeploy"


# The estimate as it ran before the TF-free layer lists: the layers read from the Keras-built model.
KERAS_PATH = ("import sys; from mobiledeploy.cost import info; info.config_stats = info.keras_config_stats; "
              "from mobiledeploy.cli import cli; sys.exit(cli.main(sys.argv[1:]))")
ESTIMATE_ARGS = ["estimate", "--arch", "mobilenet_v1", "--alpha", "0.5", "--res", "160", "--target", "pixel4"]


def wall(cmd: list[str], runs: int, env=None, label: str | None = None) -> dict:
    times, cpu = [], []
    for _ in range(runs):
        r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        times.append(time.perf_counter() - t0)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # user + system CPU: less sensitive to load
        cpu.append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
    return {"cmd": label or " ".join(Path(c).name if i == 0 else c for i, c in enumerate(cmd)), "runs": runs,
            "median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
            "max_s": round(max(times), 3), "median_cpu_s": round(statistics.median(cpu), 3)}


def heavy_imports(cmd: list[str]) -> list[str]:
    env = dict(os.environ, PYTHONPROFILEIMPORTTIME="1")
    err = subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True).stderr
    mods = {line.rsplit("|", 1)[-1].strip() for line in err.splitlines() if line.startswith("import time:")}
    return sorted(m for m in mods if m.split(".")[0] in ("tensorflow", "keras", "tf2onnx", "tf_keras"))


def add_arguments(ap) -> None:
    ap.add_argument("--runs", type=int, default=7)


def run(args) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    build_models(((0.25, 128),))
    model = model_paths(0.25, 128)["tflite"]
    before = conditions()
    bench_cmd = [str(BIN), "bench", str(model), "--runs", "20", "--warmup", "2"]
    estimate_cmd = [str(BIN), *ESTIMATE_ARGS]
    keras_estimate = [sys.executable, "-c", KERAS_PATH, *ESTIMATE_ARGS]
    same = [subprocess.run(c, check=True, capture_output=True, text=True).stdout
            for c in (estimate_cmd, keras_estimate)]
    rows = [wall([sys.executable, "-c", "pass"], args.runs),  # the interpreter alone, for scale
            wall([sys.executable, "-c", "import click"], args.runs),
            wall([str(BIN), "--help"], args.runs), wall([str(BIN), "bench", "--help"], args.runs),
            wall(bench_cmd, args.runs), wall(estimate_cmd, args.runs),
            wall(keras_estimate, max(2, args.runs // 3),
                 label="mobiledeploy " + " ".join(ESTIMATE_ARGS) + "  [layers from the Keras model]"),
            wall([sys.executable, "-c", "import tensorflow"], max(2, args.runs // 3))]
    for r in rows:
        print(f"{r['cmd']:<70} median {r['median_s']:6.3f} s  min {r['min_s']:6.3f} s  max {r['max_s']:6.3f} s  "
              f"CPU {r['median_cpu_s']:6.3f} s")
    tf_in = {"bench --help": heavy_imports([str(BIN), "bench", "--help"]),
             "bench (parent)": heavy_imports(bench_cmd), "estimate --arch": heavy_imports(estimate_cmd)}
    from mobiledeploy.bench.core import BenchSettings, _run_child

    child = _run_child(model, BenchSettings(warmup=1, runs=3))
    tf_in["bench (child)"] = ["tensorflow"] if child.get("tensorflow_imported") else []
    for where, mods in tf_in.items():
        print(f"TensorFlow/Keras imported by {where}: {'NO' if not mods else ', '.join(mods)}")
    from mobiledeploy import io

    help_s, estimate_s = rows[3]["median_s"], rows[5]["median_s"]
    print(f"estimate --arch output identical to the Keras path's: {same[0] == same[1]}")
    ok = not any(tf_in.values()) and help_s < 0.3 and estimate_s < 1.0 and same[0] == same[1]
    doc = {"conditions_before": before, "loadavg_after": list(os.getloadavg()),
           "wall": rows, "heavy_imports": tf_in, "bench_help_under_0_3_s": help_s < 0.3,
           "estimate_arch_under_1_s": estimate_s < 1.0, "estimate_arch_same_output_as_keras_path": same[0] == same[1]}
    return {**io.stamp(doc), "_exit": 0 if ok else 1}  # the command and commit: in the harness's run record

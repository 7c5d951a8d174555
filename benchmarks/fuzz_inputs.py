"""Byte-mutation fuzzing of every input mobiledeploy reads, through the real commands.

Seeds are the project's own outputs, made fresh in a work directory: an export of MobileNet
V1 alpha 0.25 at 32x32 (TFLite fp32/int8, ONNX fp32/int8, the float .keras, its
``manifest.json``), a budget file for it, a target profile (the shipped ``pixel4-big.toml``)
and a calibration CSV. Each format gets N mutants (default 500): bit flips, random bytes,
insertions, deletions, truncation, repeated chunks and, for text formats, hostile tokens
(``..``, absolute paths, ``nan``, ``inf``, ``-1``, ``0``, huge numbers, deep nesting).

Each mutant is fed to the command that reads that format:

    tflite / onnx / keras   mobiledeploy info FILE --no-layers
    manifest.json           mobiledeploy bench DIR --runs 1 --warmup 0 --timeout 20
    budget TOML             mobiledeploy check --budget FILE --artifacts DIR --skip latency,accuracy
    target TOML             mobiledeploy estimate model.tflite --target-file FILE --no-layers
    calibration CSV         mobiledeploy target calibrate --measurements FILE --out OUT

Commands run in a long-lived worker process (Click's CliRunner, so imports are paid once);
the parent gives each case a timeout and restarts the worker after a hang or a crash, so a
hang, a signal or a worker that dies is counted, never hidden. Counted per format: exit 0,
exit 1, exit 2, other exit codes, tracebacks (or "internal error" lines), hangs, crashes.
Results: benchmarks/results/fuzz_inputs.json, and a Markdown table on stdout.

    nice python -m benchmarks run fuzz_inputs [--n 500] [--formats tflite,onnx] [--timeout 60]
"""

from __future__ import annotations

import json
import os
import random
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import ROOT

KIND = "study"
FORMATS = ("tflite", "tflite_int8", "onnx", "onnx_int8", "keras", "manifest", "budget", "target", "calib_csv")
TOKENS = [b"..", b"../../etc/passwd", b"/etc/passwd", b"/dev/zero", b"nan", b"inf", b"-inf", b"-1", b"0",
          b"1e309", b"99999999999999999999", b"\x00", b"[[[[[[[[[[", b"{{{{{{{{", b'"', b"'", b"\\", b"\n",
          b"=", b",", b"-", b"1e9"]

WORKER = r'''
import json, os, sys, traceback
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
from click.testing import CliRunner
from mobiledeploy.cli import cli
for line in sys.stdin:
    job = json.loads(line)
    os.chdir(job["cwd"])
    try:
        r = CliRunner().invoke(cli, job["args"])
        out = r.output
        if r.exception is not None and not isinstance(r.exception, SystemExit):
            out += "Traceback (CliRunner): " + "".join(traceback.format_exception(r.exception))
        res = {"code": r.exit_code, "out": out[-2000:]}
    except BaseException as e:
        res = {"code": -1, "out": "Traceback (worker): " + repr(e)}
    sys.stdout.write(json.dumps(res) + "\n")
    sys.stdout.flush()
'''


class Worker:
    """A long-lived CliRunner process; ``run`` returns (outcome, code, output tail)."""

    def __init__(self):
        self.p = None

    def start(self):
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.p = subprocess.Popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True, env=env, start_new_session=True)

    def stop(self):
        if self.p is not None:
            try:
                os.killpg(self.p.pid, 9)
            except OSError:
                pass
            self.p.wait()
            self.p = None

    def run(self, args: list[str], cwd: Path, timeout: float):
        if self.p is None:
            self.start()
        self.p.stdin.write(json.dumps({"args": args, "cwd": str(cwd)}) + "\n")
        self.p.stdin.flush()
        ready, _, _ = select.select([self.p.stdout], [], [], timeout)
        if not ready:
            self.stop()
            return "hang", None, ""
        line = self.p.stdout.readline()
        if not line:
            code = self.p.wait()
            self.p = None
            return ("crash" if code < 0 else "died"), code, ""
        res = json.loads(line)
        return "exit", res["code"], res["out"]


# ---------------------------------------------------------------- seeds


def make_seeds(work: Path) -> dict[str, Path]:
    """The project's own files to mutate, made with mobiledeploy itself."""
    from mobiledeploy.export.pipeline import ExportConfig, export_model

    exp = work / "export"
    export_model(ExportConfig(arch="mobilenet_v1", alpha=0.25, resolution=32, classes=10,
                              formats=("tflite", "onnx", "keras"), precisions=("fp32", "int8"), calib="random",
                              calib_samples=16, validate_samples=8, out=str(exp), strict=False))
    m = json.loads((exp / "manifest.json").read_text())
    by = {(a["format"], a["precision"]): exp / a["file"] for a in m["artifacts"]}
    seeds = {"tflite": by[("tflite", "fp32")], "tflite_int8": by[("tflite", "int8")],
             "onnx": by[("onnx", "fp32")], "onnx_int8": by[("onnx", "int8")], "keras": by[("keras", "fp32")]}
    # the manifest's directory holds one benchmarkable artifact, so valid mutants cost one child each
    mdir = work / "manifest_dir"
    mdir.mkdir()
    shutil.copy(seeds["tflite"], mdir / seeds["tflite"].name)
    shutil.copy(exp / m["source_model"]["file"], mdir / m["source_model"]["file"])
    one = {**m, "artifacts": [a for a in m["artifacts"] if a["file"] == seeds["tflite"].name]}
    (mdir / "manifest.json").write_text(json.dumps(one, indent=2))
    seeds["manifest"] = mdir / "manifest.json"
    budget = work / "budget.toml"
    budget.write_text(f'''# size budgets of the fuzz export
[[artifact]]
name = "tflite int8"
path = "{by[("tflite", "int8")].name}"
max_size_kb = 320

[[artifact]]
format = "onnx"
precision = "fp32"
max_size_kb = 2048
''')
    seeds["budget"] = budget
    target = work / "target.toml"
    shutil.copy(ROOT / "mobiledeploy" / "targets" / "pixel4-big.toml", target)
    seeds["target"] = target
    csv = work / "calib.csv"
    csv.write_text("model,precision,threads,latency_ms\n"
                   f"{seeds['tflite'].name},fp32,1,3.5\n{seeds['tflite_int8'].name},int8,1,1.9\n"
                   f"{seeds['onnx'].name},fp32,4,1.2\n")
    seeds["calib_csv"] = csv
    return seeds


# ---------------------------------------------------------------- mutation


def mutate(data: bytes, rng: random.Random, text: bool) -> bytes:
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3, 8))):
        op = rng.choice(("flip", "byte", "insert", "delete", "truncate", "repeat") + (("token",) * 3 if text else ()))
        n = len(b)
        if n == 0:
            b += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
            continue
        i = rng.randrange(n)
        if op == "flip":
            b[i] ^= 1 << rng.randrange(8)
        elif op == "byte":
            b[i] = rng.randrange(256)
        elif op == "insert":
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
        elif op == "delete":
            del b[i:i + rng.randrange(1, 64)]
        elif op == "truncate":
            del b[i:]
        elif op == "repeat":
            j = min(n, i + rng.randrange(1, 256))
            b[j:j] = b[i:j] * rng.randrange(1, 8)
        else:  # a hostile token over a value or beside a separator
            tok = rng.choice(TOKENS)
            b[i:i + rng.randrange(0, 8)] = tok
    return bytes(b)


def command(fmt: str, path: Path, seeds: dict, work: Path) -> tuple[list[str], Path]:
    if fmt in ("tflite", "tflite_int8", "onnx", "onnx_int8", "keras"):
        return ["info", str(path), "--no-layers"], work
    if fmt == "manifest":
        return ["bench", str(path.parent), "--runs", "1", "--warmup", "0", "--timeout", "20"], work
    if fmt == "budget":
        return ["check", "--budget", str(path), "--artifacts", str(seeds["tflite"].parent),
                "--skip", "latency,accuracy", "-q"], work
    if fmt == "target":
        return ["estimate", str(seeds["tflite"]), "--target-file", str(path), "--no-layers"], work
    return ["target", "calibrate", "--measurements", str(path), "--out", str(work / "fitted.toml")], work


def place(fmt: str, data: bytes, seeds: dict, case_dir: Path) -> Path:
    """Write a mutant where its command reads it; manifests go into a copy of their directory."""
    seed = seeds[fmt]
    if fmt == "manifest":
        d = case_dir / "exp"
        shutil.copytree(seed.parent, d)
        (d / "manifest.json").write_bytes(data)
        return d / "manifest.json"
    if fmt == "calib_csv":  # its rows name models beside it
        for k in ("tflite", "tflite_int8", "onnx"):
            os.link(seeds[k], case_dir / seeds[k].name)
    dest = case_dir / seed.name
    dest.write_bytes(data)
    return dest


def fuzz(fmt: str, seeds: dict, work: Path, n: int, timeout: float, worker: Worker, seed: int) -> dict:
    rng = random.Random(f"{seed}-{fmt}")
    data = seeds[fmt].read_bytes()
    text = fmt in ("manifest", "budget", "target", "calib_csv")
    counts = {"exit_0": 0, "exit_1": 0, "exit_2": 0, "exit_other": 0, "tracebacks": 0, "hangs": 0, "crashes": 0}
    examples: list[dict] = []
    # the unmutated seed must pass: otherwise every mutant would fail for the seed's reason
    case_dir = Path(tempfile.mkdtemp(prefix=f"{fmt}-seed-", dir=work))
    args, cwd = command(fmt, place(fmt, data, seeds, case_dir), seeds, case_dir)
    outcome, code, out = worker.run(args, cwd, timeout)
    shutil.rmtree(case_dir, ignore_errors=True)
    if (outcome, code) != ("exit", 0):
        raise SystemExit(f"{fmt}: the unmutated seed gives {outcome} {code}: {out[-800:]}")
    t0 = time.perf_counter()
    for k in range(n):
        case_dir = Path(tempfile.mkdtemp(prefix=f"{fmt}-{k}-", dir=work))
        path = place(fmt, mutate(data, rng, text), seeds, case_dir)
        args, cwd = command(fmt, path, seeds, case_dir)
        outcome, code, out = worker.run(args, cwd, timeout)
        bad = None
        if outcome == "hang":
            counts["hangs"] += 1
            bad = "hang"
        elif outcome in ("crash", "died"):
            counts["crashes"] += 1
            bad = f"worker {outcome} ({code})"
        else:
            key = f"exit_{code}" if code in (0, 1, 2) else "exit_other"
            counts[key] += 1
            if "Traceback" in out or "internal error" in out:
                counts["tracebacks"] += 1
                bad = "traceback"
            elif key == "exit_other":
                bad = f"exit {code}"
        if bad and len(examples) < 10:
            keep = work.parent / "fuzz_failures" / f"{fmt}-{k}{path.suffix}"
            keep.parent.mkdir(exist_ok=True)
            shutil.copy(path, keep)
            examples.append({"case": k, "what": bad, "args": args[:1], "output": out[-600:], "file": keep.name})
        shutil.rmtree(case_dir, ignore_errors=True)
    return {"format": fmt, "mutants": n, **counts, "seconds": round(time.perf_counter() - t0, 1),
            "examples": examples}


def markdown(rows: list[dict]) -> str:
    head = "| format | mutants | exit 0 | exit 1 | exit 2 | other | tracebacks | hangs | crashes | s |"
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        lines.append(f"| {r['format']} | {r['mutants']} | {r['exit_0']} | {r['exit_1']} | {r['exit_2']} | "
                     f"{r['exit_other']} | {r['tracebacks']} | {r['hangs']} | {r['crashes']} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def add_arguments(ap) -> None:
    ap.add_argument("--n", type=int, default=500, help="mutants per format")
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per case before it counts as a hang")
    ap.add_argument("--seed", type=int, default=0)



def run(args) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from mobiledeploy.bench.core import host_info, machine_conditions

    formats = [f for f in args.formats.split(",") if f]
    root = Path(tempfile.mkdtemp(prefix="mobiledeploy-fuzz-"))
    work = root / "work"
    work.mkdir()
    rows = []
    worker = Worker()
    try:
        seeds = make_seeds(work)
        for fmt in formats:  # in sequence: one worker, one core busy at a time
            rows.append(fuzz(fmt, seeds, work, args.n, args.timeout, worker, args.seed))
            r = rows[-1]
            print(f"{fmt}: {r['mutants']} mutants, exit 0/1/2/other {r['exit_0']}/{r['exit_1']}/{r['exit_2']}/"
                  f"{r['exit_other']}, tracebacks {r['tracebacks']}, hangs {r['hangs']}, crashes {r['crashes']} "
                  f"({r['seconds']:.0f} s)", file=sys.stderr, flush=True)
    finally:
        worker.stop()
    result = {"benchmark": "fuzz_inputs", "mutants_per_format": args.n, "seed": args.seed,
              "timeout_s": args.timeout, "host": host_info(), "conditions": machine_conditions(),
              "failures_kept_in": str(root / "fuzz_failures"), "formats": rows,
              "totals": {k: sum(r[k] for r in rows) for k in
                         ("mutants", "exit_0", "exit_1", "exit_2", "exit_other", "tracebacks", "hangs", "crashes")}}
    print(markdown(rows))
    shutil.rmtree(work, ignore_errors=True)
    return result

"""TensorFlow's start-up notices never reach a user, and nothing else is hidden with them.

The commands themselves are run with ``TF_ENABLE_ONEDNN_OPTS=1`` in ``test_terminal.py``
(``test_no_tensorflow_log_lines_on_stderr``); here: the filter, the one import door, and
``eval`` refusing bad options before it imports TensorFlow.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mobiledeploy.quiet import filtered_stderr, is_startup_notice

ROOT = Path(__file__).resolve().parents[1]

NOTICES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796605907.844105    4773 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders. To "
    "turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.",
    "I0000 00:00:1796605915.533472    5292 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use "
    "available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the appropriate "
    "compiler flags.",
]
KEPT = ["E0000 00:00:1796605915.533472    5292 loader.cc:12] could not load a kernel library",
        "Traceback (most recent call last):", "error: something real"]


def test_filter_drops_the_notices_and_passes_everything_else(capfd):
    assert all(is_startup_notice(n) for n in NOTICES)
    assert not any(is_startup_notice(k) for k in KEPT)
    with filtered_stderr():
        for line in NOTICES[:2] + KEPT[:1] + NOTICES[2:] + KEPT[1:]:
            os.write(2, (line + "\n").encode())  # as C++ writes: straight to the file descriptor
        os.write(2, b"\r\x1b[2K progress")  # a redraw without a newline is not held back
    err = capfd.readouterr().err
    assert err == "\n".join(KEPT) + "\n\r\x1b[2K progress"


def _tensorflow_imports(path: Path) -> list[str]:
    """Imports of tensorflow/keras/tf2onnx in ``path`` not preceded, in their function, by the quiet door."""
    tree = ast.parse(path.read_text(), filename=str(path))
    bad = []

    def heavy(node) -> bool:
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        return any(n.split(".")[0] in ("tensorflow", "keras", "tf2onnx") for n in names)

    def door_lines(fn) -> list[int]:
        return [c.lineno for c in ast.walk(fn) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)
                and c.func.id in ("import_tensorflow", "import_keras")]

    funcs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    inside = set()
    for fn in funcs:
        doors = door_lines(fn)
        for node in ast.walk(fn):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and heavy(node):
                inside.add(id(node))
                if not any(line < node.lineno for line in doors):
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    bad += [f"{path.relative_to(ROOT)}:{n.lineno}" for n in ast.walk(tree)
            if isinstance(n, (ast.Import, ast.ImportFrom)) and heavy(n) and id(n) not in inside]
    return bad


def test_every_tensorflow_import_goes_through_the_quiet_door():
    files = [p for d in ("mobiledeploy", "scripts") for p in (ROOT / d).rglob("*.py")]
    door = ROOT / "mobiledeploy" / "quiet.py"
    bad = [b for p in files if p != door for b in _tensorflow_imports(p)]
    assert bad == [], f"import TensorFlow/Keras through mobiledeploy.quiet.import_tensorflow/import_keras: {bad}"


@pytest.fixture(scope="module")
def export_dir(tiny_keras, tmp_path_factory):
    """A directory holding a .keras model: evaluating it would import TensorFlow."""
    d = tmp_path_factory.mktemp("quiet-eval")
    tiny_keras.save(d / "m.keras")
    (d / "notes.txt").write_text("not data")
    return d


def test_eval_refuses_bad_options_before_importing_tensorflow(export_dir):
    cases = [["--limit", "0"], ["--limit", "-3"], ["--seed", "-1"], ["--label-pattern", "("],
             ["--data", str(export_dir / "missing.npz")], ["--data", str(export_dir / "notes.txt")],
             ["--per-layer", "--source-model", str(export_dir / "notes.txt")]]
    script = ("import json, sys\nfrom mobiledeploy.cli import cli\n"
              "codes = [cli.main(['eval', sys.argv[1], *a], standalone_mode=False) for a in json.loads(sys.argv[2])]\n"
              "print(codes, 'tensorflow' in sys.modules)\n")
    import json

    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    env.update(TF_ENABLE_ONEDNN_OPTS="1", PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-c", script, str(export_dir), json.dumps(cases)], capture_output=True,
                       text=True, env=env, timeout=120)
    assert p.stdout.split("\n")[0] == f"{[2] * len(cases)} False", (p.stdout, p.stderr)  # refused, no TensorFlow
    lines = p.stderr.strip().splitlines()
    assert len(lines) == len(cases) and all(ln.startswith("error: ") for ln in lines), p.stderr  # one line each
    for needle, line in zip(("--limit", "--limit", "--seed", "--label-pattern", "--data", "--data",
                             "--source-model"), lines):
        assert needle in line, (needle, line)

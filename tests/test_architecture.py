"""The package tree is the architecture: no import cycles between modules."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "mobiledeploy"


def _imports() -> dict[str, set[str]]:
    mods: dict[str, set[str]] = {}
    for f in ROOT.rglob("*.py"):
        name = ".".join(("mobiledeploy", *f.relative_to(ROOT).with_suffix("").parts)).removesuffix(".__init__")
        deps: set[str] = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mobiledeploy"):
                deps |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("mobiledeploy")}
        mods[name] = deps
    return {m: {d for d in deps if d in mods and d != m} for m, deps in mods.items()}


def test_no_import_cycles():
    graph, done, cycles = _imports(), set(), []

    def visit(m: str, stack: list[str]) -> None:
        if m in stack:
            cycles.append(" -> ".join(stack[stack.index(m):] + [m]))
            return
        if m not in done:
            done.add(m)
            for d in sorted(graph[m]):
                visit(d, stack + [m])

    assert len(graph) > 40  # the whole package was read
    for m in sorted(graph):
        visit(m, [])
    assert cycles == []


# ---------------------------------------------------------------- registries: one row each

class MatmulSession:
    """A test double runtime: a ``.npy`` weight matrix W is a model computing x @ W."""

    runtime = "matmul"

    def __init__(self, path, *, threads=None, **_ignored):
        import numpy as np

        from mobiledeploy.runtimes import TensorSpec

        self.path, self.threads, self.w = path, threads, np.load(path)
        self.inputs = [TensorSpec("x", (1, self.w.shape[0]), np.dtype(np.float32))]
        self.outputs = [TensorSpec("y", (1, self.w.shape[1]), np.dtype(np.float32))]

    def input_shape(self, name):
        return (1, self.w.shape[0])

    def set_inputs(self, feeds):
        self._x = feeds["x"]

    def invoke(self):
        self._y = self._x @ self.w

    def get_outputs(self):
        return [self._y]


def test_a_new_runtime_is_one_registry_row(tmp_path, monkeypatch):
    import numpy as np

    from mobiledeploy import runtimes
    from mobiledeploy.models.artifacts import resolve_models

    monkeypatch.setitem(runtimes.RUNTIMES, "matmul", runtimes.Runtime("matmul", "npy", "numpy", MatmulSession, label="NumPy", suffixes=(".npy",)))
    w = np.arange(6, dtype=np.float32).reshape(3, 2)
    np.save(tmp_path / "m.npy", w)
    (ref,) = resolve_models([str(tmp_path / "m.npy")])
    assert (ref.format, ref.runtime) == ("npy", "matmul")
    x = np.ones((4, 3), np.float32)
    out = runtimes.predict(runtimes.open_session(tmp_path / "m.npy"), x)
    np.testing.assert_array_equal(out, x @ w)


def fp32_tflite_batch1(model, precision, recipe, out_dir, stem):
    """A test double export format: the TFLite fp32 converter under another name and suffix."""
    from mobiledeploy.export.formats import FORMATS
    from mobiledeploy.export.formats.tflite import converter_for

    path = Path(out_dir) / FORMATS["tflite_b1"].filename(stem, precision)
    path.write_bytes(converter_for(model, precision, recipe).convert())
    return path


convert = fp32_tflite_batch1  # the format row names this module; Format.converter() imports `convert`


def test_a_new_export_format_is_one_registry_row(tiny_keras, tmp_path, monkeypatch):
    import json

    from mobiledeploy.export.formats import FORMATS, Format
    from mobiledeploy.export.pipeline import ExportConfig, export_model

    monkeypatch.setitem(FORMATS, "tflite_b1", Format("tflite_b1", ".b1.tflite", __name__, ("fp32",), "litert"))
    src = tmp_path / "m.keras"
    tiny_keras.save(src)
    res = export_model(ExportConfig(model_path=str(src), formats=("tflite_b1",), precisions=("fp32",), calib="random",
                                    calib_samples=4, validate_samples=4, out=str(tmp_path / "out")))
    (art,) = json.loads(res.manifest_path.read_text())["artifacts"]
    assert art["format"] == "tflite_b1" and art["file"].endswith("_fp32.b1.tflite")
    assert art["validation"]["status"] == "pass"  # validated on its runtime against Keras like the others

"""The package tree is the architecture: no import cycles between modules, and no package
imports one that docs/architecture.md places above it."""

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


# ---------------------------------------------------------------- floors: the order docs/architecture.md states

DOC = ROOT.parent / "docs" / "architecture.md"
ENTRY = {"mobiledeploy", "mobiledeploy.__main__"}  # the version and `python -m mobiledeploy`: above every floor


def _floors() -> dict[str, int]:
    """{package or top-level module: floor} from the fenced block under "## Floors", top floor 0."""
    text = DOC.read_text().split("\n## Floors", 1)[1].split("```", 2)[1]
    floors = {}
    for level, line in enumerate(ln.split("#")[0].strip() for ln in text.splitlines()):
        for name in filter(None, (n.strip() for n in line.split(","))):
            assert name not in floors, f"{name} is placed twice in docs/architecture.md"
            floors[name] = level
    return floors


def _all_imports() -> list[tuple[str, str, int]]:
    """(module, imported mobiledeploy module, line) for every import, at the top or inside a
    function, including relative ones and those under TYPE_CHECKING."""
    out = []
    for f in ROOT.rglob("*.py"):
        parts = f.relative_to(ROOT).with_suffix("").parts
        name = ".".join(("mobiledeploy", *parts)).removesuffix(".__init__")
        package = name.split(".") if f.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in node.names] if base == "mobiledeploy" else [base]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            out += [(name, t, node.lineno) for t in targets if t.split(".")[0] == "mobiledeploy"]
    return out


def _floor_name(module: str) -> str:
    return module if module in ENTRY else module.split(".")[1]


def test_every_package_and_module_has_a_floor():
    floors = _floors()
    names = {_floor_name(m) for m, _, _ in _all_imports()} | {
        p.stem for p in ROOT.iterdir() if (p.suffix == ".py" or (p / "__init__.py").exists())} - {"__init__", "__main__"}
    assert len(floors) > 10  # the block was read
    assert sorted(names - set(floors) - ENTRY) == []  # a new package or module is placed in docs/architecture.md
    assert sorted(set(floors) - names) == []  # and the document names nothing that is gone


def test_no_module_imports_a_floor_above_its_own():
    """A package imports only packages on floors below its own (docs/architecture.md, "Floors"):
    data flows down the tree, never back up, and packages on one floor do not import each other."""
    floors, bad = _floors(), []
    for module, target, line in _all_imports():
        src, dst = _floor_name(module), _floor_name(target)
        if src in ENTRY or src == dst or dst not in floors:
            continue
        if floors[dst] <= floors[src]:
            bad.append(f"{module}:{line} imports {target} ({dst} is not below {src})")
    assert bad == []


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


def fp32_tflite_batch1(model, precision, recipe, calibration, out_dir, stem):
    """A test double export format: the TFLite fp32 converter under another name and suffix."""
    from mobiledeploy.export.formats import FORMATS
    from mobiledeploy.export.formats.tflite import converter_for

    path = Path(out_dir) / FORMATS["tflite_b1"].filename(stem, precision)
    path.write_bytes(converter_for(model, precision, recipe, calibration).convert())
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

"""The import contract: the core imports no Qt and no napari, and the packages import downwards only.

Checked on the source (every ``import``, function-local ones included, since a local import is
still a dependency), so it needs no import-linter and runs in the README's test command.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "napari_ssl_seg"

#: Bottom to top: a module may import its own layer's modules and those of the layers below.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"errors", "method_names", "intensity", "progress", "__init__"}),
    frozenset({"io", "runtime", "plotting", "sample_data", "shipped_models"}),
    frozenset({"networks"}),
    frozenset({"store"}),
    frozenset({"inference", "cohort"}),
    frozenset({"methods"}),
    frozenset({"evaluation"}),
    frozenset({"training"}),
    frozenset({"active"}),
    frozenset({"cli"}),
    # The napari layer: thin, on top of the core, never imported by it.
    frozenset({"layers", "widgets", "_reader", "_writer", "_sample_data", "_widget"}),
)
GUI_MODULES = ("qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari", "superqt", "magicgui", "vispy")
NAPARI_LAYER = LAYERS[-1]
#: "A module over about 400 lines is a sign to split" (the developers' guide).
MODULE_LINES = 400


def top_level(path: Path, package: Path = PACKAGE) -> str:
    """The first component under the package: ``training`` for training/loop.py, ``cli`` for cli/."""
    return path.relative_to(package).parts[0].removesuffix(".py")


def imports(path: Path) -> list[tuple[str, int]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
        elif isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
    return found


def layer_of(name: str) -> int:
    for index, members in enumerate(LAYERS):
        if name in members:
            return index
    raise AssertionError(f"napari_ssl_seg/{name} is in no layer of the import contract: add it to LAYERS")


def contract_breaches(package: Path = PACKAGE) -> list[str]:
    breaches = []
    for path in sorted(package.rglob("*.py")):
        own = top_level(path, package)
        for module, line in imports(path):
            where = f"{path.relative_to(package.parent)}:{line}"
            if own not in NAPARI_LAYER and module.split(".")[0] in GUI_MODULES:
                breaches.append(f"{where}: the core imports {module}")
            if module.startswith("napari_ssl_seg."):
                target = module.split(".")[1]
                low, high = layer_of(own), layer_of(target)
                if target != own and high > low:
                    breaches.append(f"{where}: {own} (layer {low}) imports {module} (layer {high})")
    return breaches


def test_every_package_is_placed_in_a_layer():
    for path in PACKAGE.iterdir():
        if path.name.endswith(".py") or (path.is_dir() and (path / "__init__.py").exists()):
            layer_of(top_level(path))


def test_the_core_imports_no_gui_and_the_layers_import_downwards():
    assert contract_breaches() == []


def test_the_contract_catches_a_core_module_importing_qt(tmp_path):
    copy = tmp_path / "napari_ssl_seg"
    (copy / "store").mkdir(parents=True)
    (copy / "store" / "__init__.py").write_text("", encoding="utf-8")
    leak = "def show():\n    from qtpy.QtWidgets import QMessageBox\n"  # a local import counts too
    (copy / "store" / "leak.py").write_text(leak, encoding="utf-8")
    (copy / "io").mkdir()
    (copy / "io" / "up.py").write_text("import napari_ssl_seg.training.loop\n", encoding="utf-8")
    breaches = contract_breaches(copy)
    assert any("store/leak.py:2: the core imports qtpy.QtWidgets" in b for b in breaches), breaches
    assert any("io/up.py:1: io (layer 1) imports napari_ssl_seg.training.loop" in b for b in breaches), breaches


def test_no_module_is_over_the_size_where_it_should_split():
    long = {
        str(path.relative_to(PACKAGE)): lines
        for path in PACKAGE.rglob("*.py")
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MODULE_LINES
    }
    assert long == {}


def test_no_test_module_imports_another():
    """Shared builders live in helpers.py, gui_helpers.py and conftest.py: a test module is nobody's library."""
    tests = Path(__file__).resolve().parent
    offenders = [
        f"{path.relative_to(tests)}:{line} imports {module}"
        for path in sorted(tests.rglob("test_*.py"))
        for module, line in imports(path)
        if module.split(".")[-1].startswith("test_")
    ]
    assert offenders == []


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path) -> list[str]:
    """Every module an import statement may mean: ``from a.b import c`` gives ``a.b.c``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.extend(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
    return found


def module_cycles(package: Path = PACKAGE) -> list[list[str]]:
    """Import cycles between modules, function-local imports included (a local import only hides one)."""
    modules = {module_name(path, package): path for path in package.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for imported in imported_names(path):
            # "from pkg import mod, thing" names a submodule or a member: take the longest module.
            target = imported
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                graph[name].add(target)
    cycles, done = [], set()
    for start in sorted(graph):
        stack, on_path = [(start, iter(sorted(graph[start])))], [start]
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                on_path.pop()
                done.add(node)
            elif child in on_path:
                cycle = on_path[on_path.index(child) :]
                first = cycle.index(min(cycle))
                cycle = cycle[first:] + cycle[:first]
                if cycle not in cycles:
                    cycles.append(cycle)
            elif child not in done:
                stack.append((child, iter(sorted(graph[child]))))
                on_path.append(child)
    return cycles


def test_no_module_imports_form_a_cycle():
    assert module_cycles() == []


def test_the_cycle_check_finds_a_cycle_through_a_local_import(tmp_path):
    copy = tmp_path / "napari_ssl_seg"
    (copy / "io").mkdir(parents=True)
    (copy / "io" / "__init__.py").write_text("", encoding="utf-8")
    (copy / "io" / "read.py").write_text("from napari_ssl_seg.io.dicom import read_series\n", encoding="utf-8")
    (copy / "io" / "dicom.py").write_text("def f():\n    from napari_ssl_seg.io import read\n", encoding="utf-8")
    assert module_cycles(copy) == [["napari_ssl_seg.io.dicom", "napari_ssl_seg.io.read"]]

"""The import rule of docs/architecture.md, checked on the source: no cycles, no back-edges.

Every ``import`` and ``from ... import`` in ``src/intriguing`` counts, wherever it stands (module
level, inside a function, under ``if TYPE_CHECKING``): a lazy import is still a dependency.
``from pkg import name`` depends on the submodule ``pkg.name`` when there is one, else on ``pkg``
(its ``__init__``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "intriguing"

# Layers, lowest first: a module may import its own layer and the layers below it, never above.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"", "errors", "_io", "paths", "progress"}),  # "" is intriguing/__init__.py
    frozenset({"data"}),
    frozenset({"models"}),
    frozenset({"attacks"}),
    frozenset({"training"}),
    frozenset({"analysis"}),
    frozenset({"inputs"}),  # inputs.py: one way in for any model and data (zoo, user, files)
    frozenset({"report"}),
    frozenset({"experiments"}),
    frozenset({"cli"}),
)


def module_files(src: Path = SRC) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (packages by their __init__)."""
    found: dict[str, Path] = {}
    for path in sorted((src / PACKAGE).rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _targets(node: ast.AST, module: str, is_package: bool, known: set[str]) -> Iterator[str]:
    """The package's modules that one import statement depends on."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            name = alias.name
            while name and name not in known:  # "import a.b.c" where c is no module
                name = name.rpartition(".")[0]
            if name:
                yield name
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            anchor = module.split(".")
            anchor = anchor if is_package else anchor[:-1]
            anchor = anchor[: len(anchor) - node.level + 1]
            base = ".".join([*anchor, base] if base else anchor)
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            if sub in known:
                yield sub
            elif base in known:
                yield base


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """Module -> the modules of the package it imports (self-imports dropped)."""
    files = module_files(src)
    known = set(files)
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        deps = {
            target
            for node in ast.walk(tree)
            for target in _targets(node, module, is_package, known)
        }
        graph[module] = deps - {module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def layer_of(module: str) -> int:
    """The index in :data:`LAYERS` of a module's top-level folder (or shared module)."""
    top = module.split(".")[1] if "." in module else ""
    for rank, members in enumerate(LAYERS):
        if top in members:
            return rank
    raise AssertionError(f"{module}: its folder {top!r} is in no layer; add it to LAYERS")


def back_edges(graph: dict[str, set[str]]) -> list[str]:
    """``a -> b`` for every import of a higher layer's module ``b`` from a lower layer's ``a``."""
    return sorted(
        f"{a} -> {b}" for a, deps in graph.items() for b in deps if layer_of(b) > layer_of(a)
    )


def check_layers(src: Path = SRC) -> None:
    """Raise AssertionError naming the first module whose folder is in no layer."""
    for module in import_graph(src):
        layer_of(module)


def test_every_module_is_in_a_layer() -> None:
    check_layers()


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_no_back_edges_between_layers() -> None:
    assert back_edges(import_graph()) == []


# ------------------------------------------------------------------- the checker on known trees
def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / PACKAGE / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return tmp_path


def test_checker_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    src = _tree(
        tmp_path,
        {
            "__init__.py": "",
            "errors.py": "",
            "data/__init__.py": "from .mnist import load\n",
            "data/mnist.py": "def load():\n    from intriguing.cli import main\n",
            "cli/__init__.py": "",
            "cli/main.py": "from intriguing.data import mnist\nimport intriguing.errors\n",
        },
    )
    graph = import_graph(src)
    assert graph["intriguing.data"] == {"intriguing.data.mnist"}
    assert graph["intriguing.data.mnist"] == {"intriguing.cli.main"}
    assert graph["intriguing.cli.main"] == {"intriguing.data.mnist", "intriguing.errors"}
    assert cycles(graph) == [["intriguing.cli.main", "intriguing.data.mnist"]]
    assert back_edges(graph) == ["intriguing.data.mnist -> intriguing.cli.main"]


def test_checker_passes_a_clean_tree(tmp_path: Path) -> None:
    src = _tree(
        tmp_path,
        {
            "__init__.py": "",
            "errors.py": "",
            "models/__init__.py": "from intriguing.models.zoo import build\n",
            "models/zoo.py": "from intriguing.errors import X\n",
            "training/__init__.py": "",
            "training/api.py": "from intriguing.models import build\n",
        },
    )
    graph = import_graph(src)
    assert graph["intriguing.training.api"] == {"intriguing.models"}
    assert cycles(graph) == [] and back_edges(graph) == []


def test_unknown_folder_is_an_error(tmp_path: Path) -> None:
    src = _tree(tmp_path, {"__init__.py": "", "newfolder/__init__.py": ""})
    with pytest.raises(AssertionError, match="in no layer"):
        check_layers(src)

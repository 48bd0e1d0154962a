"""The package's structure: no import cycle between its parts, and no private name imported across modules."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "tinycl"


def _part(module: str) -> str:
    """The unit of the layering: a subpackage (tinycl.model, tinycl.quant, ...) or a top-level module."""
    return module.split(".")[1] if module.count(".") else module


def _imports():
    """(importing module, imported module, imported names) for every `from tinycl... import` in the package."""
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(("tinycl", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                       and ast.unparse(block.test).endswith("TYPE_CHECKING") for n in ast.walk(block)}
        for node in ast.walk(tree):  # imports for type checkers only never run, so they make no cycle
            if (isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tinycl.")
                    and id(node) not in typing_only):
                yield module, node.module, [a.name for a in node.names]


def test_no_import_cycle_between_the_parts_of_the_package():
    graph: dict[str, set[str]] = {}
    for src, dst, _ in _imports():
        a, b = _part(src), _part(dst)
        if a != b:
            graph.setdefault(a, set()).add(b)

    def cycle_from(node, path):
        for nxt in graph.get(node, ()):
            if nxt in path:
                return path[path.index(nxt):] + [nxt]
            found = cycle_from(nxt, path + [nxt])
            if found:
                return found
        return None

    for start in graph:
        cycle = cycle_from(start, [start])
        assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_no_private_name_is_imported_across_modules():
    private = [(src, dst, name) for src, dst, names in _imports() for name in names
               if name.startswith("_") and name != "__version__"]
    assert not private, f"private names imported across modules: {private}"

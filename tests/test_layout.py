"""The package layout holds: one public face per package, no private reach-ins, no cycles.

`router/<package>/` keeps its modules private (`_name.py`) behind a small
`__init__`; anything outside the package imports the `__init__`'s names only.
These checks read the source (no import), so they also cover modules a test run
never loads.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("router", "training", "bench", "tests")


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__")


def package_of(module: str) -> str:
    """`router.predictor._model` belongs to `router.predictor`; a flat module to itself."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) >= 3 and parts[0] in ("router", "training") else module


def runtime_imports(tree: ast.Module) -> Iterator[ast.ImportFrom]:
    """Every `from X import ...`, at any depth, except under `if TYPE_CHECKING:`."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node
        stack.extend(ast.iter_child_nodes(node))


def sources() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text(encoding="utf-8"))
            for top in SOURCES for p in sorted((REPO_ROOT / top).rglob("*.py"))}


def test_no_private_module_or_name_is_imported_across_packages() -> None:
    reach_ins = []
    for module, tree in sources().items():
        for node in runtime_imports(tree):
            assert node.module is not None
            if node.module.split(".")[0] not in ("router", "training"):
                continue
            if package_of(node.module) == package_of(module):
                continue
            private_module = any(part.startswith("_") for part in node.module.split("."))
            private_names = [a.name for a in node.names
                             if a.name.startswith("_") and not a.name.startswith("__")]
            if private_module or private_names:
                reach_ins.append(f"{module}: from {node.module} import "
                                 f"{', '.join(a.name for a in node.names)}")
    assert not reach_ins, "imports of private names across packages:\n" + "\n".join(reach_ins)


def test_router_and_training_have_no_import_cycle() -> None:
    trees = {m: t for m, t in sources().items() if m.split(".")[0] in ("router", "training")}
    graph: dict[str, set[str]] = {m: set() for m in trees}
    for module, tree in trees.items():
        for node in runtime_imports(tree):
            assert node.module is not None
            for alias in node.names:
                target = f"{node.module}.{alias.name}"
                target = target if target in trees else node.module
                if target in trees and target != module:
                    graph[module].add(target)
    # A package's __init__ imports its own modules; a module importing its
    # package's face would close a cycle through it, which is what we look for.
    cycles = []
    state: dict[str, int] = {}  # 1 = on the path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*path[path.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_every_router_package_has_a_public_face() -> None:
    packages = [p.parent for p in (REPO_ROOT / "router").glob("*/__init__.py")]
    assert {p.name for p in packages} >= {"api", "cache", "fake", "outcome_log", "predictor",
                                           "upstream"}
    for package in packages:
        tree = ast.parse((package / "__init__.py").read_text(encoding="utf-8"))
        assert ast.get_docstring(tree), f"{package.name}/__init__.py has no docstring"
        exported = [node for node in tree.body
                    if isinstance(node, ast.Assign | ast.AnnAssign)
                    and "__all__" in ast.unparse(node).split("=")[0]]
        assert exported, f"{package.name}/__init__.py has no __all__"

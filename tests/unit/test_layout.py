"""The import graph of ``src/portway`` has no cycles, between packages or modules,
and keeps DESIGN.md's layers apart.

The graph is read with :mod:`ast` from every import statement that runs: at the
top of a module and inside functions alike, since each says that one module
needs another. Imports under ``if TYPE_CHECKING:`` are left out: they never run
(``portway.sdk`` names ``load_model_dir`` that way, and imports it lazily). A
package is a folder of ``src/portway`` (``backends`` and ``backends/llamacpp``
are two); a module at the top of ``portway`` counts as a package of its own.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import portway

ROOT = Path(portway.__file__).parent
PACKAGE = "portway"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _run_time_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """The nodes of ``tree``, leaving out the bodies of ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        test = node.test if isinstance(node, ast.If) else None
        if isinstance(test, ast.Name) and test.id == "TYPE_CHECKING":
            continue
        yield node
        yield from _run_time_nodes(node)


def _imported(path: Path) -> Iterator[str]:
    """Every portway module (or package) that ``path`` imports when it runs."""
    is_package = path.name == "__init__.py"
    here = _module_name(path).split(".")
    for node in _run_time_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here if is_package else here[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            yield target
            yield from (f"{target}.{alias.name}" for alias in node.names)


def _existing(name: str, modules: set[str]) -> str | None:
    """``name`` if it is a portway module; ``a.b`` for ``from a import b`` of a name."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _package(module: str) -> str:
    """The folder holding ``module``; a top-level module is its own package."""
    path = ROOT.parent.joinpath(*module.split("."))
    if path.is_dir() or module.count(".") == 1:
        return module
    return module.rpartition(".")[0]


def module_graph() -> dict[str, set[str]]:
    paths = {_module_name(path): path for path in ROOT.rglob("*.py")}
    modules = set(paths)
    graph: dict[str, set[str]] = {}
    for module, path in paths.items():
        found = {_existing(name, modules) for name in _imported(path)}
        graph[module] = {name for name in found if name and name != module}
        graph[module] -= {name for name in graph[module] if module.startswith(f"{name}.")}
    return graph


def _coarsen(graph: dict[str, set[str]], key: Callable[[str], str]) -> dict[str, set[str]]:
    coarse: dict[str, set[str]] = {}
    for node, targets in graph.items():
        coarse.setdefault(key(node), set()).update(key(target) for target in targets)
    return {node: targets - {node} for node, targets in coarse.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as exc:
        return list(exc.args[1])
    return []


def test_the_module_graph_is_read() -> None:
    graph = module_graph()
    assert "portway.registry.catalog" in graph["portway.registry.models"] | set().union(
        *graph.values()
    )
    assert "portway.backends.base" in graph["portway.registry.models"]


def test_no_package_imports_one_that_imports_it_back() -> None:
    assert _cycle(_coarsen(module_graph(), _package)) == []


def test_no_module_imports_one_that_imports_it_back() -> None:
    assert _cycle(module_graph()) == []


NEVER_IMPORTS = {
    "portway.backends": ("portway.api", "portway.protocol", "portway.serving", "portway.store"),
    "portway.sdk": ("portway.api", "portway.serving"),
    "portway.runners": ("portway.api", "portway.serving"),
    "portway.store": ("portway.api", "portway.protocol", "portway.serving"),
}
"""DESIGN.md's rules: backends never read the wire models; the SDK and the runners
never import serving policy; storage knows no HTTP (sub-packages included)."""


def _within(package: str, top: str) -> bool:
    return package == top or package.startswith(f"{top}.")


def test_packages_keep_the_layers_apart() -> None:
    graph = _coarsen(module_graph(), _package)
    broken = sorted(
        (source, target)
        for source, targets in graph.items()
        for target in targets
        for top, banned in NEVER_IMPORTS.items()
        if _within(source, top) and any(_within(target, ban) for ban in banned)
    )
    assert broken == []

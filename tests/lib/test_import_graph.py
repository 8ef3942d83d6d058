"""No import circle inside lib/kaji: every kaji.* import of every module, parsed with ast.

Each import counts with where it sits: at module level (runs on import), inside a function,
under ``if TYPE_CHECKING:``, or as a ``lazy_import("kaji....")`` call. A cycle through
module-level imports alone breaks importing; a cycle closed by a deferred one only hides a
tangle (one module needs the other back) until the day the import moves. Both fail here, each
edge of a reported cycle named with its kind and line.
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[2] / "lib"

MODULE, FUNCTION, TYPE_CHECKING, LAZY = "module", "function", "type-checking", "lazy"


@dataclasses.dataclass(frozen=True)
class Edge:
    """One module importing another."""

    source: str
    target: str
    kind: str
    line: int

    def __str__(self) -> str:
        return f"{self.source} -[{self.kind}, line {self.line}]-> {self.target}"


def modules_under(lib: Path, package: str = "kaji") -> dict[str, Path]:
    """Every module of ``package`` under ``lib``, by dotted name."""
    found = {}
    for path in sorted((lib / package).rglob("*.py")):
        parts = path.relative_to(lib).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


_Import = ast.Import | ast.ImportFrom | ast.Call


def _imports(tree: ast.Module) -> Iterator[tuple[_Import, str]]:
    """Every import statement and lazy_import call, with the kind of place it sits in."""

    def visit(node: ast.AST, kind: str) -> Iterator[tuple[_Import, str]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, kind
            elif (
                isinstance(child, ast.Call)
                and isinstance(child.func, (ast.Name, ast.Attribute))
                and (child.func.id if isinstance(child.func, ast.Name) else child.func.attr)
                == "lazy_import"
            ):
                yield child, LAZY
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                yield from visit(child, FUNCTION)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                inner = FUNCTION if kind == FUNCTION else TYPE_CHECKING
                for statement in child.body:
                    yield from visit(ast.Module(body=[statement], type_ignores=[]), inner)
                for statement in child.orelse:
                    yield from visit(ast.Module(body=[statement], type_ignores=[]), kind)
            else:
                yield from visit(child, kind)

    yield from visit(tree, MODULE)


def _resolve(name: str, known: Iterable[str]) -> str | None:
    """The longest known module ``name`` names or lies in (``a.b.C`` -> ``a.b``)."""
    known = set(known)
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def import_edges(lib: Path, package: str = "kaji") -> list[Edge]:
    """Every import of one ``package`` module by another, found by parsing the sources."""
    modules = modules_under(lib, package)
    edges = []
    for source, path in modules.items():
        is_package = path.name == "__init__.py"
        for node, kind in _imports(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = source.split(".")
                    anchor = anchor[: len(anchor) - node.level + is_package]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets = [f"{base}.{alias.name}" for alias in node.names]
            elif node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    targets = [first.value]
            for target in targets:
                resolved = _resolve(target, modules)
                if resolved is not None and resolved != source:
                    edges.append(Edge(source, resolved, kind, node.lineno))
    return edges


def cycles(edges: Iterable[Edge]) -> list[list[Edge]]:
    """One cycle through each strongly connected group of modules (Tarjan), shortest found."""
    graph: dict[str, list[Edge]] = {}
    for edge in edges:
        graph.setdefault(edge.source, []).append(edge)
        graph.setdefault(edge.target, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for edge in graph[node]:
            if edge.target not in index:
                connect(edge.target)
                low[node] = min(low[node], low[edge.target])
            elif edge.target in stack:
                low[node] = min(low[node], index[edge.target])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [_shortest_cycle(graph, group) for group in groups]


def _shortest_cycle(graph: dict[str, list[Edge]], group: set[str]) -> list[Edge]:
    """A shortest cycle through the group's first module (breadth-first, inside the group)."""
    start = min(group)
    paths: dict[str, list[Edge]] = {start: []}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for edge in graph[node]:
                if edge.target == start:
                    return [*paths[node], edge]
                if edge.target in group and edge.target not in paths:
                    paths[edge.target] = [*paths[node], edge]
                    following.append(edge.target)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # pragma: no cover - Tarjan said so


def _report(found: list[list[Edge]]) -> str:
    return "\n".join("import cycle:\n  " + "\n  ".join(map(str, cycle)) for cycle in found)


def test_no_import_cycle_through_module_level_imports() -> None:
    found = cycles(e for e in import_edges(LIB) if e.kind == MODULE)
    assert not found, _report(found)


def test_no_import_cycle_even_through_function_type_checking_or_lazy_imports() -> None:
    found = cycles(import_edges(LIB))
    assert not found, _report(found)


# -- the checker itself --------------------------------------------------------------------


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / "kaji" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_the_checker_sees_a_cycle_closed_by_a_function_and_a_type_checking_import(
    tmp_path: Path,
) -> None:
    lib = _package(
        tmp_path,
        {
            "__init__.py": "",
            "host/__init__.py": "",
            "host/root.py": "def make():\n    from kaji.host.systemd import Manager\n",
            "host/systemd.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from kaji.host.root import Host\n"
            ),
        },
    )
    edges = import_edges(lib)
    assert {(e.source, e.target, e.kind) for e in edges} == {
        ("kaji.host.root", "kaji.host.systemd", FUNCTION),
        ("kaji.host.systemd", "kaji.host.root", TYPE_CHECKING),
    }
    assert not cycles(e for e in edges if e.kind == MODULE)
    (cycle,) = cycles(edges)
    assert [e.source for e in cycle] == ["kaji.host.root", "kaji.host.systemd"]
    assert "kaji.host.root -[function, line 2]-> kaji.host.systemd" in _report([cycle])


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from . import b\n", ("kaji.pkg.b", MODULE)),
        ("from .b import X\n", ("kaji.pkg.b", MODULE)),
        ("from .. import top\n", ("kaji.top", MODULE)),
        ("import kaji.pkg.b as b\n", ("kaji.pkg.b", MODULE)),
        ("from kaji.pkg import b\n", ("kaji.pkg.b", MODULE)),
        ("from kaji.pkg.b import thing\n", ("kaji.pkg.b", MODULE)),
        ("class C:\n    import kaji.top\n", ("kaji.top", MODULE)),
        ("b = lazy_import('kaji.pkg.b')\n", ("kaji.pkg.b", LAZY)),
        ("if TYPE_CHECKING:\n    pass\nelse:\n    import kaji.top\n", ("kaji.top", MODULE)),
        ("def f():\n    if TYPE_CHECKING:\n        import kaji.top\n", ("kaji.top", FUNCTION)),
    ],
)
def test_the_checker_resolves_each_import_form(
    tmp_path: Path, source: str, expected: tuple[str, str]
) -> None:
    lib = _package(
        tmp_path,
        {
            "__init__.py": "",
            "top.py": "",
            "pkg/__init__.py": "",
            "pkg/a.py": source,
            "pkg/b.py": "",
        },
    )
    assert [(e.target, e.kind) for e in import_edges(lib) if e.source == "kaji.pkg.a"] == [
        expected
    ]


def test_the_checker_resolves_relative_imports_in_a_package_init(tmp_path: Path) -> None:
    lib = _package(
        tmp_path, {"__init__.py": "", "pkg/__init__.py": "from . import b\n", "pkg/b.py": ""}
    )
    assert [(e.source, e.target) for e in import_edges(lib)] == [("kaji.pkg", "kaji.pkg.b")]

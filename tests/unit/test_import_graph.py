"""No import circle anywhere in the product's packages, type-only imports included: a module that needs
another's work takes data, not the object that calls it back (STYLE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("jobs", "api", "workers")


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    paths = {_module(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
                deps |= {t for t in targets if t in paths}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in paths}
        graph[name] = deps - {name}
    return graph


def _circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle, as the modules along it, or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        for dep in sorted(graph[node]):
            if found := visit(dep, [*path, node]):
                return found
        done.add(node)
        return None

    return next((c for n in sorted(graph) if (c := visit(n, []))), None)


def test_no_module_imports_itself_back() -> None:
    graph = _graph()
    assert len(graph) > 100  # the walk found the packages
    circle = _circle(graph)
    assert circle is None, " -> ".join(circle or [])


def test_the_check_finds_a_circle() -> None:
    assert _circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _circle({"a": {"b"}, "b": set()}) is None

"""The bench package's shape: no import cycle inside it, no import inside a function, and
nothing of it loaded by `kvstore serve`."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import kvstore.bench

PACKAGE = Path(kvstore.bench.__file__).parent


def _modules() -> dict[str, ast.Module]:
    return {p.stem: ast.parse(p.read_text()) for p in sorted(PACKAGE.glob("*.py"))}


def _bench_imports(tree: ast.Module) -> set[str]:
    """The kvstore.bench modules a module imports (`from kvstore.bench import x` counts x)."""
    out: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "kvstore.bench":
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("kvstore.bench."):
            out.add((node.module or "").split(".")[2])
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[2] for a in node.names if a.name.startswith("kvstore.bench.")}
    return out


def test_no_import_cycle() -> None:
    graph = {name: _bench_imports(tree) for name, tree in _modules().items()}
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join((*path, name))}"
        if name not in done:
            for dep in graph[name]:
                visit(dep, (*path, name))
            done.add(name)

    for name in graph:
        visit(name, ())
    assert graph["command"] and not any("command" in deps for deps in graph.values())


def test_no_import_inside_a_function() -> None:
    for name, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                inner = [n for n in ast.walk(node) if isinstance(n, ast.Import | ast.ImportFrom)]
                assert not inner, f"{name}.{node.name} imports at line {inner[0].lineno}"


def test_serve_loads_nothing_of_the_bench() -> None:
    code = (
        "import sys; from kvstore.cli.main import build_parser; build_parser(['serve']); "
        "print(sorted(m for m in sys.modules if m.startswith('kvstore.bench')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"

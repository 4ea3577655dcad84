"""The package's layering, read from its source (an AST walk, nothing imported):

- the core (errors, config, model, wire), store/ and cluster/ import no aiohttp.web;
- server/ imports nothing of cli/, bench/ or local/;
- no import cycle between kvstore's modules, and no import of a kvstore module inside a
  function (the way a cycle is usually dodged);
- `kvstore serve`'s command line loads nothing of local/, chaos or bench/.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "kvstore"
CORE = ("kvstore.errors", "kvstore.config", "kvstore.model", "kvstore.wire")
TOOLS = ("kvstore.cli", "kvstore.bench", "kvstore.local")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imported(node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    assert node.level == 0, "kvstore imports absolutely"
    base = node.module or ""
    for alias in node.names:
        full = f"{base}.{alias.name}"
        yield full if full in MODULES else base


def imports(path: Path, *, top_level: bool) -> set[str]:
    """The modules `path` imports: at module level (top_level) or inside functions."""
    tree = ast.parse(path.read_text())
    nodes = _flatten(tree.body) if top_level else _inside_functions(tree)
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.update(_imported(node))
    return found


def _flatten(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Module-level statements, into `if TYPE_CHECKING:` and `try:` blocks."""
    for node in body:
        yield node
        if isinstance(node, ast.If | ast.Try):
            yield from _flatten([*node.body, *getattr(node, "orelse", [])])


def _inside_functions(tree: ast.Module) -> Iterator[ast.AST]:
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            yield from ast.walk(fn)


def graph() -> dict[str, set[str]]:
    return {
        name: {m for m in imports(path, top_level=True) if m in MODULES and m != name}
        for name, path in MODULES.items()
    }


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize(
    "name", [m for m in MODULES if within(m, (*CORE, "kvstore.store", "kvstore.cluster"))]
)
def test_the_core_store_and_cluster_import_no_web_framework(name: str) -> None:
    found = imports(MODULES[name], top_level=True)
    assert not {m for m in found if within(m, ("aiohttp.web",))}
    assert "aiohttp.web" not in found and not any(
        line.startswith("from aiohttp import web")
        for line in MODULES[name].read_text().splitlines()
    )


@pytest.mark.parametrize("name", [m for m in MODULES if within(m, ("kvstore.server",))])
def test_the_server_imports_no_tool(name: str) -> None:
    assert not {m for m in imports(MODULES[name], top_level=True) if within(m, TOOLS)}


def test_no_import_cycle() -> None:
    edges, state, cycle = graph(), dict[str, int](), list[str]()

    def visit(name: str, path: list[str]) -> bool:
        state[name] = 1
        for dep in sorted(edges[name]):
            if state.get(dep) == 1:
                cycle.extend([*path[path.index(dep) :], name, dep] if dep in path else [name, dep])
                return True
            if dep not in state and visit(dep, [*path, name]):
                return True
        state[name] = 2
        return False

    assert not any(visit(n, []) for n in sorted(edges) if n not in state), " -> ".join(cycle)


def test_no_kvstore_import_inside_a_function() -> None:
    late = {
        name: sorted(m for m in imports(path, top_level=False) if m.startswith("kvstore"))
        for name, path in MODULES.items()
    }
    assert {name: found for name, found in late.items() if found} == {}


def test_serve_loads_no_tool() -> None:
    """`kvstore serve` builds its parser and loads the server, and nothing of the tools."""
    code = (
        "import sys; from kvstore.cli.main import build_parser; build_parser(['serve']); "
        "print('\\n'.join(sorted(m for m in sys.modules if m.startswith('kvstore'))))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert "kvstore.server.app" in loaded
    assert [m for m in loaded if within(m, ("kvstore.local", "kvstore.bench"))] == []


def test_importing_the_cli_loads_no_tool() -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import kvstore.cli.main"],
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()]
    assert [
        m for m in loaded if within(m, ("kvstore.local", "kvstore.bench", "kvstore.server"))
    ] == []

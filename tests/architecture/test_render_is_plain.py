"""``core/render.py`` is plain numpy: it draws with the renderer it is given and never asks the
plugin manager (the manager looks renderers up: ``get_plugin_manager().renderer(kind)``)."""

from __future__ import annotations

import ast
from pathlib import Path

import innersight.core.render as render_module


def _imports_and_calls(tree: ast.AST) -> tuple[set[str], set[str]]:
    """The modules ``tree`` imports and the names it calls (``f()`` and ``x.f()``)."""
    modules, calls = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.Call):
            func = node.func
            calls.add(func.id if isinstance(func, ast.Name) else getattr(func, "attr", ""))
    return modules, calls


def test_render_module_does_not_reach_the_plugin_manager():
    source = Path(render_module.__file__).read_text(encoding="utf-8")
    modules, calls = _imports_and_calls(ast.parse(source))
    assert "innersight.core.manager" not in modules and "get_plugin_manager" not in calls

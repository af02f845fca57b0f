"""The layers of the house (docs/architecture.md): a package imports only from layers below it.

Read from the source with ``ast`` (every ``from innersight.X import`` and ``import
innersight.X``, lazy imports inside functions included), so a new upward import fails here,
naming the file, before it becomes a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import innersight

SRC = Path(innersight.__file__).parent

#: Package (first component under ``innersight``) -> layer. Lower layers never import higher.
LAYERS: dict[str, int] = {
    "core": 0,
    "featurevis": 1,
    "plugins": 2,
    "metrics": 2,
    "backends": 2,
    "port": 2,
    "models": 3,
    "api": 4,
    "loading": 5,
    "testing": 5,
    "dataset": 5,
    "report": 5,
    "compare": 5,
    "demo": 5,
    "cli": 6,
    "__init__": 6,
    "__main__": 7,
}
#: ``import innersight`` is the public facade, initialised before any of its modules run:
#: front ends and the testing kit may use it (``innersight.explain``, ``__version__``).
FACADE = "__init__"
#: Layers whose packages may import each other (the front ends build on one another).
SIBLINGS_ALLOWED = {5}

#: Known exceptions, each with the reason and the way out (docs/architecture.md lists them).
EXCEPTIONS: dict[tuple[str, str], str] = {
    ("metrics", "api"): "innersight.metrics() is a callable package that reads the registry",
    ("metrics", "backends"): "re-initialising weights (randomization metrics) is framework "
    "code the adapter contract does not offer yet; next: a 'randomize' adapter capability",
    ("metrics", "compare"): "one implementation of Spearman and top-k overlap "
    "(compare.metrics, plain numpy)",
    ("dataset", "plugins"): "explain_dataset/embed_dataset reuse the embeddings technique's "
    "feature and projection helpers; next: make them featurevis-like public helpers",
}


def _package(path: Path) -> str:
    rel = path.relative_to(SRC).parts
    return rel[0].removesuffix(".py")


def _imported(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "innersight":
                found.add(parts[1] if len(parts) > 1 else "__init__")
    return found


def _violations() -> list[str]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        own = _package(path)
        for target in _imported(ast.parse(path.read_text(encoding="utf-8"))) - {own, FACADE}:
            mine, theirs = LAYERS[own], LAYERS[target]
            upward = theirs > mine or (theirs == mine and mine not in SIBLINGS_ALLOWED)
            if upward and (own, target) not in EXCEPTIONS:
                out.append(f"{path.relative_to(SRC.parent)} ({own}) imports {target}")
    return out


def test_every_package_has_a_layer() -> None:
    packages = {_package(p) for p in SRC.rglob("*.py")}
    assert packages <= set(LAYERS), sorted(packages - set(LAYERS))


def test_no_package_imports_from_a_layer_above_it() -> None:
    assert _violations() == []


def test_the_exceptions_are_still_needed() -> None:
    """An exception that no file needs any more must be deleted (and the docs updated)."""
    used = set()
    for path in SRC.rglob("*.py"):
        own = _package(path)
        used |= {(own, t) for t in _imported(ast.parse(path.read_text(encoding="utf-8")))}
    assert set(EXCEPTIONS) <= used, sorted(set(EXCEPTIONS) - used)


def test_the_check_finds_an_upward_import(tmp_path: Path) -> None:
    tree = ast.parse("def f():\n    from innersight.report.build import build_report\n")
    assert _imported(tree) == {"report"}
    assert LAYERS["report"] > LAYERS["core"]

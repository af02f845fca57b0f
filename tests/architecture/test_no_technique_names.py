"""No technique name in the front ends: report/, compare/ and cli/ read everything about a
technique (presets, order, data sets, capabilities) from the registry, so an outside plugin
behaves there exactly as a built-in does, and a new built-in touches only its own module.

What counts: a string constant in code whose value is a registered built-in technique's name,
alone or in a list of names (``"saliency"``, ``"saliency,occlusion"``): a table key, a
comparison with ``tech.name``, a default list. What does not: docstrings, comments, and names
inside prose (a help or error message's example, ``"e.g. --param occlusion.window=4"``), which
document the command line with a real technique and change no behaviour.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import innersight as ins

SRC = Path(ins.__file__).parent
FRONT_ENDS = ("report", "compare", "cli")
_LIST = re.compile(r"[\s,;|]+")


def builtin_names() -> set[str]:
    """Every technique a module of ``BUILTIN_PLUGINS`` registers."""
    pm = ins.get_plugin_manager()
    return {name for name in ins.techniques() if pm.provider(name).distribution == "innersight"}


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the constant nodes that are docstrings (module, class, function)."""
    found = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                found.add(id(value))
    return found


def names_in_code(path: Path, names: set[str]) -> Iterator[tuple[int, str]]:
    """``(line, constant)`` for each string constant made only of technique names."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    skip = _docstrings(tree)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Constant) or not isinstance(node.value, str):
            continue
        words = [w for w in _LIST.split(node.value.strip()) if w]
        if id(node) not in skip and words and all(w in names for w in words):
            yield node.lineno, node.value


def offences(names: set[str]) -> list[str]:
    out = []
    for folder in FRONT_ENDS:
        for path in sorted((SRC / folder).rglob("*.py")):
            rel = path.relative_to(SRC.parent.parent)
            out += [f"{rel}:{line}: {text!r}" for line, text in names_in_code(path, names)]
    return out


def test_no_technique_name_in_report_compare_or_cli():
    names = builtin_names()
    assert {"saliency", "occlusion", "grad_cam", "embeddings"} <= names  # the registry answered
    found = offences(names)
    assert not found, "technique names in the front ends (read them from the registry):\n" + (
        "\n".join(found)
    )


def test_the_check_finds_names_and_leaves_prose_alone(tmp_path):
    """The detector on a module that has each kind of mention (a check that can fail)."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        '"""Shows saliency maps."""\n'
        'ORDER = ("saliency", "occlusion")\n'
        "def f(tech):\n"
        '    """Runs occlusion."""\n'
        '    if tech.name == "grad_cam":  # grad_cam is special\n'
        "        return 1\n"
        '    raise ValueError("give names such as saliency,occlusion")\n'
        'DEFAULT = "saliency,occlusion"\n'
    )
    found = sorted(names_in_code(sample, {"saliency", "occlusion", "grad_cam"}))
    assert found == [(2, "occlusion"), (2, "saliency"), (5, "grad_cam"), (8, "saliency,occlusion")]

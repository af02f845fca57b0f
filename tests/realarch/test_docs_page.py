"""docs/real-architectures.md: its examples run and print what the page says, its pictures exist.

The page is not (yet) in ``tests/docs/test_docs.py``'s ``EXECUTED`` list, so this module runs it
with that file's own runner: same conventions, same checks of ``text output`` blocks.
"""

from __future__ import annotations

import re

import pytest

from tests.docs.test_docs import DOCS, run_page

PAGE = "real-architectures.md"


def test_examples_run_and_print_what_the_page_says(tmp_path, monkeypatch) -> None:
    pytest.importorskip("torch")
    run_page(PAGE, tmp_path, monkeypatch)


def test_every_picture_is_made_by_the_script() -> None:
    text = (DOCS / PAGE).read_text()
    pictures = set(re.findall(r"\(images/(realarch_[a-z_]+)\.png\)", text))
    script = (DOCS / "make_realarch_images.py").read_text()
    made = set(re.findall(r"^def (realarch_[a-z_]+)\(", script, re.M))
    assert pictures and pictures == made
    assert all((DOCS / "images" / f"{name}.png").is_file() for name in pictures)

"""The technique pages (docs/techniques/) are complete and true to the code.

* every built-in technique (distribution "innersight") has a page, listed in the index;
* each page's parameter table lists exactly the parameters of ``explain`` (keyword-only, as
  ``Technique.parameters()`` gives them), each with its default as written in the signature;
* every picture a page shows exists, is small, and is made by ``docs/make_images.py``;
* the examples run, and print what the ``text output`` blocks after them show.

Conventions of the pages, which these tests rely on: a ``## Parameters`` section whose first
table has one row per parameter, ``| `name` | `default` | meaning |`` (the default is the
``repr`` of the signature's default, or ``required``); fenced ```` ```python ```` blocks run in
page order in one namespace, and a ```` ```text output ```` block right after one is its exact
output (trailing spaces ignored).
"""

from __future__ import annotations

import contextlib
import inspect
import io
import re
from pathlib import Path

import pytest

import innersight as ins

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = DOCS / "techniques"
IMAGES = DOCS / "images"
MAKE_IMAGES = DOCS / "make_images.py"
MAX_IMAGE_BYTES = 150 * 1024
MAX_TOTAL_BYTES = 2 * 1024 * 1024


def builtin_techniques() -> dict[str, ins.Technique]:
    """The techniques that ship with innersight (not those of installed third-party plugins)."""
    pm = ins.get_plugin_manager()
    return {
        name: tech
        for name, tech in sorted(ins.techniques().items())
        if pm.provider(name).distribution == "innersight"
    }


BUILTINS = sorted(builtin_techniques())


def page(name: str) -> Path:
    return PAGES / f"{name}.md"


def strip_code(text: str) -> str:
    """The text without fenced code blocks (so examples do not count as tables or links)."""
    return re.sub(r"^(```|~~~).*?^\1[ \t]*$", "", text, flags=re.S | re.M)


def section(text: str, title: str) -> str:
    """The body of the ``## title`` section, up to the next heading of level 1 or 2."""
    m = re.search(rf"^##\s+{re.escape(title)}\s*$(.*?)(?=^#{{1,2}}\s|\Z)", text, re.S | re.M)
    return m[1] if m else ""


def table_rows(text: str) -> list[list[str]]:
    """The cells of the first Markdown table in ``text`` (header and separator dropped)."""
    rows: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("|"):
            if rows:
                break
            continue
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows[2:] if len(rows) >= 2 else []


def parameter_table(name: str) -> dict[str, str]:
    """``{parameter: default cell}`` from the page's ``## Parameters`` table."""
    body = section(strip_code(page(name).read_text()), "Parameters")
    out = {}
    for cells in table_rows(body):
        m = re.fullmatch(r"`(\w+)`", cells[0])
        if m:
            out[m[1]] = cells[1] if len(cells) > 1 else ""
    return out


def default_cell(param: inspect.Parameter) -> str:
    if param.default is inspect.Parameter.empty:
        return "required"
    return f"`{param.default!r}`"


def images_of(path: Path) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)>?", strip_code(path.read_text()))


# -- every technique has a page --------------------------------------------------------------
def test_the_builtin_techniques_are_found():
    assert len(BUILTINS) >= 10, BUILTINS  # the ten techniques innersight ships


def test_every_builtin_technique_has_a_page():
    missing = [name for name in BUILTINS if not page(name).is_file()]
    assert not missing, (
        f"built-in technique(s) {missing} have no page: write docs/techniques/<name>.md "
        "(see docs/techniques/saliency.md for the layout)"
    )


def test_the_index_links_every_technique_page():
    index = strip_code((PAGES / "index.md").read_text())
    linked = set(re.findall(r"\]\((\w+)\.md\)", index))
    missing = [name for name in BUILTINS if name not in linked]
    assert not missing, f"docs/techniques/index.md has no row linking {missing}"
    stale = sorted(linked - set(BUILTINS) - {"index"})
    assert not stale, f"docs/techniques/index.md links pages of no built-in technique: {stale}"


# -- the parameter tables --------------------------------------------------------------------
@pytest.mark.parametrize("name", BUILTINS)
def test_parameter_table_lists_every_parameter_with_its_default(name):
    if not page(name).is_file():
        pytest.fail(f"docs/techniques/{name}.md is missing")
    params = builtin_techniques()[name].parameters()
    table = parameter_table(name)
    missing = [p for p in params if p not in table]
    assert not missing, (
        f"docs/techniques/{name}.md: the '## Parameters' table has no row for {missing}; "
        f"explain() takes {list(params)}"
    )
    extra = [p for p in table if p not in params]
    assert not extra, (
        f"docs/techniques/{name}.md documents parameter(s) {extra} that explain() does not take"
    )
    wrong = {
        p: (table[p], default_cell(params[p]))
        for p in params
        if table[p].replace(" ", "") != default_cell(params[p]).replace(" ", "")
    }
    assert not wrong, (
        f"docs/techniques/{name}.md: defaults in the table differ from the signature "
        f"(page, code): {wrong}"
    )


# -- the pictures ----------------------------------------------------------------------------
def technique_pages() -> list[Path]:
    return sorted(PAGES.glob("*.md"))


@pytest.mark.parametrize("path", technique_pages(), ids=lambda p: p.name)
def test_every_picture_exists_is_small_and_is_made_by_make_images(path):
    source = MAKE_IMAGES.read_text()
    for link in images_of(path):
        target = (path.parent / link).resolve()
        assert target.is_file(), f"docs/techniques/{path.name} shows {link}, which does not exist"
        assert target.parent == IMAGES, f"{link}: pictures live in docs/images/"
        size = target.stat().st_size
        assert size <= MAX_IMAGE_BYTES, f"{link} is {size / 1024:.0f} KB; keep it under 150 KB"
        assert re.search(rf"^def {re.escape(target.stem)}\(", source, re.M), (
            f"{link} is not made by docs/make_images.py (no function {target.stem}())"
        )


def test_every_technique_page_has_a_picture():
    bare = [name for name in BUILTINS if page(name).is_file() and not images_of(page(name))]
    assert not bare, f"technique pages without a picture: {bare}"


def test_the_pictures_are_small_in_total():
    shown = {
        (path.parent / link).resolve() for path in technique_pages() for link in images_of(path)
    }
    total = sum(p.stat().st_size for p in shown if p.is_file())
    assert total <= MAX_TOTAL_BYTES, (
        f"the pictures of the technique pages take {total / 2**20:.1f} MB; keep them under 2 MB"
    )


# -- the examples run ------------------------------------------------------------------------
_FENCE = re.compile(r"^```(?P<info>[^`]*)$")


def code_blocks(text: str) -> list[tuple[str, str, int]]:
    """``(info string, code, first line)`` of every fenced block."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        blocks.append((m["info"].strip(), "\n".join(lines[i + 1 : j]) + "\n", i + 2))
        i = j + 1
    return blocks


def one_thread() -> contextlib.AbstractContextManager:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1)


@pytest.mark.parametrize("name", BUILTINS)
def test_examples_run_and_print_what_the_page_shows(name, tmp_path, monkeypatch):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    if not page(name).is_file():
        pytest.fail(f"docs/techniques/{name}.md is missing")
    blocks = code_blocks(page(name).read_text())
    assert any(info == "python" for info, _, _ in blocks), f"{name}.md has no python example"
    monkeypatch.chdir(tmp_path)
    # t-SNE's OpenMP threads spin-wait on each other on a busy 2-core box (see
    # tests/plugins/test_embeddings.py); one thread changes nothing the pages print.
    from innersight.plugins import _projection

    monkeypatch.setattr(_projection, "cpu_count", lambda: 1)
    namespace: dict = {"__name__": f"_docs_{name}"}
    for k, (info, code, line) in enumerate(blocks):
        if info != "python":
            continue
        out = io.StringIO()
        with contextlib.redirect_stdout(out), one_thread():
            exec(compile("\n" * (line - 1) + code, str(page(name)), "exec"), namespace)
        if k + 1 < len(blocks) and blocks[k + 1][0] == "text output":
            got = [s.rstrip() for s in out.getvalue().strip("\n").splitlines()]
            want = [s.rstrip() for s in blocks[k + 1][1].strip("\n").splitlines()]
            assert got == want, (
                f"docs/techniques/{name}.md line {line}: the example printed\n"
                + "\n".join(got)
                + "\nbut the page shows\n"
                + "\n".join(want)
            )

"""The documentation is tested: every hook is documented, the examples run, the links resolve.

Conventions for fenced code blocks in ``docs/*.md`` (the info string after the backticks):

``python``
    Runnable. The blocks of one page in :data:`EXECUTED` run in page order, in one shared
    namespace, in a fresh temporary working directory (so ``save("x.png")`` writes there).
``text output``
    The exact stdout of the runnable block just before it (trailing spaces ignored).
``python file=PATH`` (any language)
    A file of an example package. Written to ``PATH`` under the temporary directory before the
    page's runnable blocks run; that directory (and its ``src/``) is on ``sys.path``, so the
    runnable blocks can import it. ``tests/test_*.py`` files written this way are imported and
    their ``test_*`` functions called (``pytest.mark.parametrize`` expanded, no fixtures).
``python quote=PATH`` (any language)
    A verbatim copy of ``PATH`` in this repository (the example plugin): it must match the file.
``python norun``
    Shown, not run: it is only compiled. For fragments that need something that cannot exist
    here (a framework nobody installed). Use it sparingly.
anything else (``toml``, ``console``, ``text``)
    Shown, not run.

Pages not in :data:`EXECUTED` (hooks.md, the technique pages, ...) are not run by this file.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import itertools
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

#: Pages whose examples run, with the modules they need (skipped with the reason otherwise).
EXECUTED: dict[str, tuple[str, ...]] = {
    "index.md": ("torch", "sklearn"),
    "getting-started-torch.md": ("torch", "sklearn", "matplotlib"),
    "getting-started-keras.md": ("keras", "tensorflow", "sklearn"),
    "writing-a-plugin.md": ("torch", "sklearn", "innersight_example_plugin"),
    "writing-a-backend.md": (),
    "conformance.md": ("torch",),
    "errors.md": ("torch", "sklearn"),
    "cli.md": ("torch", "keras", "tensorflow", "sklearn", "PIL"),
    "report.md": ("torch", "keras", "tensorflow", "sklearn"),
    "demo.md": ("torch", "keras", "tensorflow", "sklearn"),
    "metrics.md": ("torch", "sklearn"),
    "keras-backends.md": ("keras", "sklearn"),
    "dataset.md": ("torch", "sklearn", "pyarrow", "openTSNE", "pandas", "matplotlib"),
    "backends-function.md": ("torch", "sklearn"),
    "inputs.md": ("torch", "captum"),
}

#: Environment variables that change which plugins load; unset while a page runs.
PLUGIN_ENVIRONMENT = (
    "INNERSIGHT_DISABLE_PLUGIN_AUTOLOAD",
    "INNERSIGHT_DISABLED_PLUGINS",
    "INNERSIGHT_STRICT_PLUGINS",
)

#: Pages that other people are still writing: links to them may dangle until they exist.
#: This list MUST BE EMPTIED: remove each entry as soon as its page exists
#: (test_pending_pages_are_still_missing fails for entries whose page has appeared).
PENDING: frozenset[str] = frozenset()


# -- parsing -----------------------------------------------------------------------------------
@dataclass
class Block:
    """One fenced code block: language, options from the info string, code, first code line."""

    lang: str
    options: dict[str, str] = field(default_factory=dict)
    flags: frozenset[str] = frozenset()
    code: str = ""
    line: int = 0  # 1-based line number of the first code line

    @property
    def runnable(self) -> bool:
        return (
            self.lang == "python"
            and not self.flags & {"norun", "output"}
            and not {"file", "quote"} & set(self.options)
        )


_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


def parse_blocks(text: str) -> list[Block]:
    """Every fenced code block of a Markdown text, in order."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, info = m["indent"], m["fence"], m["info"].strip()
        words = info.split()
        lang = words[0] if words else ""
        options = dict(w.split("=", 1) for w in words[1:] if "=" in w)
        flags = frozenset(w for w in words[1:] if "=" not in w)
        body: list[str] = []
        j = i + 1
        while j < len(lines) and lines[j].strip() != fence:
            line = lines[j]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            j += 1
        blocks.append(Block(lang, options, flags, "\n".join(body) + "\n", i + 2))
        i = j + 1
    return blocks


def strip_code(text: str) -> str:
    """The text without fenced blocks and inline code (links inside code are not links)."""
    out, fence = [], None
    for line in text.splitlines():
        m = _FENCE.match(line)
        if fence is None and m:
            fence = m["fence"]
            out.append("")
            continue
        if fence is not None:
            if line.strip() == fence:
                fence = None
            out.append("")
            continue
        out.append(re.sub(r"`[^`]*`", "", line))
    return "\n".join(out)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]|<[^>]+>", "", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", strip_code(path.read_text()), re.M):
        base = slug(m[1])
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


# -- 1. every hook specification is documented ---------------------------------------------
def hookspec_names() -> list[str]:
    from innersight.core import hookspecs

    return sorted(
        name
        for name, obj in vars(hookspecs).items()
        if callable(obj) and hasattr(obj, "innersight_spec")
    )


def test_every_hookspec_has_a_section_in_hooks_md():
    specs = hookspec_names()
    assert specs, "no hookspecs found: pluggy's 'innersight_spec' marker attribute changed?"
    text = strip_code((DOCS / "hooks.md").read_text())
    headings = set(re.findall(r"^##\s+`?(\w+)`?\s*$", text, re.M))
    missing = [name for name in specs if name not in headings]
    assert not missing, (
        f"hook specification(s) {missing} have no '## <name>' section in docs/hooks.md; "
        "document each one there (signature, when it is called, a complete example)"
    )
    stale = sorted(h for h in headings if h.startswith("innersight_") and h not in specs)
    assert not stale, f"docs/hooks.md documents hooks that do not exist: {stale}"


# -- 2. the examples run -----------------------------------------------------------------------
def _expand_parametrize(fn) -> list[dict]:
    """The keyword arguments of every case of ``fn``'s ``pytest.mark.parametrize`` marks."""
    axes = []
    for mark in getattr(fn, "pytestmark", []):
        if mark.name != "parametrize":
            continue
        names, values = mark.args[0], mark.args[1]
        names = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
        cases = []
        for value in values:
            is_param = type(value).__name__ == "ParameterSet"  # pytest.param(...)
            if len(names) == 1:
                cases.append({names[0]: value.values[0] if is_param else value})
            else:
                cases.append(dict(zip(names, value.values if is_param else value, strict=True)))
        axes.append(cases)
    return [{k: v for d in combo for k, v in d.items()} for combo in itertools.product(*axes)]


def _run_test_file(path: Path) -> int:
    """Import a test module written from a page and call its test functions; count the calls
    that ran (not skipped)."""
    spec = importlib.util.spec_from_file_location(f"_docs_{path.stem}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    calls = 0
    for name, fn in sorted(vars(module).items()):
        if name.startswith("test_") and callable(fn):
            for kwargs in _expand_parametrize(fn):
                try:
                    fn(**kwargs)
                except pytest.skip.Exception:  # e.g. importorskip: skips that case only
                    continue
                calls += 1
    return calls


def _check_output(page: str, block: Block, got: str, expected: Block) -> None:
    def norm(text: str) -> list[str]:
        return [line.rstrip() for line in text.strip("\n").splitlines()]

    assert norm(got) == norm(expected.code), (
        f"docs/{page} line {block.line}: the block printed\n{got}\n"
        f"but the 'text output' block at line {expected.line} shows\n{expected.code}"
    )


@contextlib.contextmanager
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A fresh plugin manager and adapter cache, the temp dir as cwd and on sys.path; modules
    imported from the temp dir and plugins registered by the page are forgotten afterwards."""
    import innersight as ins
    from innersight.core.manager import reset_plugin_manager

    before = set(sys.modules)
    env = dict(os.environ)
    for name in PLUGIN_ENVIRONMENT:  # the pages show the default plugin policy
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    monkeypatch.syspath_prepend(str(tmp_path))
    reset_plugin_manager()
    ins.clear_cache()
    try:
        yield
    finally:
        reset_plugin_manager()
        ins.clear_cache()
        os.environ.clear()
        os.environ.update(env)
        for name in set(sys.modules) - before:
            origin = getattr(sys.modules[name], "__file__", None) or ""
            if origin.startswith(str(tmp_path)) or name.startswith("_docs_"):
                del sys.modules[name]
        importlib.invalidate_caches()


def run_page(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = parse_blocks((DOCS / page).read_text())
    runnable = [b for b in blocks if b.runnable]
    assert runnable, f"docs/{page} has no runnable ```python block"
    test_files = []
    for block in blocks:
        if "quote" in block.options:
            source = ROOT / block.options["quote"]
            assert source.is_file(), f"docs/{page} line {block.line}: no file {source}"
            assert block.code.strip() == source.read_text().strip(), (
                f"docs/{page} line {block.line} quotes {block.options['quote']}, but the file "
                "has changed: copy it into the page again"
            )
        elif "file" in block.options:
            target = tmp_path / block.options["file"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.code)
            if target.name.startswith("test_") and target.suffix == ".py":
                test_files.append(target)
        elif block.lang == "python" and "norun" in block.flags:
            compile(block.code, f"docs/{page}:{block.line}", "exec")
    namespace: dict = {"__name__": f"_docs_{Path(page).stem.replace('-', '_')}"}
    with _isolated(tmp_path, monkeypatch), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for k, block in enumerate(blocks):
            if not block.runnable:
                continue
            # Blank lines in front: tracebacks then give the line numbers of the Markdown page.
            code = compile("\n" * (block.line - 1) + block.code, str(DOCS / page), "exec")
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(code, namespace)
            following = blocks[k + 1] if k + 1 < len(blocks) else None
            if following is not None and "output" in following.flags:
                _check_output(page, block, out.getvalue(), following)
        for path in test_files:
            assert _run_test_file(path) > 0, f"{path.name} from docs/{page} ran no test"


@pytest.mark.parametrize("page", sorted(EXECUTED))
def test_examples_run(page, tmp_path, monkeypatch):
    for module in EXECUTED[page]:
        pytest.importorskip(module)
    if not (DOCS / page).is_file():
        pytest.fail(f"docs/{page} is missing")
    run_page(page, tmp_path, monkeypatch)


def test_output_blocks_follow_a_runnable_block():
    for page in sorted(EXECUTED):
        blocks = parse_blocks((DOCS / page).read_text())
        for prev, block in zip([None, *blocks], blocks, strict=False):
            if "output" in block.flags:
                assert prev is not None and prev.runnable, (
                    f"docs/{page} line {block.line}: a 'text output' block must directly follow "
                    "a runnable ```python block"
                )


# -- 3. the links resolve ------------------------------------------------------------------
def markdown_files() -> list[Path]:
    return [*sorted(DOCS.rglob("*.md")), ROOT / "README.md"]


_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REF = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)


def links(path: Path) -> list[str]:
    text = strip_code(path.read_text())
    return _LINK.findall(text) + _REF.findall(text)


def broken_links(path: Path) -> list[str]:
    problems = []
    for link in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", link, re.I):  # http:, https:, mailto:
            continue
        target, _, anchor = link.partition("#")
        resolved = (path.parent / target).resolve() if target else path
        if target:
            try:
                relative = resolved.relative_to(ROOT)
            except ValueError:
                problems.append(f"{link} points outside the repository")
                continue
            if not resolved.exists():
                try:
                    pending = resolved.relative_to(DOCS).as_posix() in PENDING
                except ValueError:
                    pending = False
                if not pending:
                    problems.append(f"{link} -> {relative} does not exist")
                continue
        if anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{link}: no heading with anchor #{anchor} in {resolved.name}")
    return problems


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    problems = broken_links(path)
    assert not problems, f"{path.relative_to(ROOT)} has broken links:\n" + "\n".join(problems)


def test_pending_pages_are_still_missing():
    appeared = sorted(p for p in PENDING if (DOCS / p).exists())
    assert not appeared, (
        f"docs pages {appeared} exist now: remove them from PENDING in tests/docs/test_docs.py "
        "so that links to them are checked like any other"
    )


def test_the_link_checker_finds_broken_links(tmp_path, monkeypatch):
    page = DOCS / "__probe__.md"  # never written: links() and anchors() are fed directly
    monkeypatch.setattr(
        sys.modules[__name__],
        "links",
        lambda path: [
            "hooks.md",
            "nope.md",
            "cli.md",
            "hooks.md#innersight_wrap_model",
            "hooks.md#nope",
            "../../x.md",
        ],
    )
    problems = broken_links(page)
    assert [p.split()[0] for p in problems] == ["nope.md", "hooks.md#nope:", "../../x.md"]

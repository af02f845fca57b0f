"""Skipping what needs an optional package that is not installed (the core-only job).

``make test-core`` runs the whole suite where innersight is installed with numpy and pluggy
only. A test module, a conftest, a fixture or a test that imports a framework or another
optional package (:data:`OPTIONAL`) that is not installed is then skipped, with the package
named, instead of erroring. Only those packages count, and only when they are really absent:
in a full install nothing changes, and a misspelt module stays an error. Library errors that
say which extra to install (``MissingDependencyError`` is an ``ImportError`` caused by the
missing module) count as well. The core itself is held to more than skipping: see
``test_core_only.py``.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
_LIBRARIES = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}

#: Import names of the packages innersight's core does without: the frameworks, the extras
#: (``innersight[viz,embeddings,dataset,ray]``), the test peers and tools of ``[dev]``, tqdm
#: (its progress bar has a fallback) and the example plugin.
OPTIONAL = frozenset(
    {
        "torch", "tensorflow", "keras", "jax", "jaxlib", "sklearn", "scipy", "PIL",
        "matplotlib", "openTSNE", "pyarrow", "pandas", "ray", "captum", "shap", "lime",
        "skimage", "hypothesis", "tensorboard", "werkzeug", "threadpoolctl", "tqdm",
        "innersight_example_plugin",
    }
)  # fmt: skip


def _causes(err: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def missing_module(err: BaseException) -> ModuleNotFoundError | None:
    """The import of an optional package that is not installed behind ``err`` (``err`` itself
    or a cause of it); None for any other error (a misspelt module stays an error)."""
    for cause in _causes(err):
        name = getattr(cause, "name", None) if isinstance(cause, ModuleNotFoundError) else None
        root = (name or "").split(".")[0]
        if root in OPTIONAL and importlib.util.find_spec(root) is None:
            return cause  # type: ignore[return-value]  # a ModuleNotFoundError, checked above
    return None


def skip_location(err: BaseException, missing: ModuleNotFoundError) -> tuple[str, int, str]:
    """A skip report's ``(path, line, message)`` for ``err``, which ``missing`` caused: the test
    code that started the import (or the call) and the line that imports the package, e.g.
    ``Skipped: needs torch, which is not installed (tests/plugins/_replicas.py:15 imports it)``.
    """
    root = (missing.name or "").split(".")[0]
    chain = [frame for cause in _causes(err) for frame in _our_frames(cause)]
    tests = [(path, line) for path, line in chain if not path.is_relative_to(SRC)]
    start = tests[0] if tests else (chain[0] if chain else (ROOT, 0))
    imports = _our_frames(missing)[-1:] or [start]
    where = ""
    if imports[0] != start:
        shown = (
            imports[0][0].relative_to(ROOT) if imports[0][0].is_relative_to(ROOT) else imports[0][0]
        )
        where = f" ({shown}:{imports[0][1]} imports it)"
    return str(start[0]), start[1], f"Skipped: needs {root}, which is not installed{where}"


def _our_frames(err: BaseException) -> list[tuple[Path, int]]:
    """The traceback of ``err`` in test code and innersight's source, outermost first (not in
    Python's library, nor in installed packages such as pytest)."""
    out = []
    for tb in _frames(err):
        name = tb.tb_frame.f_code.co_filename
        path = Path(name)
        if not name.startswith("<") and not any(path.is_relative_to(p) for p in _LIBRARIES):
            out.append((path, tb.tb_lineno))
    return out


def _frames(err: BaseException) -> Iterator[TracebackType]:
    tb = err.__traceback__
    while tb is not None:
        yield tb
        tb = tb.tb_next


class SkipMissingOptional:
    """A pytest plugin: test modules, conftests, fixtures and tests that import a missing
    optional package are skipped, with the package named."""

    @pytest.hookimpl(wrapper=True)
    def pytest_make_collect_report(self, collector):
        report = yield
        call = getattr(report, "call", None)  # pytest keeps the CallInfo there for its next hook
        failure = call.excinfo.value if report.failed and call and call.excinfo else None
        missing = missing_module(failure) if failure is not None else None
        if missing is not None:
            report.outcome = "skipped"
            report.longrepr = skip_location(failure, missing)
        return report

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item, call):
        report = yield
        failure = call.excinfo.value if report.failed and call.excinfo else None
        missing = missing_module(failure) if isinstance(failure, ImportError) else None
        if missing is not None and call.when in ("setup", "call"):
            report.outcome = "skipped"
            report.longrepr = skip_location(failure, missing)
        return report

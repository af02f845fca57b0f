"""Progress bars where users run long maximizations: a terminal, and Jupyter (no TTY there)."""

from __future__ import annotations

import sys
import types

import pytest

import innersight as ins
from innersight.core import Progress


class FakeBar:
    """Stands in for tqdm.auto.tqdm (the widget bar in a notebook) and records its use."""

    made: list[FakeBar] = []

    def __init__(self, total: int, desc: str | None = None, leave: bool = True) -> None:
        self.total, self.desc, self.n, self.lines, self.closed = total, desc, 0, [], False
        FakeBar.made.append(self)

    def update(self, n: int) -> None:
        self.n += n

    def write(self, text: str, file: object = None) -> None:
        self.lines.append(text)

    def close(self) -> None:
        self.closed = True


def fake_jupyter(monkeypatch, shell: object | None) -> None:
    """A process as a Jupyter kernel looks: ipykernel loaded, IPython's shell with a kernel;
    stderr is no terminal."""
    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: shell  # type: ignore[attr-defined]
    auto = types.ModuleType("tqdm.auto")
    auto.tqdm = FakeBar  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "tqdm.auto", auto)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    FakeBar.made = []


class KernelShell:  # like ipykernel's ZMQInteractiveShell
    kernel = object()


class TerminalShell:  # like IPython's TerminalInteractiveShell: no kernel
    pass


def test_a_jupyter_kernel_gets_the_widget_bar(monkeypatch, keras_small):
    fake_jupyter(monkeypatch, KernelShell())
    assert Progress.in_notebook()
    ins.explain("class_maximization", keras_small, steps=3)  # progress=None: the default
    (bar,) = FakeBar.made
    assert (bar.desc, bar.total, bar.n, bar.closed) == ("class_maximization", 9, 9, True)


@pytest.mark.parametrize("shell", [None, TerminalShell()], ids=["no-shell", "terminal-ipython"])
def test_no_bar_without_a_kernel_and_no_tty(monkeypatch, shell, keras_small):
    fake_jupyter(monkeypatch, shell)
    assert not Progress.in_notebook()
    ins.explain("class_maximization", keras_small, steps=3)
    assert FakeBar.made == []


def test_false_stays_silent_in_jupyter_and_notes_go_above_the_bar(monkeypatch):
    fake_jupyter(monkeypatch, KernelShell())
    with Progress(5, "work", False) as quiet:
        quiet.note("not shown")
    assert FakeBar.made == []
    with Progress(5, "work") as bar:
        bar.note("classes: the first 10 of 1000 classes")
        bar.update(5)
    assert FakeBar.made[0].lines == ["work: classes: the first 10 of 1000 classes"]


def test_a_broken_ipython_is_no_notebook(monkeypatch):
    def broken() -> None:
        raise RuntimeError("IPython half initialised")

    fake_jupyter(monkeypatch, None)
    monkeypatch.setattr(sys.modules["IPython"], "get_ipython", broken)
    assert not Progress.in_notebook()

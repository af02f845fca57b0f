"""One pytest test per (adapter, check), as scikit-learn's ``parametrize_with_checks`` does.

:func:`~innersight.testing.check_adapter` stops at nothing but reports every failure in one
message; with this helper each check is a test of its own, so a report shows which checks pass,
which fail (each with its own traceback) and which do not apply (skipped, with the reason)::

    from innersight import testing

    @testing.parametrize_with_checks({"mine": lambda: MyAdapter(build_model())})
    def test_conformance(adapter, check):
        check(adapter)

Importing this module does not import pytest; calling :func:`parametrize_with_checks` does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from innersight.core.adapter import ModelAdapter
from innersight.testing.checks_suite import ADAPTER_CHECKS, AdapterCase, AdapterCheck

__all__ = ["CaseHandle", "parametrize_with_checks"]


class CaseHandle:
    """The ``adapter`` argument of a parametrized test: builds its :class:`AdapterCase` on first
    use and shares it with every check of the same adapter."""

    def __init__(self, name: str, source: Any) -> None:
        self.name = name
        self._source = source
        self._case: AdapterCase | None = None

    @property
    def case(self) -> AdapterCase:
        """The case (the factory is called once, on first use)."""
        if self._case is None:
            self._case = _as_case(self._source)
        return self._case

    def __repr__(self) -> str:
        return f"<adapter case {self.name!r}>"


class _PytestCheck:
    """A check that skips (with the reason) where it does not apply."""

    def __init__(self, check: AdapterCheck) -> None:
        self.check = check
        self.name = check.name

    def __call__(self, adapter: CaseHandle | AdapterCase) -> None:
        import pytest

        case = adapter.case if isinstance(adapter, CaseHandle) else adapter
        reason = self.check.skip_reason(case)
        if reason is not None:
            pytest.skip(reason)
        self.check(case)

    def __repr__(self) -> str:
        return f"<check {self.name}>"


def parametrize_with_checks(
    adapters: Mapping[str, Any] | Iterable[Any],
    *,
    checks: Sequence[AdapterCheck] = ADAPTER_CHECKS,
) -> Any:
    """A ``pytest.mark.parametrize`` decorator: one test per adapter and conformance check.

    The decorated test takes ``adapter`` and ``check`` and calls ``check(adapter)``. Its ids
    read ``<adapter name>-<check name>`` (``numpy-check_gradients(guided)``), so ``-k`` selects
    one backend or one check. A check that does not apply (the adapter lacks a capability it
    needs, or no reference was given) is skipped with the reason. Models are built when the
    first of their tests runs, not when pytest collects the tests, and only once.

    Args:
        adapters: ``{name: factory}``, or factories named after themselves. A factory is
            called with no arguments and returns what :func:`check_adapter` takes first (a
            native model, a ModelAdapter or a ReferenceNetwork) or an :class:`AdapterCase`
            with the other options (sample batch, reference, layer map, injector, wrap
            options). It may call ``pytest.importorskip``/``pytest.skip`` when its framework
            is missing. An AdapterCase, ModelAdapter or ReferenceNetwork may stand in for its
            factory.
        checks: the checks to run (default: all of :data:`ADAPTER_CHECKS`, in order).

    Returns:
        the decorator.

    Example::

        @testing.parametrize_with_checks(
            {"numpy": lambda: testing.AdapterCase(testing.reference_model("conv"))}
        )
        def test_conformance(adapter, check):
            check(adapter)
    """
    import pytest

    named = adapters.items() if isinstance(adapters, Mapping) else _named(adapters)
    handles = [CaseHandle(name, source) for name, source in named]
    params = [(h, _PytestCheck(check)) for h in handles for check in checks]
    ids = [f"{h.name}-{check.name}" for h, check in params]
    return pytest.mark.parametrize(("adapter", "check"), params, ids=ids)


def _named(adapters: Iterable[Any]) -> list[tuple[str, Any]]:
    out = []
    for i, source in enumerate(adapters):
        name = getattr(source, "__name__", None)
        if isinstance(source, AdapterCase):
            name = getattr(source.model_or_adapter, "name", None)
        out.append((name if name and name != "<lambda>" else f"adapter{i}", source))
    return out


def _as_case(source: Any) -> AdapterCase:
    from innersight.testing.reference import ReferenceNetwork

    made: Any = source
    if not isinstance(source, (AdapterCase, ModelAdapter, ReferenceNetwork)):
        factory: Callable[[], Any] = source
        made = factory()
    return made if isinstance(made, AdapterCase) else AdapterCase(made)

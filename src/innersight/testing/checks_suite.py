"""The backend checks as one list: :func:`check_adapter` runs them all in one call, and
:func:`~innersight.testing.parametrize_with_checks` makes one pytest test of each.

An :class:`AdapterCase` is what the checks judge: the model or adapter and the options of
``check_adapter`` (sample batch, error injector, reference, layer map, wrap options). Each
:class:`AdapterCheck` in :data:`ADAPTER_CHECKS` says which capabilities it needs; a check that
does not apply to an adapter is skipped, with the reason.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from innersight.core import missing_capabilities
from innersight.core.adapter import ModelAdapter
from innersight.testing.checks import ConformanceError, native_model, sample_inputs
from innersight.testing.checks_adapter import (
    check_inputs_not_mutated,
    check_layers,
    check_protocol,
    check_taps,
    check_unknown_layer,
)
from innersight.testing.checks_gradients import check_gradients, check_layer_gradients
from innersight.testing.checks_inputs import check_with_inputs
from innersight.testing.checks_reference import check_matches_reference
from innersight.testing.checks_state import Injector, check_state_preserved

__all__ = [
    "ADAPTER_CHECKS",
    "AdapterCase",
    "AdapterCheck",
    "check_adapter",
    "resolve_adapter",
]


def resolve_adapter(model_or_adapter: Any, **wrap_options: Any) -> tuple[Any, Any]:
    """``(adapter, native model)`` for a native model, a ReferenceNetwork or an adapter."""
    from innersight.testing.reference import ReferenceAdapter, ReferenceNetwork

    if isinstance(model_or_adapter, ReferenceNetwork):
        return ReferenceAdapter(model_or_adapter), model_or_adapter
    if isinstance(model_or_adapter, ModelAdapter):
        return model_or_adapter, native_model(model_or_adapter)
    import innersight

    return innersight.wrap(model_or_adapter, **wrap_options), model_or_adapter


@dataclass(eq=False)
class AdapterCase:
    """An adapter to check, with the options the checks need (those of :func:`check_adapter`).

    The adapter is made (wrapped, sampled) on first use, once, and shared by every check.

    Attributes:
        model_or_adapter: a native model (wrapped with ``innersight.wrap(model,
            **wrap_options)``), a ModelAdapter, or a ReferenceNetwork.
        x: a small sample batch (default: 3 noise samples of the adapter's ``input_shape``).
        model: the native model behind an adapter, for the state checks (default: the
            adapter's ``model``/``module``/``network`` attribute, else the adapter itself).
        inject: error injector for :func:`check_state_preserved` (False: skip forced errors).
        reference: an equivalent ReferenceAdapter (or any adapter) to compare every number with.
        layer_map: adapter layer name -> reference layer name, for ``reference``.
        wrap_options: options for ``innersight.wrap`` (also used for the fresh adapters of the
            forced-error checks).
    """

    model_or_adapter: Any
    x: np.ndarray | None = None
    model: Any = None
    inject: Injector | bool | None = None
    reference: Any = None
    layer_map: Mapping[str, str] | None = None
    wrap_options: Mapping[str, Any] = field(default_factory=dict)

    @cached_property
    def adapter(self) -> Any:
        """The adapter under test."""
        return self._resolved[0]

    @cached_property
    def native(self) -> Any:
        """The native model whose state the state checks watch."""
        return self.model if self.model is not None else self._resolved[1]

    @cached_property
    def inputs(self) -> np.ndarray:
        """``x``, or 3 noise samples of the adapter's input shape."""
        return sample_inputs(self.adapter) if self.x is None else np.asarray(self.x)

    @cached_property
    def _resolved(self) -> tuple[Any, Any]:
        return resolve_adapter(self.model_or_adapter, **dict(self.wrap_options))

    def fresh_adapter(self) -> Any:
        """A new adapter of the same model, not ``innersight.wrap``'s cached one (whose
        functions were traced before an error injector was installed)."""
        from innersight.core.manager import get_plugin_manager
        from innersight.testing.reference import ReferenceAdapter, ReferenceNetwork

        if isinstance(self.native, ReferenceNetwork):
            return ReferenceAdapter(self.native)
        if isinstance(self.model_or_adapter, ModelAdapter) and self.native is self.adapter:
            return self.adapter  # nothing to re-wrap: reuse the adapter
        return get_plugin_manager().wrap(self.native, dict(self.wrap_options))


@dataclass(frozen=True)
class AdapterCheck:
    """One conformance check of an adapter.

    Attributes:
        name: the check's name in reports and test ids, e.g. ``"check_gradients(guided)"``.
        run: runs the check on an :class:`AdapterCase`; raises ConformanceError on failure.
        needs: the capabilities the adapter must declare for the check to apply.
        needs_reference: the check applies only to a case with a ``reference``.
    """

    name: str
    run: Callable[[AdapterCase], None]
    needs: frozenset[str] = frozenset()
    needs_reference: bool = False

    def skip_reason(self, case: AdapterCase) -> str | None:
        """Why the check does not apply to ``case`` (None when it does)."""
        if self.needs_reference and case.reference is None:
            return f"{self.name} compares with a reference adapter, and none was given"
        missing = missing_capabilities(self.needs, case.adapter)
        if missing:
            return (
                f"{self.name} needs {', '.join(missing)}, which the "
                f"{case.adapter.backend} adapter does not declare"
            )
        return None

    def __call__(self, case: AdapterCase) -> None:
        self.run(case)

    def __repr__(self) -> str:
        return f"<AdapterCheck {self.name}>"


def _state(case: AdapterCase) -> None:
    check_state_preserved(
        case.native, case.adapter, case.inputs, inject=case.inject, make_adapter=case.fresh_adapter
    )


def _reference(case: AdapterCase) -> None:
    check_matches_reference(case.adapter, case.reference, case.inputs, layer_map=case.layer_map)


_GRADS = frozenset({"input_gradients"})
_OVERRIDE = frozenset({"input_gradients", "relu_override"})

#: Every backend check, in the order :func:`check_adapter` runs them.
ADAPTER_CHECKS: tuple[AdapterCheck, ...] = (
    AdapterCheck("check_protocol", lambda c: check_protocol(c.adapter)),
    AdapterCheck("check_layers", lambda c: check_layers(c.adapter)),
    AdapterCheck(
        "check_taps", lambda c: check_taps(c.adapter, c.inputs), frozenset({"layer_taps"})
    ),
    AdapterCheck(
        "check_unknown_layer",
        lambda c: check_unknown_layer(c.adapter, c.inputs),
        frozenset({"layer_taps"}),
    ),
    AdapterCheck("check_gradients", lambda c: check_gradients(c.adapter, c.inputs), _GRADS),
    AdapterCheck(
        "check_gradients(guided)",
        lambda c: check_gradients(c.adapter, c.inputs, relu="guided"),
        _OVERRIDE,
    ),
    AdapterCheck(
        "check_gradients(deconv)",
        lambda c: check_gradients(c.adapter, c.inputs, relu="deconv"),
        _OVERRIDE,
    ),
    AdapterCheck(
        "check_layer_gradients",
        lambda c: check_layer_gradients(c.adapter, c.inputs),
        frozenset({"layer_gradients", "layer_taps", "input_gradients"}),
    ),
    AdapterCheck(
        "check_inputs_not_mutated", lambda c: check_inputs_not_mutated(c.adapter, c.inputs)
    ),
    AdapterCheck(
        "check_with_inputs",
        lambda c: check_with_inputs(c.adapter, c.inputs),
        frozenset({"several_inputs", "input_gradients"}),
    ),
    AdapterCheck("check_state_preserved", _state),
    AdapterCheck("check_matches_reference", _reference, needs_reference=True),
)


def check_adapter(
    model_or_adapter: Any,
    x: np.ndarray | None = None,
    *,
    model: Any = None,
    inject: Injector | bool | None = None,
    reference: Any = None,
    layer_map: Mapping[str, str] | None = None,
    wrap_options: Mapping[str, Any] | None = None,
) -> None:
    """Run every backend check that applies to the adapter's capabilities.

    Every check runs, whatever the others do; for one pytest test per check (each failure
    shown on its own, checks that do not apply shown as skipped), use
    :func:`~innersight.testing.parametrize_with_checks`.

    Args:
        model_or_adapter: a native model (wrapped with ``innersight.wrap(model, **wrap_options)``),
            a ModelAdapter, or a ReferenceNetwork.
        x, model, inject, reference, layer_map, wrap_options: as in :class:`AdapterCase`.

    Raises:
        ConformanceError: listing every failed check with its message.
    """
    case = AdapterCase(
        model_or_adapter, x, model, inject, reference, layer_map, dict(wrap_options or {})
    )
    checks = [check for check in ADAPTER_CHECKS if check.skip_reason(case) is None]
    failures = [f for f in (_failure(check, case) for check in checks) if f is not None]
    if failures:
        raise ConformanceError(
            f"the {case.adapter.backend} adapter for {case.adapter.name} fails "
            f"{len(failures)} of {len(checks)} conformance checks:\n- " + "\n- ".join(failures)
        )


def _failure(check: AdapterCheck, case: AdapterCase) -> str | None:
    """The check's failure as one line of the summary, None when it passes."""
    try:
        check(case)
    except ConformanceError as err:
        return str(err)
    except Exception as err:
        where = traceback.extract_tb(err.__traceback__)[-1]
        return (
            f"{check.name}: raised {type(err).__name__}: {err} (at {where.filename}:{where.lineno})"
        )
    return None

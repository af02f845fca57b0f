"""``check_adapter``: every backend check, in one call."""

from __future__ import annotations

import functools
import traceback
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from innersight.core.adapter import ModelAdapter
from innersight.testing.checks import ConformanceError, capabilities, native_model, sample_inputs
from innersight.testing.checks_adapter import (
    check_inputs_not_mutated,
    check_layers,
    check_protocol,
    check_taps,
    check_unknown_layer,
)
from innersight.testing.checks_gradients import check_gradients, check_layer_gradients
from innersight.testing.checks_reference import check_matches_reference
from innersight.testing.checks_state import Injector, check_state_preserved

__all__ = ["check_adapter", "resolve_adapter"]


def resolve_adapter(model_or_adapter: Any, **wrap_options: Any) -> tuple[Any, Any]:
    """``(adapter, native model)`` for a native model, a ReferenceNetwork or an adapter."""
    from innersight.testing.reference import ReferenceAdapter, ReferenceNetwork

    if isinstance(model_or_adapter, ReferenceNetwork):
        return ReferenceAdapter(model_or_adapter), model_or_adapter
    if isinstance(model_or_adapter, ModelAdapter):
        return model_or_adapter, native_model(model_or_adapter)
    import innersight

    return innersight.wrap(model_or_adapter, **wrap_options), model_or_adapter


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

    Args:
        model_or_adapter: a native model (wrapped with ``innersight.wrap(model, **wrap_options)``),
            a ModelAdapter, or a ReferenceNetwork.
        x: a small sample batch (default: 3 noise samples of the adapter's ``input_shape``).
        model: the native model behind an adapter, for the state checks (default: the adapter's
            ``model``/``module``/``network`` attribute, else the adapter itself).
        inject: error injector for :func:`check_state_preserved` (False: skip forced errors).
        reference: an equivalent ReferenceAdapter (or any adapter) to compare every number with.
        layer_map: adapter layer name -> reference layer name, for ``reference``.
        wrap_options: options for ``innersight.wrap`` (also used for the fresh adapters of the
            forced-error checks).

    Raises:
        ConformanceError: listing every failed check with its message.
    """
    options = dict(wrap_options or {})
    adapter, native = resolve_adapter(model_or_adapter, **options)
    native = model if model is not None else native
    x = sample_inputs(adapter) if x is None else np.asarray(x)
    make_adapter = _fresh_factory(model_or_adapter, native, options)
    caps = capabilities(adapter)
    checks: list[tuple[str, Callable[[], None]]] = [
        ("check_protocol", lambda: check_protocol(adapter)),
        ("check_layers", lambda: check_layers(adapter)),
    ]
    if "layer_taps" in caps:
        checks.append(("check_taps", lambda: check_taps(adapter, x)))
        checks.append(("check_unknown_layer", lambda: check_unknown_layer(adapter, x)))
    if "input_gradients" in caps:
        checks.append(("check_gradients", lambda: check_gradients(adapter, x)))
        if "relu_override" in caps:
            for mode in ("guided", "deconv"):
                checks.append(
                    (
                        f"check_gradients({mode})",
                        functools.partial(check_gradients, adapter, x, relu=mode),
                    )
                )
    if {"layer_gradients", "layer_taps", "input_gradients"} <= caps:
        checks.append(("check_layer_gradients", lambda: check_layer_gradients(adapter, x)))
    checks.append(("check_inputs_not_mutated", lambda: check_inputs_not_mutated(adapter, x)))
    checks.append(
        (
            "check_state_preserved",
            lambda: check_state_preserved(
                native, adapter, x, inject=inject, make_adapter=make_adapter
            ),
        )
    )
    if reference is not None:
        checks.append(
            (
                "check_matches_reference",
                lambda: check_matches_reference(adapter, reference, x, layer_map=layer_map),
            )
        )
    failures = []
    for name, run in checks:
        try:
            run()
        except ConformanceError as err:
            failures.append(str(err))
        except Exception as err:
            where = traceback.extract_tb(err.__traceback__)[-1]
            failures.append(
                f"{name}: raised {type(err).__name__}: {err} (at {where.filename}:{where.lineno})"
            )
    if failures:
        raise ConformanceError(
            f"the {adapter.backend} adapter for {adapter.name} fails "
            f"{len(failures)} of {len(checks)} "
            "conformance checks:\n- " + "\n- ".join(failures)
        )


def _fresh_factory(given: Any, native: Any, options: Mapping[str, Any]) -> Callable[[], Any] | None:
    from innersight.testing.reference import ReferenceAdapter, ReferenceNetwork

    if isinstance(native, ReferenceNetwork):
        return lambda: ReferenceAdapter(native)
    if isinstance(given, ModelAdapter) and native is given:
        return lambda: given  # nothing to re-wrap: reuse the adapter
    from innersight.core.manager import get_plugin_manager

    # A new adapter each time, not innersight.wrap's cached one (traced before the injector).
    return lambda: get_plugin_manager().wrap(native, options)

"""State hygiene: an adapter leaves the user's model exactly as it found it, on success and
when the framework raises in the middle of a forward pass.

Errors are forced by an *injector*: ``inject(model, error_type)`` returns a context manager
inside which a forward pass of ``model`` raises ``error_type``. Defaults exist for torch (a
temporary forward hook on the last leaf module), Keras (``call`` of the first layer's class
patched to raise for that layer only) and the reference network (the last layer's ``forward``
patched). The check runs each with ``RuntimeError`` and with ``KeyboardInterrupt``: cleanup must
sit in ``finally``/context managers, not in ``except Exception``.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any
from unittest import mock

import numpy as np

from innersight.core.frameworks import is_keras, is_torch
from innersight.core.objectives import Channel, Logit
from innersight.testing.checks import ConformanceError, ConformanceWarning, capabilities, fail
from innersight.testing.state import diff, snapshot

__all__ = [
    "Injector",
    "check_state_preserved",
    "default_injector",
    "keras_injector",
    "reference_injector",
    "torch_injector",
]

Injector = Callable[[Any, type[BaseException]], AbstractContextManager[Any]]


def _message(where: str) -> str:
    return f"innersight.testing: failure injected in {where}"


@contextmanager
def torch_injector(model: Any, error: type[BaseException], *, after: int = 0) -> Iterator[None]:
    """A forward hook on the last leaf module of ``model`` raises ``error``; removed on exit.

    ``after`` passes reach the last leaf unharmed before one fails, so
    ``functools.partial(torch_injector, after=3)`` interrupts a multi-pass technique (occlusion,
    SmoothGrad, Integrated Gradients) in the middle of its run, as a Ctrl-C would.
    """
    leaves = [(n, m) for n, m in model.named_modules() if not any(True for _ in m.children())]
    name, target = leaves[-1] if leaves else ("", model)
    passes = [0]

    def hook(module: Any, args: Any, output: Any) -> None:
        passes[0] += 1
        if passes[0] > after:
            raise error(_message(f"torch module {name or '<root>'!r} (pass {passes[0]})"))

    handle = target.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _first_keras_leaf(model: Any) -> Any:
    layer = model
    while True:
        subs = [s for s in getattr(layer, "layers", None) or () if type(s).__name__ != "InputLayer"]
        if not subs:
            return layer
        layer = subs[0]


@contextmanager
def keras_injector(model: Any, error: type[BaseException]) -> Iterator[None]:
    """``call`` of the first layer's class raises ``error`` for that one layer (other instances
    of the class run normally). The first layer, because every computation passes through it
    (with ``logits="auto"`` the last layer's pre-activation is computed without its ``call``).
    Adapters cache traced functions per adapter instance, so the check builds a fresh adapter
    inside the context: tracing then happens under the patch."""
    target = _first_keras_leaf(model)
    cls = type(target)
    original = cls.call

    @functools.wraps(original)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self is target:
            raise error(_message(f"Keras layer {target.name!r}"))
        return original(self, *args, **kwargs)

    with mock.patch.object(cls, "call", call):
        yield


@contextmanager
def reference_injector(model: Any, error: type[BaseException]) -> Iterator[None]:
    """The last layer of a ReferenceNetwork raises ``error`` from ``forward``."""
    from innersight.testing.reference import ReferenceAdapter

    network = model.network if isinstance(model, ReferenceAdapter) else model
    layer = network.layers[-1]

    def forward(x: np.ndarray) -> Any:
        raise error(_message(f"reference layer {layer.name!r}"))

    with mock.patch.object(layer, "forward", forward):
        yield


def default_injector(model: Any) -> Injector | None:
    """The built-in injector for ``model``'s framework, or None for unknown frameworks."""
    from innersight.testing.reference import ReferenceAdapter, ReferenceNetwork

    if isinstance(model, (ReferenceNetwork, ReferenceAdapter)):
        return reference_injector
    if is_keras(model):
        return keras_injector
    if is_torch(model):  # not Keras-on-torch models, which are nn.Modules too
        return torch_injector
    return None


def _default_factory(model: Any) -> Callable[[], Any]:
    from innersight.testing.reference import ReferenceAdapter, ReferenceNetwork

    if isinstance(model, ReferenceAdapter):
        return lambda: ReferenceAdapter(model.network)
    if isinstance(model, ReferenceNetwork):
        return lambda: ReferenceAdapter(model)
    from innersight.core.manager import get_plugin_manager

    # Not innersight.wrap: it returns a cached adapter whose functions were traced before the
    # injector was installed.
    return lambda: get_plugin_manager().wrap(model, {})


def _ops(adapter: Any, x: np.ndarray, *, failing: bool) -> list[tuple[str, Callable[[], Any]]]:
    """Every adapter method. With ``failing``, only calls that must reach the last layer."""
    caps = capabilities(adapter)
    names = [i.name for i in adapter.layers()] if "layer_taps" in caps else []
    target = Logit(0)
    ops: list[tuple[str, Callable[[], Any]]] = [("forward", lambda: adapter.forward(x))]
    if names:
        ops.append(
            (
                "forward with taps",
                lambda: adapter.forward(x, taps=names if not failing else names[:1]),
            )
        )
    if not failing:
        ops.append(("predict_classes", lambda: adapter.predict_classes(x)))
    if "input_gradients" in caps:
        modes = ("plain", "guided", "deconv") if "relu_override" in caps else ("plain",)
        for mode in modes:
            ops.append(
                (
                    f"value_and_grad(relu={mode!r})",
                    functools.partial(adapter.value_and_grad, x, target, relu=mode),
                )
            )
        if names and not failing:
            ops.append(
                ("value_and_grad(Channel)", lambda: adapter.value_and_grad(x, Channel(names[0], 0)))
            )
    if (
        names
        and "layer_gradients" in caps
        and callable(getattr(adapter, "layer_value_and_grad", None))
    ):
        ops.append(
            ("layer_value_and_grad", lambda: adapter.layer_value_and_grad(x, target, names[0]))
        )
    return ops


def _changes(d: list[str], limit: int = 15) -> str:
    more = f"\n  ... ({len(d) - limit} more)" if len(d) > limit else ""
    return "\n  " + "\n  ".join(d[:limit]) + more


def _expect_failure(
    c: str, op_name: str, op: Callable[[], Any], error: type[BaseException]
) -> None:
    try:
        op()
    except KeyboardInterrupt:
        if error is KeyboardInterrupt:
            return
        raise  # a real Ctrl-C
    except ConformanceError:
        raise
    except Exception as err:
        if error is KeyboardInterrupt:
            fail(
                c,
                f"{op_name} turned an injected KeyboardInterrupt into "
                f"{type(err).__name__} ({err}); "
                "never catch BaseException without re-raising it",
            )
        return
    fail(
        c,
        f"{op_name} returned normally although an injected {error.__name__} was raised inside its "
        "forward pass: the adapter swallows errors, or the injector does not reach this model "
        "(pass inject=)",
    )


def check_state_preserved(
    model: Any,
    adapter: Any,
    x: np.ndarray,
    *,
    inject: Injector | bool | None = None,
    make_adapter: Callable[[], Any] | None = None,
) -> None:
    """Every adapter method leaves ``model`` as it was, on success and on a forced error.

    Verifies: after ``forward`` (with all taps), ``predict_classes``, ``value_and_grad`` (every
    relu mode supported, Logit and Channel) and ``layer_value_and_grad``, :func:`snapshot` of
    the model is unchanged (weights, hooks, training flags, requires_grad, ``.grad``, layer
    list, attributes). Then, for ``RuntimeError`` and ``KeyboardInterrupt`` raised inside the
    forward pass by ``inject`` (default: :func:`default_injector`), on a FRESH adapter from
    ``make_adapter`` (default: a new adapter from the plugin manager, bypassing ``wrap``'s
    cache): the error surfaces (KeyboardInterrupt
    as itself), and the model is unchanged apart from the injector's own hook while it is
    active, and entirely once it is removed. ``inject=False`` skips the forced errors.
    """
    c = "check_state_preserved"
    x = np.array(x, dtype=np.float32)
    before = snapshot(model)
    for op_name, op in _ops(adapter, x, failing=False):
        op()
        d = diff(before, snapshot(model))
        if d:
            fail(c, f"{op_name} left the {before.kind} model changed:{_changes(d)}")
    if inject is False:
        return
    injector = default_injector(model) if inject in (None, True) else inject
    if injector is None:
        warnings.warn(
            f"{c}: no error injector for {type(model).__name__}; pass inject= to test "
            "state hygiene on errors",
            ConformanceWarning,
            stacklevel=2,
        )
        return
    factory = make_adapter or _default_factory(model)
    for error in (RuntimeError, KeyboardInterrupt):
        with injector(model, error):  # type: ignore[operator]
            during = snapshot(model)
            # Built under the injector, so that lazily traced functions trace under it too.
            fresh = _build(c, factory, error, during, model)
            if fresh is not None:
                _run_failing(c, fresh, x, error, during, model)
        if fresh is None:  # the constructor runs the model: build outside, then inject
            fresh = factory()
            with injector(model, error):  # type: ignore[operator]
                _run_failing(c, fresh, x, error, snapshot(model), model)
        d = diff(before, snapshot(model))
        if d:
            fail(
                c,
                f"the model differs after the injected {error.__name__} and the injector's removal "
                f"(an adapter change, or a broken injector):{_changes(d)}",
            )


def _build(
    c: str, factory: Callable[[], Any], error: type[BaseException], during: Any, model: Any
) -> Any:
    """The fresh adapter, or None when building it ran the model and hit the injected error
    (after checking that the failed construction left no trace)."""
    try:
        return factory()
    except KeyboardInterrupt:
        if error is not KeyboardInterrupt:
            raise  # a real Ctrl-C
    except Exception:
        pass  # any other failure resurfaces when the adapter is built outside the injector
    _check_unchanged(c, "building an adapter", error, during, model)
    return None


def _run_failing(
    c: str, adapter: Any, x: np.ndarray, error: type[BaseException], during: Any, model: Any
) -> None:
    for op_name, op in _ops(adapter, x[:2], failing=True):
        _expect_failure(c, op_name, op, error)
        _check_unchanged(c, op_name, error, during, model)


def _check_unchanged(
    c: str, op_name: str, error: type[BaseException], during: Any, model: Any
) -> None:
    d = diff(during, snapshot(model))
    if d:
        kind = getattr(during, "kind", "")
        fail(
            c,
            f"{op_name} left the {kind} model changed after an injected {error.__name__} "
            f"inside its forward pass:{_changes(d)}",
        )

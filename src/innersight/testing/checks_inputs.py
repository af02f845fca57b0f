"""Conformance checks of the inputs beyond one batch: ``with_inputs`` and native tensors.

- :func:`check_with_inputs`: an adapter with the ``several_inputs`` capability derives, for
  its own one input, adapters that give the same numbers: ``packed=False`` (the input in its
  own shape) and packed ``(N, D)`` rows, whose gradients come back packed.
- :func:`check_several_inputs`: for a model of several inputs, the derived adapter's outputs
  on a packed batch equal the model called on the parts, and its packed gradients are the
  true ones (:func:`~innersight.testing.check_gradients` on the packed batch).
- :func:`check_native_inputs`: a framework tensor goes in and comes out as the same values,
  and the user's tensor (its values, ``grad``, ``requires_grad``, device) is not changed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from innersight.core.inputspec import InputSpec
from innersight.core.objectives import Logit
from innersight.testing.checks import assert_close, fail, require
from innersight.testing.checks_gradients import check_gradients

__all__ = ["check_native_inputs", "check_several_inputs", "check_with_inputs"]


def _derive(c: str, adapter: Any, spec: InputSpec) -> Any:
    require(c, adapter, "several_inputs")
    with_inputs = getattr(adapter, "with_inputs", None)
    if not callable(with_inputs):
        fail(c, "the adapter declares several_inputs but has no with_inputs(spec)")
    return with_inputs(spec)


def check_with_inputs(adapter: Any, x: np.ndarray) -> None:
    """Adapters derived for the adapter's own single input agree with it.

    ``with_inputs(InputSpec((shape,), ("float32",), packed=False))`` takes ``x`` as it is and
    ``with_inputs(InputSpec((shape,), ("float32",)))`` takes ``x.reshape(N, -1)``: both give
    the adapter's outputs, and the same input gradients (packed ones flattened).
    """
    c = "check_with_inputs"
    x = np.asarray(x, np.float32)
    n, shape = len(x), tuple(int(d) for d in x.shape[1:])
    target = Logit(np.zeros(n, np.int64))
    outputs = adapter.forward(x).outputs
    _, grads = adapter.value_and_grad(x, target)
    for packed, batch in ((False, x), (True, x.reshape(n, -1))):
        derived = _derive(c, adapter, InputSpec((shape,), ("float32",), packed=packed))
        what = "packed" if packed else "unpacked"
        assert_close(c, f"{what} outputs", derived.forward(batch).outputs, outputs)
        _, got = derived.value_and_grad(batch, target)
        assert_close(c, f"{what} input gradients", got, grads.reshape(batch.shape))


def check_several_inputs(
    adapter: Any,
    parts: Sequence[np.ndarray],
    call: Callable[..., Any],
    *,
    extra_args: Sequence[Any] = (),
    gradients: bool = True,
) -> None:
    """The packed batch of ``parts`` gives the outputs of ``call(*parts, *extra_args)`` (the
    native model called on the parts, as numpy), and true packed gradients.

    Args:
        adapter: the adapter of a model of several inputs.
        parts: one channels-last batch per input (float32; integer parts are token ids).
        call: calls the native model on the parts (in the framework's own layout) and returns
            its outputs as a numpy array.
        extra_args: extra forward arguments, passed unbatched after the inputs.
        gradients: also check the packed gradients by finite differences
            (:func:`~innersight.testing.check_gradients`); False for integer parts.
    """
    c = "check_several_inputs"
    spec = InputSpec(
        tuple(tuple(int(d) for d in p.shape[1:]) for p in parts),
        tuple(np.asarray(p).dtype.name for p in parts),
        extra_args=tuple(extra_args),
    )
    derived = _derive(c, adapter, spec)
    packed = spec.pack(parts)
    got = derived.forward(packed).outputs
    assert_close(c, "outputs of the packed batch", got, np.asarray(call(*parts, *extra_args)))
    if gradients:
        check_gradients(derived, packed)


def check_native_inputs(adapter: Any, tensor: Any, *, technique: str = "saliency") -> None:
    """``from_native`` copies, ``explain`` on the tensor equals ``explain`` on its numpy copy,
    ``return_type="native"`` gives the adapter's tensor type, and the user's tensor is left
    as it was (values, ``grad``, ``requires_grad``, device)."""
    import innersight

    c = "check_native_inputs"
    from_native = getattr(adapter, "from_native", None)
    if not callable(from_native) or not callable(getattr(adapter, "to_native", None)):
        fail(c, "the adapter has no from_native/to_native")
    before = _tensor_state(from_native, tensor)
    copy = from_native(tensor)
    if copy is None:
        fail(c, f"from_native returned None for a {type(tensor).__name__}")
    copy[...] = 0  # writing the copy must not reach the tensor
    ex = innersight.explain(technique, adapter, tensor, target=0)
    plain = innersight.explain(technique, adapter, from_native(tensor), target=0)
    assert_close(c, "values explained from the tensor", ex.values, plain.values)
    native = innersight.explain(technique, adapter, tensor, target=0, return_type="native")
    if type(native.values) is not type(tensor):
        fail(c, f"return_type='native' gave {type(native.values).__name__}")
    after = _tensor_state(from_native, tensor)
    for key, value in before.items():
        same = np.array_equal(value, after[key]) if key == "values" else value == after[key]
        if not same:
            fail(c, f"the user's tensor changed: its {key} was {value!r}, is {after[key]!r}")


def _tensor_state(from_native: Callable[[Any], Any], tensor: Any) -> dict[str, Any]:
    grad = getattr(tensor, "grad", None)
    return {
        "values": np.array(from_native(tensor)),
        "grad": None if grad is None else repr(grad),
        "requires_grad": getattr(tensor, "requires_grad", None),
        "device": str(getattr(tensor, "device", "")),
        "type": type(tensor).__name__,
    }

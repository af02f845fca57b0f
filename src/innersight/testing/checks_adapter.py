"""Backend checks that need no gradients: protocol, layers, taps, errors, input hygiene."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from innersight.core.adapter import Capability, ModelAdapter
from innersight.core.errors import LayerNotFoundError
from innersight.core.objectives import Channel, Logit
from innersight.testing.checks import (
    ConformanceError,
    assert_close,
    capabilities,
    check_array,
    fail,
    require,
    sample_inputs,
)

__all__ = [
    "check_inputs_not_mutated",
    "check_layers",
    "check_protocol",
    "check_taps",
    "check_unknown_layer",
]

_VALID_CAPS = {c.value for c in Capability}


def check_protocol(adapter: Any) -> None:
    """The adapter has every protocol member, with the right types.

    Verifies: ``isinstance(adapter, ModelAdapter)``; ``backend`` is a non-empty str;
    ``capabilities`` is a set of known capability names that includes ``forward``; ``name`` is a
    non-empty str; ``input_shape`` is None or a tuple of ints/None.
    """
    c = "check_protocol"
    members = ("backend", "capabilities", "name", "input_shape", "layers", "forward")
    missing = [
        m for m in (*members, "predict_classes", "value_and_grad") if not hasattr(adapter, m)
    ]
    if missing or not isinstance(adapter, ModelAdapter):
        fail(c, f"{type(adapter).__name__} is not a ModelAdapter: missing {', '.join(missing)}")
    if not isinstance(adapter.backend, str) or not adapter.backend:
        fail(c, f"backend must be a non-empty str, got {adapter.backend!r}")
    caps = adapter.capabilities
    if not isinstance(caps, (set, frozenset)):
        fail(c, f"capabilities must be a frozenset of Capability, got {type(caps).__name__}")
    unknown = sorted(str(x) for x in caps if str(x) not in _VALID_CAPS)
    if unknown:
        fail(c, f"unknown capabilities {unknown}; valid: {', '.join(sorted(_VALID_CAPS))}")
    if "forward" not in capabilities(adapter):
        fail(c, f"capabilities {sorted(capabilities(adapter))} lack 'forward'")
    if not isinstance(adapter.name, str) or not adapter.name:
        fail(c, f"name must be a non-empty str, got {adapter.name!r}")
    shape = adapter.input_shape
    if shape is not None and not (isinstance(shape, tuple) and all(_dim_ok(d) for d in shape)):
        fail(c, f"input_shape must be None or a tuple of positive ints/None, got {shape!r}")


def _dim_ok(d: Any) -> bool:
    return d is None or bool(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0)


def check_layers(adapter: Any) -> None:
    """``layers()`` gives well-typed LayerInfos with unique names, the same on every call.

    Verifies: each entry has a non-empty str ``name`` and ``kind``, an ``output_shape`` tuple of
    positive ints or None, an int ``num_params >= 0``; names are unique; a second call returns
    an equal list; adapters with ``layer_taps`` have at least one layer.
    """
    c = "check_layers"
    first, second = list(adapter.layers()), list(adapter.layers())
    for i, info in enumerate(first):
        where = f"layers()[{i}]"
        for attr in ("name", "kind"):
            value = getattr(info, attr, None)
            if not isinstance(value, str) or not value:
                fail(c, f"{where}.{attr} must be a non-empty str, got {value!r}")
        shape = getattr(info, "output_shape", None)
        if not isinstance(shape, tuple) or not all(_dim_ok(d) for d in shape):
            fail(
                c,
                f"{where} ({info.name!r}).output_shape must be a tuple of ints/None, got {shape!r}",
            )
        params = getattr(info, "num_params", None)
        if isinstance(params, bool) or not isinstance(params, (int, np.integer)) or params < 0:
            fail(c, f"{where} ({info.name!r}).num_params must be an int >= 0, got {params!r}")
    names = [info.name for info in first]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        counts = ", ".join(f"{n!r} x{names.count(n)}" for n in dupes)
        fail(c, f"layer names are not unique: {counts}; names must identify one layer each")
    if [(i.name, i.kind, i.output_shape, i.num_params) for i in second] != [
        (i.name, i.kind, i.output_shape, i.num_params) for i in first
    ]:
        fail(c, f"layers() is not stable: first call {names}, second {[i.name for i in second]}")
    if not first and "layer_taps" in capabilities(adapter):
        fail(c, "the adapter declares layer_taps but layers() is empty")


def check_taps(adapter: Any, x: np.ndarray) -> None:
    """One forward with every layer tapped returns well-formed activations and unchanged outputs.

    Verifies: outputs and every activation are finite float32 arrays, batch first; activation
    shapes match ``LayerInfo.output_shape`` where known; exactly the requested layers come back;
    outputs with taps equal outputs without (an empty ``output_shape`` counts as unknown);
    a layer tapped alone gives the same activation as
    when tapped with all others; no taps gives no activations.
    """
    c = "check_taps"
    require(c, adapter, "layer_taps")
    x = np.asarray(x)
    n = len(x)
    plain = adapter.forward(x)
    # After a pass: adapters that learn the graph from one list only the layers that ran.
    infos = list(adapter.layers())
    names = [i.name for i in infos]
    out = check_array(c, "forward(x).outputs", plain.outputs)
    if out.ndim < 2 or out.shape[0] != n:
        fail(c, f"forward(x).outputs has shape {out.shape}, expected batch first ({n}, ...)")
    if dict(plain.activations):
        fail(c, f"forward(x) without taps returned activations {sorted(plain.activations)}")
    tapped = adapter.forward(x, taps=names)
    acts = tapped.activations
    if not isinstance(acts, Mapping) or set(acts) != set(names):
        got = sorted(acts) if isinstance(acts, Mapping) else type(acts).__name__
        missing = sorted(set(names) - set(acts)) if isinstance(acts, Mapping) else names
        fail(c, f"tapping every layer returned {got}; missing {missing}")
    for info in infos:
        # () means "rank unknown" (e.g. before a torch adapter has probed shapes): batch only.
        shape = (n, *info.output_shape) if info.output_shape else None
        arr = check_array(c, f"activation of {info.name!r}", acts[info.name], shape)
        if arr.ndim < 2 or arr.shape[0] != n:
            fail(c, f"activation of {info.name!r} has shape {arr.shape}, expected ({n}, ...)")
    assert_close(c, "outputs with every layer tapped (vs. no taps)", tapped.outputs, out, rtol=1e-5)
    for name in dict.fromkeys([names[0], names[len(names) // 2], names[-1]]):
        alone = adapter.forward(x, taps=[name]).activations
        if set(alone) != {name}:
            fail(c, f"forward(x, taps=[{name!r}]) returned activations {sorted(alone)}")
        assert_close(
            c,
            f"activation of {name!r} tapped alone (vs. all tapped)",
            alone[name],
            acts[name],
            rtol=1e-5,
        )


def check_unknown_layer(adapter: Any, x: np.ndarray | None = None) -> None:
    """Unknown layer names raise LayerNotFoundError with a helpful message.

    Verifies: tapping ``'no_such_layer'`` raises LayerNotFoundError whose message names it and
    lists the model's layers; a near miss of a real name (one extra character) raises it with a
    "did you mean" suggestion of the real name; objectives and ``layer_value_and_grad`` on an
    unknown layer raise it too.
    """
    c = "check_unknown_layer"
    require(c, adapter, "layer_taps")
    x = sample_inputs(adapter, 1) if x is None else np.asarray(x)[:1]
    names = [i.name for i in adapter.layers()]
    real = names[-1]
    near = next(real + s for s in ("x", "_x", "_typo") if real + s not in names)
    msg = _layer_error(
        c, "forward(x, taps=['no_such_layer'])", lambda: adapter.forward(x, taps=["no_such_layer"])
    )
    if "no_such_layer" not in msg or names[0] not in msg:
        fail(
            c,
            "the message for an unknown layer must name it and list the layers "
            f"({names[0]!r}, ...): {msg!r}",
        )
    msg = _layer_error(c, f"forward(x, taps=[{near!r}])", lambda: adapter.forward(x, taps=[near]))
    if near not in msg or "did you mean" not in msg.lower() or real not in msg.replace(near, ""):
        fail(
            c,
            f"the message for the near miss {near!r} must suggest {real!r} "
            f"('did you mean ...?'): {msg!r}",
        )
    caps = capabilities(adapter)
    if "input_gradients" in caps:
        _layer_error(
            c,
            "value_and_grad(x, Channel('no_such_layer', 0))",
            lambda: adapter.value_and_grad(x, Channel("no_such_layer", 0)),
        )
    if "layer_gradients" in caps and callable(getattr(adapter, "layer_value_and_grad", None)):
        _layer_error(
            c,
            "layer_value_and_grad(x, Logit(0), 'no_such_layer')",
            lambda: adapter.layer_value_and_grad(x, Logit(0), "no_such_layer"),
        )


def _layer_error(c: str, call: str, fn: Callable[[], Any]) -> str:
    try:
        fn()
    except LayerNotFoundError as err:
        return str(err)
    except ConformanceError:
        raise
    except Exception as err:
        fail(c, f"{call} raised {type(err).__name__} ({err}), expected LayerNotFoundError")
    fail(c, f"{call} returned normally; expected LayerNotFoundError")


def _input_ops(adapter: Any, x: np.ndarray) -> list[tuple[str, Callable[[np.ndarray], list[Any]]]]:
    caps = capabilities(adapter)
    ops: list[tuple[str, Callable[[np.ndarray], list[Any]]]] = [
        ("forward", lambda a: [adapter.forward(a).outputs]),
        ("predict_classes", lambda a: [adapter.predict_classes(a)]),
    ]
    names = [i.name for i in adapter.layers()] if "layer_taps" in caps else []
    if names:
        taps = list(dict.fromkeys([names[0], names[-1]]))
        ops.append(
            (
                "forward with taps",
                lambda a: [adapter.forward(a, taps=taps).activations[t] for t in taps],
            )
        )
    if "input_gradients" in caps:
        modes = ("plain", "guided", "deconv") if "relu_override" in caps else ("plain",)
        for mode in modes:
            ops.append(
                (
                    f"value_and_grad(relu={mode!r})",
                    functools.partial(_listed_grad, adapter, mode),
                )
            )
    if names and "layer_gradients" in caps:
        ops.append(
            (
                f"layer_value_and_grad(layer={names[0]!r})",
                lambda a: list(adapter.layer_value_and_grad(a, Logit(0), names[0])),
            )
        )
    return ops


def _listed_grad(adapter: Any, mode: str, a: np.ndarray) -> list[Any]:
    return list(adapter.value_and_grad(a, Logit(0), relu=mode))


def _variants(x32: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(label, array passed, array that owns the memory) for each input flavour."""
    padded = np.full((*x32.shape[:-1], 2 * x32.shape[-1]), 7.0, dtype=np.float32)
    padded[..., ::2] = x32
    readonly = x32.copy()
    readonly.flags.writeable = False
    f64 = x32.astype(np.float64)
    fortran = np.asfortranarray(x32)
    out = [
        ("float32", x32.copy(), None),
        ("float64", f64, None),
        ("non-contiguous", padded[..., ::2], padded),
        ("read-only", readonly, None),
        ("Fortran-ordered", fortran, None),
    ]
    return [(label, arr, arr if owner is None else owner) for label, arr, owner in out]


def check_inputs_not_mutated(adapter: Any, x: np.ndarray) -> None:
    """No adapter method writes to its input, whatever the input's dtype or memory layout.

    Verifies, for float32, float64, non-contiguous (a strided view into a larger buffer),
    read-only and Fortran-ordered copies of ``x``: ``forward`` (with and without taps),
    ``predict_classes``, ``value_and_grad`` (every relu mode the adapter supports) and
    ``layer_value_and_grad`` run without error, leave the input (and the buffer behind a view)
    bit-identical with unchanged flags, and give the same results as on float32 input.
    """
    c = "check_inputs_not_mutated"
    x32 = np.array(x, dtype=np.float32)
    ops = _input_ops(adapter, x32)
    expected = {name: op(x32.copy()) for name, op in ops}
    for label, arr, owner in _variants(x32):
        for name, op in ops:
            before, writeable = owner.copy(), owner.flags.writeable
            try:
                results = op(arr)
            except Exception as err:
                fail(c, f"{name} on a {label} input raised {type(err).__name__}: {err}")
            if owner.tobytes() != before.tobytes():
                changed = int(np.sum(owner != before))
                fail(
                    c,
                    f"{name} changed its {label} input in place ({changed} entries differ); "
                    "adapters must build their own tensors from a copy",
                )
            if owner.flags.writeable != writeable:
                fail(c, f"{name} changed the writeable flag of its {label} input")
            for k, (got, exp) in enumerate(zip(results, expected[name], strict=True)):
                assert_close(
                    c,
                    f"{name} result {k} on a {label} input (vs. float32 input)",
                    got,
                    exp,
                    rtol=1e-5,
                )

"""Gradient checks: objective values against the numpy spec, gradients against finite
differences, per-sample independence, layer gradients, and agreement with a reference model.

Finite differences run in the adapter's own float32: the model is probed at ``x +/- eps*d`` for
random directions ``d`` and three step sizes ``eps`` (1e-2, 1e-3 and 1e-4 times the RMS of
``x``). Comparing ``f(x+) - f(x-)`` with ``<grad, x+ - x->`` (the exact float32 step, not the
intended one) removes input rounding from the comparison. Networks built from ReLUs and
max-pools are piecewise linear, so a step that crosses a kink can disagree legitimately: a
sample passes when any step size agrees within ``rtol`` (plus a float32 noise allowance). A
wrong sign, a gradient of another sample or of another objective fails at every step size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from innersight.core.objectives import (
    Channel,
    Logit,
    Neuron,
    Objective,
    channel_indices,
    evaluate,
    layer_of,
    neuron_flat_index,
)
from innersight.testing.checks import (
    assert_close,
    capabilities,
    check_array,
    default_objectives,
    describe,
    fail,
    pick_layers,
    require,
    subset_objective,
    tile_objective,
)

__all__ = ["check_gradients", "check_layer_gradients"]

_EPS = (1e-2, 1e-3, 1e-4)


def check_gradients(
    adapter: Any,
    x: np.ndarray,
    objectives: Sequence[Objective] | None = None,
    relu: str = "plain",
    *,
    rtol: float = 2e-2,
    seed: int = 0,
) -> None:
    """``value_and_grad`` returns the spec's values and the true gradient, sample by sample.

    Verifies, for each objective (default: Logit with per-sample targets, and Channel (with
    crop) and Neuron objectives on the deepest spatial and vector layers, on units that ``x``
    activates):
    values are finite float32 ``(N,)`` equal to ``objectives.evaluate`` on ``forward``
    activations (for Logit, pre-activation scores whose softmax/sigmoid gives the outputs are
    accepted, see ``logits="auto"``); gradients are finite float32 shaped like ``x``; with
    ``relu="plain"`` they agree with central finite differences along random directions; each
    sample's value and gradient are the same when it is run alone (no cross-sample coupling);
    with ``"guided"``/``"deconv"`` on a model with ReLU layers, the gradient differs from the
    plain one (the override is applied).
    """
    c = f"check_gradients(relu={relu!r})"
    require(c, adapter, "input_gradients", *(() if relu == "plain" else ("relu_override",)))
    x = np.array(x, dtype=np.float32)
    n = len(x)
    outputs = adapter.forward(x).outputs
    num_outputs = int(np.prod(outputs.shape[1:]))
    pick = pick_layers(adapter, x)
    objs = list(objectives) if objectives is not None else []
    objs = objs or default_objectives(adapter, x, pick, num_outputs)
    rng = np.random.default_rng(seed)
    for obj in objs:
        label = describe(obj)
        values, grads = adapter.value_and_grad(x, obj, relu=relu)
        check_array(c, f"values of {label}", values, (n,))
        check_array(c, f"gradient of {label}", grads, x.shape)
        _check_spec_values(c, adapter, x, obj, values)
        if relu == "plain":
            _check_directional(c, adapter, x, obj, grads, None, rng, rtol)
        for i in range(n):
            v_i, g_i = adapter.value_and_grad(x[i : i + 1], subset_objective(obj, [i]), relu=relu)
            what = f"of {label} for sample {i} run alone (vs. in the batch)"
            assert_close(c, f"value {what}", v_i, values[i : i + 1], rtol=1e-4, atol=1e-6)
            atol = 1e-4 * float(np.abs(grads[i]).max()) + 1e-7
            assert_close(c, f"gradient {what}", g_i[0], grads[i], rtol=1e-4, atol=atol)
    if relu != "plain":
        _check_override_applied(c, adapter, x, relu, num_outputs)


def _check_override_applied(
    c: str, adapter: Any, x: np.ndarray, relu: str, num_outputs: int
) -> None:
    """On a model with ReLU layers, a relu override that changes nothing was not applied."""
    caps = capabilities(adapter)
    relus = (
        [i.name for i in adapter.layers() if "relu" in i.kind.lower()]
        if "layer_taps" in caps
        else []
    )
    if not relus:
        return  # fused or functional ReLUs are invisible from here: see check_matches_reference
    logit = Logit(np.arange(len(x)) % num_outputs)
    _, plain = adapter.value_and_grad(x, logit)
    _, override = adapter.value_and_grad(x, logit, relu=relu)
    if np.array_equal(plain, override):
        fail(
            c,
            f"relu={relu!r} gives exactly the plain gradient on a model with ReLU layers "
            f"({', '.join(relus[:5])}): the override is not applied (in-place or functional "
            "ReLUs?)",
        )


def _check_spec_values(
    c: str, adapter: Any, x: np.ndarray, obj: Objective, values: np.ndarray
) -> None:
    layer = layer_of(obj)
    fr = adapter.forward(x, taps=[layer] if layer else ())
    expected = evaluate(obj, fr.outputs, dict(fr.activations))
    tol = 1e-4 * float(np.abs(expected).max()) + 1e-6
    if not isinstance(obj, Logit) or np.allclose(values, expected, rtol=1e-4, atol=tol):
        assert_close(
            c,
            f"values of {describe(obj)} (vs. objectives.evaluate on forward())",
            values,
            expected,
            rtol=1e-4,
            atol=tol,
        )
        return
    scores = _all_scores(adapter, x, fr.outputs)
    if scores is None:
        assert_close(
            c,
            f"values of {describe(obj)} (vs. objectives.evaluate on forward())",
            values,
            expected,
            rtol=1e-4,
            atol=tol,
        )
        return
    idx = np.broadcast_to(np.asarray(obj.index), (len(x),))
    assert_close(
        c,
        f"values of {describe(obj)} (vs. the per-class scores)",
        values,
        scores[np.arange(len(x)), idx],
        rtol=1e-4,
        atol=1e-6,
    )


def _all_scores(adapter: Any, x: np.ndarray, outputs: np.ndarray) -> np.ndarray | None:
    """Logit values for every class, when a softmax or sigmoid of them gives ``outputs``
    (the ``logits="auto"`` convention); None otherwise."""
    n = len(x)
    flat = outputs.reshape(n, -1).astype(np.float64)
    k = flat.shape[1]
    if k > 64:
        return None
    vals, _ = adapter.value_and_grad(np.repeat(x, k, axis=0), Logit(np.tile(np.arange(k), n)))
    z = np.asarray(vals, np.float64).reshape(n, k)
    soft = np.exp(z - z.max(axis=1, keepdims=True))
    soft /= soft.sum(axis=1, keepdims=True)
    for squashed in (soft, 1.0 / (1.0 + np.exp(-z))):
        if np.allclose(squashed, flat, rtol=1e-4, atol=1e-5):
            return z
    return None


def _check_directional(
    c: str,
    adapter: Any,
    x: np.ndarray,
    obj: Objective,
    grads: np.ndarray,
    layer: str | None,
    rng: np.random.Generator,
    rtol: float,
    directions: int = 2,
) -> None:
    """Central differences along random directions. With ``layer``, ``grads`` is the gradient
    w.r.t. that layer's activations and the chain rule ``<grads, act(x+) - act(x-)>`` is used."""
    n = len(x)
    scale = max(float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))), 1e-2)
    steps = [(d, e) for d in range(directions) for e in _EPS]
    dirs = rng.standard_normal((directions, *x.shape))
    plus = np.concatenate([x + e * scale * dirs[d] for d, e in steps]).astype(np.float32)
    minus = np.concatenate([x - e * scale * dirs[d] for d, e in steps]).astype(np.float32)
    both = np.concatenate([plus, minus])
    tiled = tile_objective(obj, 2 * len(steps))
    f, _ = adapter.value_and_grad(both, tiled)
    f = np.asarray(f, np.float64).reshape(2, len(steps), n)
    if layer is None:
        delta = (plus.astype(np.float64) - minus).reshape(len(steps), n, -1)
    else:
        acts = adapter.forward(both, taps=[layer]).activations[layer].astype(np.float64)
        acts = acts.reshape(2, len(steps), n, -1)
        delta = acts[0] - acts[1]
    g = grads.reshape(1, n, -1).astype(np.float64)
    analytic = np.sum(g * delta, axis=-1)
    numeric = f[0] - f[1]
    typical = np.linalg.norm(g, axis=-1) * np.linalg.norm(delta, axis=-1) / np.sqrt(g.shape[-1])
    noise = 4e-6 * (1.0 + np.abs(f).max(axis=0))  # float32 rounding of f(x+) - f(x-)
    tol = rtol * np.maximum(np.abs(analytic), np.abs(numeric)) + rtol * typical + noise
    ok = (np.abs(analytic - numeric) <= tol).reshape(directions, len(_EPS), n).any(axis=1)
    if not ok.all():
        d, i = (int(v) for v in np.argwhere(~ok)[0])
        k = d * len(_EPS) + len(_EPS) - 1
        wrt = f"the activations of {layer!r}" if layer else "the input"
        fail(
            c,
            f"the gradient of {describe(obj)} w.r.t. {wrt} disagrees with central finite "
            "differences "
            f"for sample {i} along random direction {d}: <grad, step> = {analytic[k, i]:.6g} but "
            f"f(x+step/2) - f(x-step/2) = {numeric[k, i]:.6g} "
            f"(step {_EPS[-1]:g} x RMS(x), and also "
            f"at steps {', '.join(f'{e:g}' for e in _EPS[:-1])}; rtol {rtol:g}); wrong sign, wrong "
            "sample or wrong tensor?",
        )


def _expected_seed(obj: Objective, shape: tuple[int, ...]) -> np.ndarray:
    """d(sum of values)/d(activations) of an objective on the layer it reads."""
    n = shape[0]
    out = np.zeros(shape, dtype=np.float64)
    if isinstance(obj, Neuron):
        out.reshape(n, -1)[np.arange(n), neuron_flat_index(obj, shape[1:], n)] = 1.0
        return out
    if not isinstance(obj, Channel):
        raise TypeError(f"no activation mask for {obj!r}")
    idx = channel_indices(obj, shape)
    if len(shape) == 2:
        out[np.arange(n), idx] = 1.0
        return out
    cr = int(obj.crop)
    area = (shape[1] - 2 * cr) * (shape[2] - 2 * cr)
    for i in range(n):
        out[i, cr : shape[1] - cr, cr : shape[2] - cr, idx[i]] = 1.0 / area
    return out


def _check_own_objectives(c: str, fn: Any, x: np.ndarray, layer: str, fr: Any) -> None:
    """Channel (with crop) and Neuron objectives ON ``layer``: exact masks as gradients."""
    rows, act = np.arange(len(x)), fr.activations[layer]
    shape = act.shape
    crop = 1 if len(shape) == 4 and min(shape[1:3]) >= 3 else 0
    own: list[Objective] = [
        Channel(layer, (rows * 3 + 1) % shape[-1], crop=crop),
        Neuron(layer, (rows * 5 + 3) % act[0].size),
    ]
    for obj in own:
        values, acts, grads = fn(x, obj, layer)
        label = f"layer_value_and_grad(x, {describe(obj)}, {layer!r})"
        check_array(c, f"values of {label}", values, (len(x),))
        check_array(c, f"activations from {label}", acts, shape)
        check_array(c, f"gradient from {label}", grads, shape)
        assert_close(c, f"activations from {label} (vs. forward taps)", acts, act, rtol=1e-5)
        expected = evaluate(obj, fr.outputs, {layer: act})
        assert_close(c, f"values of {label}", values, expected, rtol=1e-4, atol=1e-6)
        assert_close(
            c,
            f"gradient from {label} (vs. the exact {type(obj).__name__} mask)",
            grads,
            _expected_seed(obj, shape),
            rtol=1e-5,
        )


def check_layer_gradients(
    adapter: Any, x: np.ndarray, *, rtol: float = 2e-2, seed: int = 0
) -> None:
    """``layer_value_and_grad(x, objective, layer)`` returns values, activations and the exact
    gradient with respect to the activations.

    Verifies, on the deepest spatial and vector layers: activations equal ``forward``'s tapped
    ones; for a Channel objective (with crop) and a Neuron objective ON the layer itself the
    gradient is exactly the averaging mask (``1/(H'W')`` on the cropped window of the channel)
    or the one-hot unit, and values match ``objectives.evaluate``; for a Logit objective the
    values equal ``value_and_grad``'s and the chain rule ``<grad, act(x+) - act(x-)>`` agrees
    with ``f(x+) - f(x-)`` along random input directions.
    """
    c = "check_layer_gradients"
    require(c, adapter, "layer_gradients", "layer_taps", "input_gradients")
    fn = getattr(adapter, "layer_value_and_grad", None)
    if not callable(fn):
        fail(c, "the adapter declares layer_gradients but has no layer_value_and_grad method")
    x = np.array(x, dtype=np.float32)
    rows = np.arange(len(x))
    pick = pick_layers(adapter, x)
    layers = [name for name in (pick.spatial, pick.vector) if name]
    if not layers:
        fail(c, "no spatial or vector layer before the output to check layer gradients on")
    fr = adapter.forward(x, taps=layers)
    num_outputs = int(np.prod(fr.outputs.shape[1:]))
    rng = np.random.default_rng(seed)
    for layer in layers:
        _check_own_objectives(c, fn, x, layer, fr)
        logit = Logit(rows % num_outputs)
        values, _, grads = fn(x, logit, layer)
        ref_values, _ = adapter.value_and_grad(x, logit)
        assert_close(
            c,
            f"values of layer_value_and_grad(x, {describe(logit)}, {layer!r}) (vs. value_and_grad)",
            values,
            ref_values,
            rtol=1e-4,
            atol=1e-6,
        )
        _check_directional(c, adapter, x, logit, grads, layer, rng, rtol)

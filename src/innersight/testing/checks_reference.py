"""Agreement with a reference: the same network in two backends gives the same numbers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from innersight.core.adapter import LOGITS, input_tap
from innersight.core.errors import LayerNotFoundError
from innersight.core.objectives import Channel, Logit, Objective
from innersight.testing.checks import assert_close, capabilities, describe

__all__ = ["check_matches_reference"]


def check_matches_reference(
    adapter: Any,
    reference: Any,
    x: np.ndarray,
    *,
    layer_map: Mapping[str, str] | None = None,
    rtol: float = 1e-4,
) -> None:
    """An adapter and a reference adapter of the same network agree on every number.

    ``layer_map`` maps the adapter's layer names to the reference's (default: the names both
    have). Verifies outputs, mapped activations, the special taps the adapter serves
    (:data:`~innersight.core.LOGITS`, and the :func:`~innersight.core.input_tap` of a mapped
    layer whose reference input is the output of another mapped layer), Logit input gradients
    in every relu mode both support, Channel values and gradients on a mapped layer, and layer
    gradients when both have them. Use noise inputs: near-tied max-pool windows can route
    gradients differently.
    """
    c = "check_matches_reference"
    x = np.array(x, dtype=np.float32)
    ref_names = [i.name for i in reference.layers()]
    ours = [i.name for i in adapter.layers()] if "layer_taps" in capabilities(adapter) else []
    mapping = dict(layer_map) if layer_map is not None else {n: n for n in ours if n in ref_names}
    got, exp = (
        adapter.forward(x, taps=list(mapping)),
        reference.forward(x, taps=list(mapping.values())),
    )
    assert_close(c, "outputs (vs. the reference)", got.outputs, exp.outputs, rtol=rtol)
    for mine, theirs in mapping.items():
        assert_close(
            c,
            f"activation of {mine!r} (vs. reference {theirs!r})",
            got.activations[mine],
            exp.activations[theirs],
            rtol=rtol,
        )
    _check_special_taps(adapter, reference, x, mapping, ref_names, rtol)
    logit = Logit(np.arange(len(x)) % int(np.prod(exp.outputs.shape[1:])))
    shared = capabilities(adapter) & capabilities(reference)
    if "input_gradients" in shared:
        modes = ("plain", "guided", "deconv") if "relu_override" in shared else ("plain",)
        for mode in modes:
            for obj, ref_obj in _paired_objectives(logit, mapping, exp.activations):
                _check_input_gradients(adapter, reference, x, obj, ref_obj, mode, rtol)
    if "layer_gradients" in shared and mapping:
        spatial = [m for m, t in mapping.items() if exp.activations[t].ndim == 4]
        mine = spatial[-1] if spatial else next(iter(mapping))
        _check_layer_gradients(adapter, reference, x, logit, (mine, mapping[mine]), rtol)


def _check_input_gradients(
    adapter: Any, reference: Any, x: np.ndarray, obj: Any, ref_obj: Any, mode: str, rtol: float
) -> None:
    c = "check_matches_reference"
    v, g = adapter.value_and_grad(x, obj, relu=mode)
    rv, rg = reference.value_and_grad(x, ref_obj, relu=mode)
    what = f"{describe(obj)} (relu={mode!r}, vs. reference)"
    assert_close(c, f"values of {what}", v, rv, rtol=rtol, atol=1e-6)
    assert_close(c, f"gradient of {what}", g, rg, rtol=rtol)


def _check_layer_gradients(
    adapter: Any, reference: Any, x: np.ndarray, logit: Any, layers: tuple[str, str], rtol: float
) -> None:
    c, (mine, theirs) = "check_matches_reference", layers
    v, a, g = adapter.layer_value_and_grad(x, logit, mine)
    rv, ra, rg = reference.layer_value_and_grad(x, logit, theirs)
    what = f"layer_value_and_grad at {mine!r} (vs. reference {theirs!r})"
    assert_close(c, f"values of {what}", v, rv, rtol=rtol, atol=1e-6)
    assert_close(c, f"activations of {what}", a, ra, rtol=rtol)
    assert_close(c, f"gradient of {what}", g, rg, rtol=rtol)


def _paired_objectives(
    logit: Logit, mapping: Mapping[str, str], ref_acts: Mapping[str, np.ndarray]
) -> list[tuple[Objective, Objective]]:
    pairs: list[tuple[Objective, Objective]] = [(logit, logit)]
    spatial = [(m, t) for m, t in mapping.items() if ref_acts[t].ndim == 4]
    if spatial:
        mine, theirs = spatial[len(spatial) // 2]
        ch = (np.arange(len(ref_acts[theirs])) * 3 + 1) % ref_acts[theirs].shape[-1]
        pairs.append((Channel(mine, ch), Channel(theirs, ch)))
    return pairs


def _check_special_taps(
    adapter: Any,
    reference: Any,
    x: np.ndarray,
    mapping: Mapping[str, str],
    ref_names: list[str],
    rtol: float,
) -> None:
    """LOGITS and input taps agree where the adapter serves them (they are optional)."""
    c = "check_matches_reference"
    targets = set(mapping.values())
    pairs = [(LOGITS, LOGITS)]
    for mine, theirs in mapping.items():
        i = ref_names.index(theirs) if theirs in ref_names else 0
        if i > 0 and ref_names[i - 1] in targets:  # its input was compared as an output
            pairs.append((input_tap(mine), input_tap(theirs)))
    for mine, theirs in pairs:
        try:
            got = adapter.forward(x, taps=[mine]).activations[mine]
        except LayerNotFoundError:
            continue  # not served by this adapter
        exp = reference.forward(x, taps=[theirs]).activations[theirs]
        assert_close(c, f"tap {mine!r} (vs. reference {theirs!r})", got, exp, rtol=rtol)

"""Activation grids: every channel of the layers worth seeing as images, from one forward pass.

Default layers (``layers=None``): every layer with a spatial (H, W, C) output of at least 2x2,
except layers that only repeat or pad their input (Identity, Dropout, ZeroPadding2D, ...;
a pass-through layer stays when the layer before it outputs other numbers, as timm's
``norm_pre`` holding ConvNeXt's last stage after a functional residual add), layers whose
next layer is their own normalisation or activation (a convolution followed by its BatchNorm
and ReLU is shown once, after the ReLU), and layers that another shown layer already names as
an alias (the same tensor). What was left out, and why, is in
``meta["skipped"]``; shown layers that containers complete are named in ``meta["aliases"]``
(torch ``layer4.1.relu`` is ``layer4``).

The picture is capped (``max_height=4096`` px by default, see the ``layer_grid`` renderer):
channels per layer are limited first, then layers are left out, and the picture says what it
does not show; ``save("grids/{layer}.png")`` writes one file per layer instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from innersight.core import (
    Explanation,
    InputError,
    LayerInfo,
    ModelAdapter,
    Technique,
    hookimpl,
    shaped_layers,
)
from innersight.plugins._layers import (
    display_name,
    is_activation,
    is_map,
    is_normalisation,
    is_padding,
    is_pass_through,
)

SKIP_REASONS = {
    "pass_through": "repeats its input (Identity, Dropout, noise)",
    "padding": "pads its input",
    "too_small": "a 1x1 map",
    "followed": "its next layer is its own normalisation or activation, shown instead",
    "alias": "the same tensor as a shown layer (an alias)",
}


class Selection:
    """The default layers: ``names`` to show, the spatial layers ``skipped`` by reason, display
    ``aliases``, and ``repeats``: pass-through layers (Identity, Dropout) to drop once the
    forward shows that they repeat the layer before them (``{layer: layer before}``)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.skipped: dict[str, list[str]] = {}
        self.aliases: dict[str, str] = {}
        self.repeats: dict[str, str] = {}

    def skip(self, reason: str, name: str) -> None:
        self.skipped.setdefault(reason, []).append(name)

    def settle(self, acts: dict[str, np.ndarray]) -> None:
        """Drop the pass-through layers whose numbers are those of the layer before them."""
        for layer, before in self.repeats.items():
            if np.array_equal(acts[layer], acts[before]):
                self.names.remove(layer)
                self.skip("pass_through", layer)


def default_layers(model: ModelAdapter, inputs: np.ndarray) -> Selection:
    """The layers worth seeing (see the module docstring)."""
    infos = shaped_layers(model, inputs[:1])
    sel, named = Selection(), set[str]()
    for i, info in enumerate(infos):
        if not info.is_spatial:
            continue
        reason = _skip_reason(info, infos[i + 1] if i + 1 < len(infos) else None, named)
        if reason is not None:
            sel.skip(reason, info.name)
            continue
        sel.names.append(info.name)
        named.update(info.aliases)
        alias = display_name(model, info)
        if alias != info.name:
            sel.aliases[info.name] = alias
        # a pass-through layer is shown only when it holds a tensor no layer before it outputs
        # (timm's norm_pre after a functional residual add)
        prev = infos[i - 1] if i > 0 else None
        if is_pass_through(info.kind) and prev and prev.output_shape == info.output_shape:
            sel.repeats[info.name] = prev.name
    if not sel.names:  # only tiny maps: show them rather than nothing
        sel.names = [info.name for info in infos if info.is_spatial]
        sel.skipped.pop("too_small", None)
    return sel


def _skip_reason(info: LayerInfo, nxt: LayerInfo | None, named: set[str]) -> str | None:
    if is_padding(info.kind):
        return "padding"
    if not is_map(info):
        return "too_small"
    if info.name in named:
        return "alias"
    if (
        nxt is not None
        and tuple(nxt.output_shape) == tuple(info.output_shape)
        and (is_normalisation(nxt.kind) or is_activation(nxt.kind))
    ):
        return "followed"
    return None


class ActivationGrid(Technique):
    """Intermediate activations (Chollet's "visualising intermediate activations")."""

    name = "activation_grid"
    summary = "Every channel of the spatial layers worth seeing as an image grid (one forward)."
    requires = frozenset({"forward", "layer_taps"})
    input_kinds = frozenset({"image"})
    order = 10

    def explain(
        self,
        model: ModelAdapter,
        inputs: np.ndarray,
        *,
        layers: Sequence[str] | None = None,
    ) -> Explanation:
        """Tap every channel of the chosen spatial layers in one forward pass.

        Args:
            layers: layer names to show; None (default) picks the spatial layers worth seeing
                (stage and block outputs, convolutions after their activation; no Identity,
                Dropout, padding or 1x1 maps), see ``meta["skipped"]``.
        """
        if isinstance(layers, str):
            layers = [layers]
        sel = default_layers(model, inputs) if layers is None else None
        names = sel.names if sel is not None else list(layers or [])
        extra = list(sel.repeats.values()) if sel is not None else []
        result = model.forward(inputs, taps=list(dict.fromkeys(names + extra)))
        if sel is not None:
            sel.settle(dict(result.activations))
            names = sel.names
        values = {n: np.asarray(result.activations[n]) for n in names if n in result.activations}
        flat = [n for n, v in values.items() if v.ndim != 4]
        if flat and layers is not None:
            shapes = ", ".join(f"{n} {values[n].shape[1:]}" for n in flat)
            raise InputError(
                f"activation_grid shows spatial (H, W, C) layers; not spatial: {shapes}; "
                "leave layers=None to pick the spatial layers worth seeing"
            )
        values = {n: v for n, v in values.items() if v.ndim == 4}
        if not values:
            raise InputError(
                f"{model.backend} model {model.name} has no layer with a spatial (H, W, C) "
                "output; activation_grid needs convolutional feature maps"
            )
        meta: dict[str, Any] = {"layers": {n: list(v.shape[1:]) for n, v in values.items()}}
        if sel is not None:
            meta["layer_rule"] = "default: the spatial layers worth seeing; see 'skipped'"
            meta["skipped"] = {SKIP_REASONS[k]: v for k, v in sel.skipped.items()}
            meta["aliases"] = {k: v for k, v in sel.aliases.items() if k in values}
        return Explanation(
            technique=self.name,
            kind="layer_grid",
            values=values,
            inputs=inputs,
            params={"layers": list(values)},
            meta=meta,
        )


@hookimpl
def innersight_register_techniques() -> Any:
    yield ActivationGrid()

"""Activation grids: every channel of every layer as an image, from ONE forward pass."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from innersight.core import Explanation, InputError, ModelAdapter, Technique, hookimpl


class ActivationGrid(Technique):
    """Intermediate activations (Chollet's "visualising intermediate activations")."""

    name = "activation_grid"
    summary = "Every channel of every spatial layer as an image grid (one forward pass)."
    requires = frozenset({"forward", "layer_taps"})

    def explain(
        self,
        model: ModelAdapter,
        inputs: np.ndarray,
        *,
        layers: Sequence[str] | None = None,
    ) -> Explanation:
        """Args:
        layers: layer names to show; None (default) taps every layer with a spatial
            (H, W, C) output.
        """
        if isinstance(layers, str):
            layers = [layers]
        names = list(layers) if layers is not None else [info.name for info in model.layers()]
        result = model.forward(inputs, taps=names)
        values = {n: np.asarray(result.activations[n]) for n in names if n in result.activations}
        if layers is None:
            values = {n: v for n, v in values.items() if v.ndim == 4}
        else:
            flat = [n for n, v in values.items() if v.ndim != 4]
            if flat:
                shapes = ", ".join(f"{n} {values[n].shape[1:]}" for n in flat)
                raise InputError(
                    f"activation_grid shows spatial (H, W, C) layers; not spatial: {shapes}; "
                    "leave layers=None to pick every spatial layer"
                )
        if not values:
            raise InputError(
                f"{model.backend} model {model.name} has no layer with a spatial (H, W, C) "
                "output; activation_grid needs convolutional feature maps"
            )
        return Explanation(
            technique=self.name,
            kind="layer_grid",
            values=values,
            inputs=inputs,
            params={"layers": list(values)},
            meta={"layers": {n: list(v.shape[1:]) for n, v in values.items()}},
        )


@hookimpl
def innersight_register_techniques() -> Any:
    yield ActivationGrid()

"""Fast parameters for comparing every technique at once (``innersight compare --all``).

Each technique should take seconds on a CPU, and a technique that needs a layer gets one that
both models have: the last spatial layer of model A with a counterpart in model B. Only
parameters a technique accepts are passed; the user's parameters win.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from innersight.compare.run import LayerTranslator
from innersight.core.technique import Technique

__all__ = ["QUICK", "quick_params"]

#: Fixed settings per technique name (callables below add the model-dependent ones).
QUICK: Mapping[str, Mapping[str, Any]] = {
    "smoothgrad": {"samples": 8},
    "integrated_gradients": {"steps": 24},
    "filter_maximization": {"steps": 32},
    "class_maximization": {"steps": 32},
    "embeddings": {"method": "pca"},
}


def _spatial_layer(a: Any, x: np.ndarray, translate: LayerTranslator) -> str | None:
    names = [info.name for info in a.layers()]
    acts = a.forward(x[:1], taps=names).activations
    spatial = [n for n in names if np.ndim(acts.get(n)) == 4]
    for name in reversed(spatial):
        if translate(name, strict=False) is not None:
            return name
    return None


def quick_params(
    technique: Technique,
    a: Any,
    x: np.ndarray | None,
    translate: LayerTranslator,
    user: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Parameters that make ``technique`` quick on adapter ``a`` with inputs ``x``."""
    accepted = technique.parameters()
    params: dict[str, Any] = dict(QUICK.get(technique.name, {}))
    if x is not None and x.ndim == 4:
        if technique.name == "occlusion":
            window = max(2, int(x.shape[1]) // 4)
            params.update(window=window, stride=max(1, window // 2))
        if technique.name == "filter_maximization":
            layer = _spatial_layer(a, x, translate)
            if layer is not None:
                channels = int(np.shape(a.forward(x[:1], taps=[layer]).activations[layer])[-1])
                params.update(layer=layer, filters=list(range(min(4, channels))))
        if technique.name == "class_maximization":
            outputs = int(np.prod(np.shape(a.forward(x[:1]).outputs)[1:]))
            params["classes"] = list(range(min(4, outputs)))
    if "seed" in accepted:
        params.setdefault("seed", 0)
    if "progress" in accepted:
        params["progress"] = False
    params = {k: v for k, v in params.items() if k in accepted}
    params.update(user or {})
    return params

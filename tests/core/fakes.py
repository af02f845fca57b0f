"""A tiny linear numpy adapter for core tests (independent of innersight.testing)."""

from __future__ import annotations

import numpy as np

from innersight.core import BaseAdapter, Capability, ForwardResult, LayerInfo, objectives


class LinearAdapter(BaseAdapter):
    """scores = flatten(x) @ W + b, with one tappable layer 'flat' (the flattened input)."""

    backend = "fake"
    capabilities = frozenset(
        {Capability.FORWARD, Capability.LAYER_TAPS, Capability.INPUT_GRADIENTS}
    )

    def __init__(self, input_shape=(4, 4, 2), classes=3, seed=0):
        rng = np.random.default_rng(seed)
        self._shape = tuple(input_shape)
        d = int(np.prod(input_shape))
        self.W = rng.standard_normal((d, classes)).astype(np.float32)
        self.b = rng.standard_normal(classes).astype(np.float32)
        self.calls = 0

    @property
    def input_shape(self):
        return self._shape

    def layers(self):
        d = int(np.prod(self._shape))
        return [
            LayerInfo("flat", "Flatten", (d,), 0),
            LayerInfo("dense", "Dense", (self.W.shape[1],), self.W.size + self.b.size),
        ]

    def forward(self, x, *, taps=()):
        taps = self.check_taps(taps)
        x = self.check_input(x)
        self.calls += 1
        flat = x.reshape(len(x), -1)
        out = flat @ self.W + self.b
        acts = {"flat": flat, "dense": out}
        return ForwardResult(out, {t: acts[t] for t in taps})

    def value_and_grad(self, x, objective, *, relu="plain"):
        self.check_relu(relu)
        x = self.check_input(x)
        if not isinstance(objective, objectives.Logit):
            raise NotImplementedError
        idx = objectives.per_sample(objective.index, len(x))
        values = objectives.evaluate(objective, self.forward(x).outputs, {})
        grads = self.W[:, idx].T.reshape(x.shape)
        return values, grads

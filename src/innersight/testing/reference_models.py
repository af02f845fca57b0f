"""Ready-made reference models: the small conv net of the test suite and a linear model."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from innersight.core.errors import InputError
from innersight.testing.reference import ReferenceAdapter, ReferenceNetwork
from innersight.testing.reference_layers import Dense, Embedding, Flatten, Layer, ReLU

__all__ = ["reference_model"]


def _he(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    return np.asarray(rng.standard_normal(shape) * np.sqrt(2.0 / fan_in), dtype=np.float32)


KINDS = ("conv", "linear", "mlp", "tokens")


def reference_model(
    kind: str = "conv",
    *,
    seed: int = 0,
    input_shape: Sequence[int] = (12, 12, 3),
    num_classes: int = 3,
    input_shapes: Sequence[Sequence[int]] | None = None,
    vocab: int = 10,
) -> ReferenceAdapter:
    """A small reference model with He-initialised weights drawn from ``seed``.

    Args:
        kind: ``"conv"``: conv1 (3x3, 4 channels), relu1, pool1, conv2 (3x3, 6 channels), relu2,
            flatten, fc1 (8), relu3, fc2 (``num_classes``), the layout of the test suite's small
            net; ``"linear"``: flatten + fc (``num_classes``), whose input gradient for class
            ``k`` is exactly ``W[:, k]`` reshaped to the input; ``"mlp"``: flatten, fc1 (8),
            relu1, fc2; ``"tokens"``: embed (an Embedding of ``vocab`` ids to 4 numbers),
            flatten, fc, taking (T,) integer token ids (``input_shape=(T,)``).
        seed: seed of the weights.
        input_shape: channels-last shape of one sample.
        num_classes: width of the output layer.
        input_shapes: ``"linear"``/``"mlp"`` of several inputs: each input's sample shape; the
            layers run on the packed row (see ``ReferenceNetwork(parts=...)``), so
            ``W[:, k]`` split like the inputs is the linear model's gradient per input.
        vocab: the number of token ids of ``"tokens"``.
    """
    rng = np.random.default_rng(seed)
    shape = tuple(int(d) for d in input_shape)
    if kind in ("linear", "mlp", "tokens"):
        return _dense_model(kind, rng, shape, num_classes, input_shapes, vocab)
    if kind != "conv":
        raise InputError(f"reference_model kind {kind!r} is unknown; use one of {KINDS}")
    if len(shape) != 3:
        raise InputError(f"the conv reference model needs (H, W, C) inputs, got {shape}")
    h, w, c = shape
    flat = ((h - 2) // 2 - 2) * ((w - 2) // 2 - 2) * 6
    if flat <= 0:
        raise InputError(
            f"input {shape} is too small for the conv reference model; use at least 8x8"
        )
    weights = {
        "conv1/kernel": _he(rng, (3, 3, c, 4), 9 * c),
        "conv1/bias": rng.standard_normal(4) * 0.1,
        "conv2/kernel": _he(rng, (3, 3, 4, 6), 36),
        "conv2/bias": rng.standard_normal(6) * 0.1,
        "fc1/kernel": _he(rng, (flat, 8), flat),
        "fc1/bias": rng.standard_normal(8) * 0.1,
        "fc2/kernel": _he(rng, (8, num_classes), 8),
        "fc2/bias": rng.standard_normal(num_classes) * 0.1,
    }
    return ReferenceAdapter.from_weights(weights, input_shape=shape, name="reference_conv")


def _dense_model(
    kind: str,
    rng: np.random.Generator,
    shape: tuple[int, ...],
    num_classes: int,
    input_shapes: Sequence[Sequence[int]] | None,
    vocab: int,
) -> ReferenceAdapter:
    parts = None if input_shapes is None else [tuple(int(d) for d in p) for p in input_shapes]
    din = sum(int(np.prod(p)) for p in parts) if parts else int(np.prod(shape))
    layers: list[Layer] = []
    if kind == "tokens":
        if len(shape) != 1:
            raise InputError(f"the tokens reference model takes (T,) token ids, got {shape}")
        layers.append(Embedding("embed", rng.standard_normal((vocab, 4))))
        din = shape[0] * 4
    layers.append(Flatten("flatten"))
    if kind == "mlp":
        layers += [Dense("fc1", _he(rng, (din, 8), din), rng.standard_normal(8) * 0.1)]
        layers += [ReLU("relu1")]
        din = 8
    out = "fc2" if kind == "mlp" else "fc"
    bias = rng.standard_normal(num_classes) * 0.1
    layers.append(Dense(out, _he(rng, (din, num_classes), din), bias))
    net = ReferenceNetwork(layers, None if parts else shape, name=f"reference_{kind}", parts=parts)
    return ReferenceAdapter(net)

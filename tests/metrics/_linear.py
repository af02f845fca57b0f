"""One linear model f(x) = flatten_hwc(x) @ W + b in numpy-reference, torch and Keras form,
and the closed forms of deletion and insertion on it."""

from __future__ import annotations

import numpy as np

SHAPE = (4, 4, 2)
CLASSES = 3


def weights(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    d = int(np.prod(SHAPE))
    return rng.standard_normal((d, CLASSES)).astype(np.float32), rng.standard_normal(
        CLASSES
    ).astype(np.float32)


def model(backend: str, w: np.ndarray, b: np.ndarray):
    """The linear model in ``backend`` ("reference", "torch", "keras"), wrapped."""
    import innersight as ins

    if backend == "reference":
        from innersight.testing.reference import ReferenceAdapter, ReferenceNetwork
        from innersight.testing.reference_layers import Dense, Flatten

        net = ReferenceNetwork([Flatten("flatten"), Dense("fc", w, b)], SHAPE, name="linear")
        return ReferenceAdapter(net)
    if backend == "torch":
        import torch

        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(w.shape[0], CLASSES))
        with torch.no_grad():
            net[1].weight.copy_(torch.from_numpy(w.T.copy()))
            net[1].bias.copy_(torch.from_numpy(b))
        return ins.wrap(net.eval(), input_layout="NHWC", input_shape=SHAPE)
    import keras

    net = keras.Sequential(
        [keras.Input(SHAPE), keras.layers.Flatten(), keras.layers.Dense(CLASSES)]
    )
    net.set_weights([w, b])
    return ins.wrap(net)


def contributions(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(N, P, K): each pixel's contribution to each logit, sum over its channels of x * W."""
    n = len(x)
    per_channel = x.reshape(n, -1)[:, :, None] * w[None]
    return per_channel.reshape(n, SHAPE[0] * SHAPE[1], SHAPE[2], CLASSES).sum(axis=2)


def closed_form(
    x: np.ndarray,
    base: np.ndarray,
    w: np.ndarray,
    b: np.ndarray,
    targets: np.ndarray,
    order_by: np.ndarray,
    counts: np.ndarray,
    *,
    insertion: bool,
    probability: bool = False,
) -> np.ndarray:
    """(N, len(counts)) target scores: by linearity, replacing a pixel moves the logits by its
    contribution difference; pixels go in descending ``order_by`` (N, P)."""
    x, base = x.astype(np.float64), base.astype(np.float64)
    start, end = (base, x) if insertion else (x, base)
    z0 = start.reshape(len(x), -1) @ w.astype(np.float64) + b
    step = contributions(end, w) - contributions(start, w)  # (N, P, K)
    out = np.zeros((len(x), len(counts)))
    for i in range(len(x)):
        order = np.argsort(-order_by[i], kind="stable")
        cum = np.vstack([np.zeros(CLASSES), np.cumsum(step[i, order], axis=0)])
        z = z0[i] + cum[counts]  # (K', CLASSES)
        if probability:
            z = np.exp(z - z.max(axis=1, keepdims=True))
            z = z / z.sum(axis=1, keepdims=True)
        out[i] = z[:, targets[i]]
    return out

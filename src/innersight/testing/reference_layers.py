"""The numpy layers of the reference network, forward and backward written out by hand.

Every layer works on float64 channels-last arrays: ``forward(x) -> (y, cache)`` and
``backward(grad_y, cache, relu) -> grad_x`` (the gradient with respect to the layer's input
only; the reference never trains). Only :class:`ReLU` looks at ``relu``:

* ``"plain"``: ``grad_x = grad_y * (x > 0)``, the true gradient;
* ``"guided"``: ``grad_x = max(grad_y * (x > 0), 0)`` (guided backpropagation);
* ``"deconv"``: ``grad_x = max(grad_y, 0)``, no forward mask (the "deconvnet" rule).

Max-pooling routes a window's gradient to its first maximum in row-major order, as torch and
TensorFlow do; ReLU's gradient at exactly 0 is 0, as in both frameworks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "Conv2D",
    "Dense",
    "Embedding",
    "Flatten",
    "GlobalAvgPool2D",
    "Layer",
    "MaxPool2D",
    "ReLU",
    "Softmax",
]

Shape = tuple[int, ...]


class Layer:
    """A named numpy layer. Subclasses implement ``output_shape``, ``forward``, ``backward``."""

    kind = "Layer"

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"a layer name must be a non-empty str, got {name!r}")
        self.name = name

    @property
    def params(self) -> dict[str, np.ndarray]:
        """The layer's weights by name (empty for parameter-free layers)."""
        return {}

    @property
    def num_params(self) -> int:
        return int(sum(p.size for p in self.params.values()))

    def output_shape(self, in_shape: Shape) -> Shape:
        raise NotImplementedError

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        raise NotImplementedError

    def backward(self, grad: np.ndarray, cache: Any, relu: str = "plain") -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{self.kind}({self.name!r})"


def _weights(array: Any, ndim: int, what: str) -> np.ndarray:
    arr = np.array(array, dtype=np.float64, copy=True)
    if arr.ndim != ndim:
        raise ValueError(f"{what} must have {ndim} axes, got shape {arr.shape}")
    arr.flags.writeable = False  # the reference never changes its weights
    return arr


class Conv2D(Layer):
    """2-D convolution, stride 1, 'valid' padding; kernel ``(kh, kw, cin, cout)``."""

    kind = "Conv2D"

    def __init__(self, name: str, kernel: Any, bias: Any) -> None:
        super().__init__(name)
        self.kernel = _weights(kernel, 4, f"{name}/kernel")
        self.bias = _weights(bias, 1, f"{name}/bias")
        if self.bias.shape != (self.kernel.shape[3],):
            raise ValueError(
                f"{name}/bias has shape {self.bias.shape}, expected ({self.kernel.shape[3]},)"
            )

    @property
    def params(self) -> dict[str, np.ndarray]:
        return {"kernel": self.kernel, "bias": self.bias}

    def output_shape(self, in_shape: Shape) -> Shape:
        kh, kw, cin, cout = self.kernel.shape
        if len(in_shape) != 3 or in_shape[2] != cin or in_shape[0] < kh or in_shape[1] < kw:
            raise ValueError(
                f"{self.name}: cannot convolve {in_shape} with a {self.kernel.shape} kernel"
            )
        return (in_shape[0] - kh + 1, in_shape[1] - kw + 1, cout)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        kh, kw, _, cout = self.kernel.shape
        n, h, w, _ = x.shape
        ho, wo = h - kh + 1, w - kw + 1
        y = np.zeros((n, ho, wo, cout))
        for i in range(kh):
            for j in range(kw):
                y += x[:, i : i + ho, j : j + wo, :] @ self.kernel[i, j]
        return y + self.bias, x.shape

    def backward(self, grad: np.ndarray, cache: Any, relu: str = "plain") -> np.ndarray:
        kh, kw = self.kernel.shape[:2]
        gx = np.zeros(cache)
        ho, wo = grad.shape[1:3]
        for i in range(kh):
            for j in range(kw):
                gx[:, i : i + ho, j : j + wo, :] += grad @ self.kernel[i, j].T
        return gx


class ReLU(Layer):
    """``max(x, 0)``; its backward rule follows ``relu`` (see the module docstring)."""

    kind = "ReLU"

    def output_shape(self, in_shape: Shape) -> Shape:
        return tuple(in_shape)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        mask = x > 0
        return np.where(mask, x, 0.0), mask

    def backward(self, grad: np.ndarray, cache: Any, relu: str = "plain") -> np.ndarray:
        if relu == "deconv":
            return np.asarray(np.maximum(grad, 0.0))
        masked = np.where(cache, grad, 0.0)
        return np.asarray(np.maximum(masked, 0.0)) if relu == "guided" else masked


class MaxPool2D(Layer):
    """2x2 max-pooling, stride 2, 'valid' (odd trailing rows/columns are dropped)."""

    kind = "MaxPool2D"

    def output_shape(self, in_shape: Shape) -> Shape:
        if len(in_shape) != 3 or in_shape[0] < 2 or in_shape[1] < 2:
            raise ValueError(f"{self.name}: cannot 2x2-pool an input of shape {in_shape}")
        return (in_shape[0] // 2, in_shape[1] // 2, in_shape[2])

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        n, h, w, c = x.shape
        ho, wo = h // 2, w // 2
        # (N, ho, wo, C, 4): the four window entries in row-major order (0,0) (0,1) (1,0) (1,1)
        win = x[:, : 2 * ho, : 2 * wo, :].reshape(n, ho, 2, wo, 2, c).transpose(0, 1, 3, 5, 2, 4)
        win = win.reshape(n, ho, wo, c, 4)
        arg = win.argmax(axis=-1)  # first maximum wins, as in torch and TensorFlow
        return np.take_along_axis(win, arg[..., None], axis=-1)[..., 0], (x.shape, arg)

    def backward(self, grad: np.ndarray, cache: Any, relu: str = "plain") -> np.ndarray:
        shape, arg = cache
        n, h, w, c = shape
        ho, wo = h // 2, w // 2
        win = np.zeros((n, ho, wo, c, 4))
        np.put_along_axis(win, arg[..., None], grad[..., None], axis=-1)
        win = (
            win.reshape(n, ho, wo, c, 2, 2)
            .transpose(0, 1, 4, 2, 5, 3)
            .reshape(n, 2 * ho, 2 * wo, c)
        )
        gx = np.zeros(shape)
        gx[:, : 2 * ho, : 2 * wo, :] = win
        return gx


class Flatten(Layer):
    """Flatten each sample in channels-last (h, w, c) order, as Keras does."""

    kind = "Flatten"

    def output_shape(self, in_shape: Shape) -> Shape:
        return (int(np.prod(in_shape)),)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        return x.reshape(x.shape[0], -1), x.shape

    def backward(self, grad: np.ndarray, cache: Any, relu: str = "plain") -> np.ndarray:
        return grad.reshape(cache)


class Dense(Layer):
    """``x @ kernel + bias`` with kernel ``(din, dout)`` (the Keras layout)."""

    kind = "Dense"

    def __init__(self, name: str, kernel: Any, bias: Any) -> None:
        super().__init__(name)
        self.kernel = _weights(kernel, 2, f"{name}/kernel")
        self.bias = _weights(bias, 1, f"{name}/bias")
        if self.bias.shape != (self.kernel.shape[1],):
            raise ValueError(
                f"{name}/bias has shape {self.bias.shape}, expected ({self.kernel.shape[1]},)"
            )

    @property
    def params(self) -> dict[str, np.ndarray]:
        return {"kernel": self.kernel, "bias": self.bias}

    def output_shape(self, in_shape: Shape) -> Shape:
        if tuple(in_shape) != (self.kernel.shape[0],):
            raise ValueError(
                f"{self.name}: expects ({self.kernel.shape[0]},) inputs, got {in_shape}"
            )
        return (self.kernel.shape[1],)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        return x @ self.kernel + self.bias, None

    def backward(self, grad: np.ndarray, cache: Any, relu: str = "plain") -> np.ndarray:
        return np.asarray(grad @ self.kernel.T)


class GlobalAvgPool2D(Layer):
    """Mean over the spatial axes: (N, H, W, C) -> (N, C), as Keras' GlobalAveragePooling2D."""

    kind = "GlobalAveragePooling2D"

    def output_shape(self, in_shape: Shape) -> Shape:
        if len(in_shape) != 3:
            raise ValueError(f"{self.name}: global pooling needs (H, W, C) inputs, got {in_shape}")
        return (in_shape[2],)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        return x.mean(axis=(1, 2)), x.shape

    def backward(self, grad: np.ndarray, cache: Any, relu: str = "plain") -> np.ndarray:
        h, w = cache[1:3]
        return np.broadcast_to(grad[:, None, None, :] / (h * w), cache).copy()


class Softmax(Layer):
    """Softmax over the last axis. A network ending in one has pre-softmax logits: the
    reference adapter's ``Logit`` objectives and ``LOGITS`` tap read the softmax's input."""

    kind = "Softmax"

    def output_shape(self, in_shape: Shape) -> Shape:
        return tuple(in_shape)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        y = e / e.sum(axis=-1, keepdims=True)
        return y, y

    def backward(self, grad: np.ndarray, cache: Any, relu: str = "plain") -> np.ndarray:
        y = cache
        return np.asarray(y * (grad - (grad * y).sum(axis=-1, keepdims=True)))


class Embedding(Layer):
    """Token ids (N, T) -> vectors (N, T, D): rows of ``table`` (V, D), as torch's nn.Embedding
    and Keras' Embedding. Ids are integers (they travel as float64 inside the reference); no
    gradient flows into them (the backward pass returns zeros)."""

    kind = "Embedding"

    def __init__(self, name: str, table: Any) -> None:
        super().__init__(name)
        self.table = _weights(table, 2, f"{name}/embeddings")

    @property
    def params(self) -> dict[str, np.ndarray]:
        return {"embeddings": self.table}

    def output_shape(self, in_shape: Shape) -> Shape:
        if len(in_shape) != 1:
            raise ValueError(f"{self.name}: an embedding takes (T,) token ids, got {in_shape}")
        return (in_shape[0], self.table.shape[1])

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        ids = np.rint(x).astype(np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self.table)):
            raise ValueError(
                f"{self.name}: token ids must be in 0..{len(self.table) - 1}, got "
                f"{ids.min()}..{ids.max()}"
            )
        return self.table[ids], x.shape

    def backward(self, grad: np.ndarray, cache: Any, relu: str = "plain") -> np.ndarray:
        return np.zeros(cache)

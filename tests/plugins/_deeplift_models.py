"""Models of the DeepLift tests: torch modules, their Keras twins (same weights) and the
Captum references, shared by the technique and backend tests."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "elu": nn.ELU}


def mlp(activation: str = "relu", seed: int = 0, sizes: tuple[int, ...] = (6, 8, 5, 3)) -> Any:
    """Linear + activation layers (none after the last Linear), eval mode."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers).eval()


class FunctionalNet(nn.Module):
    """The ReLU MLP with ``F.relu``, ``torch.relu`` and ``x.relu_()`` instead of modules."""

    def __init__(self, net: nn.Sequential) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = net[0], net[2], net[4]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc1(x))
        h = self.fc2(h).relu_()
        return torch.relu(self.fc3(h))  # a final ReLU too: exercised with the others


def functional_twin(net: nn.Sequential) -> nn.Sequential:
    """The module form of :class:`FunctionalNet` (what Captum can hook)."""
    return nn.Sequential(net[0], nn.ReLU(), net[2], nn.ReLU(), net[4], nn.ReLU()).eval()


def convnet(pool: str = "max", seed: int = 0) -> Any:
    """conv-ReLU-conv-pool-linear on 12x12x3: the pool follows a conv (no nonlinearity next to
    it, so Captum 0.9's hooks apply its max-pool rule, see :class:`Clone`)."""
    torch.manual_seed(seed)
    pooling = nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 6, 3), pooling, nn.Flatten(), nn.Linear(96, 3)
    ).eval()


class Clone(nn.Module):
    """``x.clone()``: put between two adjacent nonlinearity modules (ReLU then MaxPool) it lets
    Captum 0.9 apply both rules. Without it the upstream module's backward hook reads the
    gradient before the downstream module's rule rewrote it (captum issues #1104, fixed by
    pull request #1843 after 0.9), so Captum's max-pool rule is silently lost there."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()


def with_clones(net: nn.Sequential) -> nn.Sequential:
    """``net`` with a :class:`Clone` after every ReLU that a MaxPool follows."""
    out: list[nn.Module] = []
    modules = list(net)
    for i, m in enumerate(modules):
        out.append(m)
        following = modules[i + 1] if i + 1 < len(modules) else None
        if isinstance(m, nn.ReLU) and isinstance(following, nn.MaxPool2d):
            out.append(Clone())
    return nn.Sequential(*out).eval()


def keras_mlp(net: nn.Sequential, activation: str = "relu") -> Any:
    """The Keras twin of :func:`mlp` with the same weights."""
    import keras

    linears = [m for m in net if isinstance(m, nn.Linear)]
    model = keras.Sequential([keras.Input((linears[0].in_features,))])
    for i, lin in enumerate(linears):
        act = activation if i < len(linears) - 1 else None
        layer = keras.layers.Dense(lin.out_features, activation=act)
        model.add(layer)
        layer.set_weights([lin.weight.detach().numpy().T, lin.bias.detach().numpy()])
    return model


def nchw(x: np.ndarray) -> torch.Tensor:
    t = torch.tensor(x)
    return t.permute(0, 3, 1, 2).contiguous() if t.ndim == 4 else t


def nhwc(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    return (t.permute(0, 2, 3, 1) if t.ndim == 4 else t).numpy()


def captum(kind: str, model: Any, x: np.ndarray, base: np.ndarray, target: Any, **kw: Any) -> Any:
    """Captum's ``DeepLift``/``DeepLiftShap`` attributions (channels-last) and deltas."""
    import warnings

    from captum.attr import DeepLift, DeepLiftShap

    cls = DeepLift if kind == "deeplift" else DeepLiftShap
    multiply = kw.pop("multiply_by_inputs", True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Captum warns that it sets hooks, every call
        attr, delta = cls(model, multiply_by_inputs=multiply).attribute(
            nchw(x), nchw(base), target=target, return_convergence_delta=True, **kw
        )
    return nhwc(attr), delta.detach().numpy()


def rel_error(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(ours - reference).max() / np.abs(reference).max())

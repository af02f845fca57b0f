"""An explicit numpy LRP, the textbook way, to check the adapters' rule algebra against.

Every layer is a matrix ``W`` (outputs x inputs) and a bias ``b`` (convolutions are turned into
their matrices by applying them to the unit inputs). A rule builds the contributions
``c[j, i]`` of input ``i`` to output ``j`` and hands ``R_j`` to the inputs in proportion:
``R_i = sum_j c[j, i] / d_j * R_j`` with the rule's denominator ``d_j`` (stabilised as zennit
does: ``d + e * sign(d)``, ``sign(0) = +1``). Nothing here shares code with innersight.
"""

from __future__ import annotations

import numpy as np

__all__ = ["relevance_in", "residual_net", "stab", "sum_relevance"]


def stab(d: np.ndarray, e: float) -> np.ndarray:
    return d + e * np.where(d < 0, -1.0, 1.0)


def sum_relevance(xs: list[np.ndarray], r: np.ndarray, e: float = 1e-6) -> list[np.ndarray]:
    """zennit's Norm rule for ``z = x_1 + x_2 + ...``: ``R_i = x_i * R / s(z)``."""
    q = r / stab(sum(xs), e)
    return [x * q for x in xs]


def _share(c: np.ndarray, d: np.ndarray, r: np.ndarray, e: float) -> np.ndarray:
    """``R_i = sum_j c[j, i] R_j / s(d_j)``."""
    return np.einsum("ji,j->i", c, r / stab(d, e))


def relevance_in(
    rule: tuple, w: np.ndarray, b: np.ndarray, x: np.ndarray, r: np.ndarray
) -> np.ndarray:
    """The relevance of the inputs ``x`` of the layer ``(w, b)`` for the rule
    ``("epsilon", eps) | ("zplus",) | ("gamma", g) | ("alpha_beta", a, b) | ("zbox", low,
    high) | ("flat",) | ("wsquare",)``, float64, zennit's stabiliser 1e-6 where none is given."""
    name = rule[0]
    wp, wn = np.maximum(w, 0), np.minimum(w, 0)
    xp, xn = np.maximum(x, 0), np.minimum(x, 0)
    if name == "epsilon":
        c = w * x[None, :]
        return _share(c, c.sum(1) + b, r, rule[1])
    if name in ("zplus", "alpha_beta"):
        alpha, beta = (1.0, 0.0) if name == "zplus" else rule[1:3]
        cp = wp * xp[None, :] + wn * xn[None, :]
        cn = wn * xp[None, :] + wp * xn[None, :]
        out = alpha * _share(cp, cp.sum(1) + np.maximum(b, 0), r, 1e-6)
        return out - beta * _share(cn, cn.sum(1) + np.minimum(b, 0), r, 1e-6) if beta else out
    if name == "gamma":
        g = rule[1]
        up, down = w + g * wp, w + g * wn
        z = w @ x + b
        cp = up * xp[None, :] + down * xn[None, :]
        cn = down * xp[None, :] + up * xn[None, :]
        pos = _share(cp, cp.sum(1) + b + g * np.maximum(b, 0), r * (z > 0), 1e-6)
        return pos + _share(cn, cn.sum(1) + b + g * np.minimum(b, 0), r * (z < 0), 1e-6)
    if name == "zbox":
        low, high = np.full_like(x, rule[1]), np.full_like(x, rule[2])
        c = w * x[None, :] - wp * low[None, :] - wn * high[None, :]
        return _share(c, c.sum(1), r, 1e-6)
    if name == "flat":
        c = (w != 0).astype(np.float64)
        return _share(c, c.sum(1), r, 1e-6)
    if name == "wsquare":
        c = w * w
        return _share(c, c.sum(1) + b * b, r, 1e-6)
    raise ValueError(name)


def _randomise(*bns) -> None:
    import torch

    with torch.no_grad():
        for bn in bns:
            bn.running_mean.uniform_(-0.3, 0.3)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.3, 0.3)


def residual_net(style: str = "+=", seed: int = 0):
    """A torch net with one residual block: conv0/relu, then conv1-bn1-relu-conv2-bn2 plus the
    identity (added as ``style``: "+=", "+" or "add_"), relu, global average pooling, fc.
    Batch-norm statistics and affine parameters are random (batch norm is no identity)."""
    import torch
    from torch import nn

    class ResidualNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(seed)
            self.conv0 = nn.Conv2d(2, 3, 3, padding=1)
            self.relu0 = nn.ReLU()
            self.conv1 = nn.Conv2d(3, 3, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(3)
            self.relu = nn.ReLU(inplace=True)  # shared, as torchvision's BasicBlock
            self.conv2 = nn.Conv2d(3, 3, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(3)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.flatten = nn.Flatten()
            self.fc = nn.Linear(3, 3)
            _randomise(self.bn1, self.bn2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            identity = self.relu0(self.conv0(x))
            out = self.relu(self.bn1(self.conv1(identity)))
            out = self.bn2(self.conv2(out))
            if style == "+=":
                out += identity
            elif style == "add_":
                out.add_(identity)
            else:
                out = out + identity
            return self.fc(self.flatten(self.pool(self.relu(out))))

    return ResidualNet().eval()

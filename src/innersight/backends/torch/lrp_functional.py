"""The operations a torch ``forward()`` calls outside its leaf modules, as the LRP pass sees them.

A :class:`torch.overrides.TorchFunctionMode` (:class:`Watch`) sees every torch function a
``forward()`` calls between leaf modules (inside a leaf module the module's own rule applies).
:func:`classify` sorts each call:

* ``"sum"``: ``x + y``, ``torch.add``, ``x.add(y)``, ``x += y``, ``x.add_(y)`` of two tensors the
  input flows into, both shaped like the result (a residual connection): zennit's Norm rule,
  ``R_i = x_i * R / s(x + y)`` (:class:`SumFunction`; in place where the model adds in place).
* ``"avgpool"``: ``F.avg_pool*``, ``F.adaptive_avg_pool*``, ``x.mean(dims)``, ``x.sum(dims)``
  over axes other than the batch axis (global average pooling written in ``forward()``): the
  rule average pooling modules get.
* ``"batchnorm"``: ``F.batch_norm`` with inference statistics (timm's ``BatchNormAct2d``): the
  rule batch-norm modules get (folded into the convolution before it when asked).
* ``"probability"``: softmax / log-softmax: left out when it computes the model's output (LRP
  starts at the pre-softmax scores), refused anywhere else.
* a description (``"a gated activation"``, ``"x * y (a product of activations)"``, ...): an
  operation no rule covers; the pass refuses the model, naming them.

Everything else (``torch.flatten``, ``x.view``, ``torch.cat``, ``F.relu``, ``F.max_pool2d``)
keeps its plain gradient, which is the LRP rule for reshapes and concatenation (relevance back
to each part unchanged), ReLU (pass) and max pooling (winner takes all).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from innersight.core.lrp import Epsilon, norm_shares

__all__ = ["Ops", "SumFunction", "Watch", "batchnorm_args", "classify"]

Found = tuple[str | None, str]

_SUMS = frozenset(
    {
        torch.add,
        torch.Tensor.add,
        torch.Tensor.__add__,
        torch.Tensor.__radd__,
        torch.Tensor.add_,
        torch.Tensor.__iadd__,
    }
)
INPLACE = frozenset({torch.Tensor.add_, torch.Tensor.__iadd__})
_POOLS = frozenset(
    {
        F.avg_pool1d,
        F.avg_pool2d,
        F.avg_pool3d,
        F.adaptive_avg_pool1d,
        F.adaptive_avg_pool2d,
        F.adaptive_avg_pool3d,
    }
)
_REDUCTIONS = frozenset({torch.mean, torch.Tensor.mean, torch.sum, torch.Tensor.sum})
_PROBABILITIES = frozenset(
    {
        F.softmax,
        torch.softmax,
        torch.Tensor.softmax,
        F.log_softmax,
        torch.log_softmax,
        torch.Tensor.log_softmax,
    }
)
# Operations no LRP rule covers, by what they are.
_FLAGGED: dict[Any, str] = {
    **dict.fromkeys((F.gelu, F.silu, F.mish, F.hardswish), "a gated activation"),
    **dict.fromkeys(
        (torch.tanh, torch.Tensor.tanh, torch.sigmoid, torch.Tensor.sigmoid), "tanh/sigmoid"
    ),
    **dict.fromkeys((F.layer_norm, F.group_norm, F.batch_norm), "a normalisation"),
    **dict.fromkeys((F.linear, F.conv1d, F.conv2d, F.conv3d), "a functional linear layer"),
    **dict.fromkeys((F.scaled_dot_product_attention,), "attention"),
}
# Binary operations that mix two tensors the input flows into.
_BINARY: dict[Any, str] = {
    **dict.fromkeys(_SUMS, "x + y of differently shaped tensors"),
    **dict.fromkeys((torch.sub, torch.Tensor.sub, torch.Tensor.__sub__), "x - y"),
    **dict.fromkeys(
        (
            torch.mul,
            torch.Tensor.mul,
            torch.Tensor.__mul__,
            torch.Tensor.mul_,
            torch.Tensor.__imul__,
        ),
        "x * y (a product of activations)",
    ),
    **dict.fromkeys(
        (torch.matmul, torch.Tensor.__matmul__, torch.bmm, torch.einsum), "a matrix product"
    ),
}


def _flowing(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and t.requires_grad


def classify(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Found | None:
    """``(kind, what)`` of ``func(*args, **kwargs)`` called outside a leaf module (see the
    module doc; kind None: no rule), or None for an operation that keeps its gradient."""
    try:
        binary, known = _BINARY.get(func), func in _FLAGGED or func in _PROBABILITIES
        pool = func in _POOLS or func in _REDUCTIONS
    except TypeError:  # an unhashable callable is none of ours
        return None
    if binary is not None:
        if sum(_flowing(a) for a in args[:2]) < 2:
            return None
        return ("sum", "x + y") if func in _SUMS and _same_shapes(args, kwargs) else (None, binary)
    if not args or not _flowing(args[0]):
        return None
    if pool:
        return ("avgpool", "a mean") if _keeps_batch(func, args, kwargs) else (None, _BATCH)
    if func is F.batch_norm and batchnorm_args(args, kwargs) is not None:
        return ("batchnorm", "batch norm")
    if func in _PROBABILITIES:
        return ("probability", "softmax")
    return (None, _FLAGGED[func]) if known else None


_BATCH = "a mean or sum over the batch axis"


def _same_shapes(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Two tensors of one shape, nothing else (no ``alpha``, no ``out``)."""
    a, b = args[0], args[1]
    return len(args) == 2 and not kwargs and isinstance(b, torch.Tensor) and a.shape == b.shape


def _keeps_batch(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """A pooling function, or a mean/sum over axes that leave out the batch axis."""
    if func in _POOLS:
        return True
    dim = args[1] if len(args) > 1 else kwargs.get("dim", kwargs.get("axis"))
    if dim is None or (isinstance(dim, (tuple, list)) and not dim):
        return False
    dims = dim if isinstance(dim, (tuple, list)) else (dim,)
    ndim = args[0].ndim
    return all(isinstance(d, int) and d % ndim != 0 for d in dims)


_BN_ARGS = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum")


def batchnorm_args(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``F.batch_norm``'s ``(scale, shift)`` as ``x * scale + shift``, or None when it
    normalises with the batch's own statistics (training, or no running statistics)."""
    bound = {**dict(zip((*_BN_ARGS, "eps"), args, strict=False)), **kwargs}
    mean, var = bound.get("running_mean"), bound.get("running_var")
    if bound.get("training", False) or mean is None or var is None:
        return None
    with torch.no_grad():
        scale = torch.rsqrt(var + bound.get("eps", 1e-5))
        if bound.get("weight") is not None:
            scale = scale * bound["weight"]
        shift = -mean * scale
        if bound.get("bias") is not None:
            shift = shift + bound["bias"]
    return scale.detach(), shift.detach()


class Ops:
    """The element-wise part of :class:`innersight.core.lrp.LayerMath` on torch tensors."""

    def pos(self, t: torch.Tensor) -> torch.Tensor:
        return t.clamp(min=0)

    def neg(self, t: torch.Tensor) -> torch.Tensor:
        return t.clamp(max=0)

    def above(self, t: torch.Tensor) -> torch.Tensor:
        return (t > 0).to(t.dtype)

    def below(self, t: torch.Tensor) -> torch.Tensor:
        return (t < 0).to(t.dtype)

    def ones_like(self, t: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(t)


class SumFunction(torch.autograd.Function):
    """Forward: ``op(a, b)`` (in place on ``a`` for ``add_`` / ``+=``, as the model asked);
    backward: zennit's Norm rule, ``R_a = a * R / s(a + b)``, ``R_b = b * R / s(a + b)``."""

    @staticmethod
    def forward(ctx: Any, op: Any, rule: Epsilon, a: torch.Tensor, b: torch.Tensor) -> Any:
        ctx.xs = [a.detach().clone(), b.detach().clone()]
        ctx.rule = rule
        out = op(a, b)
        if op in INPLACE:
            ctx.mark_dirty(a)
        ctx.z = out.detach().clone()
        return out

    @staticmethod
    def backward(ctx: Any, r: torch.Tensor) -> tuple[Any, ...]:
        shares = norm_shares(Ops(), ctx.xs, r, ctx.z, ctx.rule)
        return (None, None, *shares)


class Handler(Protocol):
    """What :class:`Watch` reports to: the pass's depth in leaf modules and its handler."""

    depth: int

    def functional(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], found: Found
    ) -> Any: ...


class Watch(TorchFunctionMode):
    """Hands the operations :func:`classify` knows, outside leaf modules, to the pass."""

    def __init__(self, state: Handler) -> None:
        super().__init__()
        self.state = state

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        if self.state.depth == 0 and torch.is_grad_enabled():
            found = classify(func, args, kwargs)
            if found is not None:
                return self.state.functional(func, args, kwargs, found)
        return func(*args, **kwargs)

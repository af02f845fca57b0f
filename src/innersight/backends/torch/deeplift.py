"""DeepLift (rescale rule) multipliers for torch models, without touching the model.

One pass runs the doubled batch ``[x; baseline]`` (Captum's convention) under a
:class:`~torch.overrides.TorchFunctionMode` that answers nonlinearity calls with custom autograd
Functions. Their forward is the ordinary computation on the whole doubled batch; their backward
splits the batch into its halves ``u`` and ``u0`` and passes the rescale multiplier

    grad * (f(u) - f(u0)) / (u - u0)        where |u - u0| >= eps (Captum's default 1e-10),
    grad * f'(u)                             elsewhere (the ordinary gradient),

the same for both halves (Captum's ``torch.cat(2 * [...])``). Like the guided override of
:mod:`.relu`, calls are caught at the Python level, so modules (``nn.ReLU`` calls ``F.relu``)
and functional calls (``F.relu``, ``torch.relu``, ``x.relu_()``) alike get the rule.

* Elementwise nonlinearities get the rescale rule: ReLU (in place too), ReLU6/Hardtanh, ELU,
  LeakyReLU, Sigmoid, Tanh, Softplus (Captum's set) and also SiLU, GELU, Hardswish,
  Hardsigmoid, Mish, SELU, CELU, PReLU, RReLU, Softsign, LogSigmoid, which Captum leaves with
  their ordinary gradient (so there its summation-to-delta check fails).
* ``F.max_pool1d/2d/3d`` (``nn.MaxPool*d``) get Captum's max-pool rule: the pooled maxima of
  both halves are compared, ``max(y, y0) - y0`` is scattered to the argmax of ``u`` and
  ``y - max(y, y0)`` to the argmax of ``u0``, summed, and divided by ``u - u0`` (ordinary
  gradient where ``|u - u0| < eps``; Captum takes the first sample's gradient there, a bug).
* Anything else keeps its ordinary gradient: linear layers (as DeepLift wants), and softmax,
  GLU, adaptive max pooling and max pooling that returns its indices (counted by kind in the
  report's ``not_overridden``). A ReLU that runs below Python (TorchScript, ``torch.compile``)
  is refused with a CapabilityError, as for guided backprop.

Every rule passes on exactly the change of its output (the max-pool rule too: the two scattered
parts add up to ``y - y0``), so the attributions ``(x - x0) * m`` add up to ``F(x) - F(x0)`` up
to round-off when every nonlinearity has a rule; the report says when one did not. After a
call, ``last_deeplift_report`` holds ``{"rescaled": n, "max_pools": n, "not_overridden":
{kind: n}}`` for it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from innersight.core.adapter import Capability
from innersight.core.deeplift import DEFAULT_EPS
from innersight.core.errors import CapabilityError, InputError, ObjectiveError
from innersight.core.objectives import Custom, Logit, Objective, per_sample

from .capture import Capture, logits_hook
from .hooks import Hook, StopForward, eval_mode, hooked
from .layout import grad_to_numpy
from .relu import _clipped_relu_call, _EscapeWatch, _other_activation, _relu_call
from .targets import check_objective, score_values

if TYPE_CHECKING:
    from torch import nn

    from .options import TorchOptions

__all__ = ["DeepLiftMixin", "DeepLiftReport", "deeplift_override"]

#: ``{"rescaled": n, "max_pools": n, "not_overridden": {"Softmax": n, ...}}`` of one pass.
DeepLiftReport = dict[str, Any]

_Fn = Callable[[torch.Tensor], torch.Tensor]
_NOT_ELEMENTWISE = frozenset({"GLU"})
_POOLS: dict[Any, tuple[Any, Any]] = {
    F.max_pool1d: (F.max_pool1d_with_indices, F.max_unpool1d),
    F.max_pool2d: (F.max_pool2d_with_indices, F.max_unpool2d),
    F.max_pool3d: (F.max_pool3d_with_indices, F.max_unpool3d),
}
# Reported when they keep their ordinary gradient: not elementwise, no rule of Captum's.
_PLAIN_KINDS: dict[Any, str] = {
    **dict.fromkeys(
        (F.softmax, torch.softmax, torch.Tensor.softmax, F.log_softmax, torch.log_softmax),
        "Softmax",
    ),
    **dict.fromkeys(
        (F.max_pool1d_with_indices, F.max_pool2d_with_indices, F.max_pool3d_with_indices),
        "MaxPool (return_indices=True)",
    ),
    **dict.fromkeys(
        (F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d), "AdaptiveMaxPool"
    ),
}


def _halves(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = t.chunk(2)
    return a, b


def _paired(t: torch.Tensor) -> torch.Tensor:
    """The doubled batch ``(2N, ...)`` as ``(2, N, ...)``: both halves meet a half-sized
    tensor by broadcasting, without the ``torch.cat`` copy of that tensor."""
    return t.reshape(2, t.shape[0] // 2, *t.shape[1:])


def _near_zero(
    ctx: Any, u: torch.Tensor, grad: torch.Tensor, delta_in: torch.Tensor, rescaled: torch.Tensor
) -> torch.Tensor:
    """``rescaled`` (shaped ``(2, N, ...)``) as the doubled batch (shaped like ``u``), with the
    plain gradient where ``|delta_in| < eps``. That gradient (a second pass through the
    function) is computed only when some position needs it."""
    small = delta_in.abs() < ctx.eps
    if not bool(small.any()):
        return rescaled.reshape(u.shape)
    # the half-sized mask broadcasts over both halves; where's output is contiguous, so the
    # reshape back to the doubled batch is a view
    return torch.where(small, _paired(_plain_grad(ctx.fn, u, grad)), rescaled).reshape(u.shape)


class _Clamp:
    """A ReLU (``cap`` None) or a clipped ReLU as ``clamp`` (the escape watch stays quiet), and
    its plain gradient in closed form: ``grad`` where ``low <= u <= cap``, else 0, as
    ``clamp``'s own backward (no second pass through the function)."""

    def __init__(self, low: float, cap: float | None) -> None:
        self.low, self.cap = low, cap

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        return t.clamp_min(self.low) if self.cap is None else t.clamp(self.low, self.cap)

    def grad(self, u: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        inside = u >= self.low if self.cap is None else (u >= self.low) & (u <= self.cap)
        return torch.where(inside, grad, torch.zeros((), dtype=grad.dtype, device=grad.device))


def _plain_grad(fn: _Fn, u: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``grad * f'(u)`` (a vector-Jacobian product of ``fn`` at ``u``)."""
    if isinstance(fn, _Clamp):
        return fn.grad(u, grad)
    with torch.enable_grad():
        leaf = u.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(fn(leaf), [leaf], grad)
    return g


class _Rescale(torch.autograd.Function):
    """``y = fn(u)`` on the doubled batch; backward: the rescale multiplier.

    ``u`` and ``y`` are saved for backward (an in-place change of either later in the forward
    is then an autograd error, never a silently wrong multiplier); an in-place call keeps a
    private copy of ``u``, which it overwrites."""

    @staticmethod
    def forward(ctx: Any, u: torch.Tensor, fn: _Fn, inplace: bool, eps: float) -> torch.Tensor:
        ctx.fn, ctx.eps, ctx.inplace = fn, eps, inplace
        if not inplace:
            y = fn(u)
            ctx.save_for_backward(u, y)
            return y
        ctx.u = u.detach().clone()
        u.copy_(fn(ctx.u))
        ctx.mark_dirty(u)
        ctx.save_for_backward(u)
        return u

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        if ctx.inplace:
            (y,), u = ctx.saved_tensors, ctx.u
        else:
            u, y = ctx.saved_tensors
        ua, ub = _halves(u)
        ya, yb = _halves(y)
        delta_in = ua - ub
        rescaled = _paired(grad) * (ya - yb) / delta_in
        return _near_zero(ctx, u, grad, delta_in, rescaled), None, None, None


class _RescaleMaxPool(torch.autograd.Function):
    """A max pooling with Captum's DeepLift rule in its backward."""

    @staticmethod
    def forward(ctx: Any, u: torch.Tensor, kind: Any, params: dict[str, Any], eps: float) -> Any:
        pool, ctx.unpool = _POOLS[kind]
        y, idx = pool(u, **params, return_indices=True)
        ctx.params, ctx.eps = params, eps
        ctx.save_for_backward(u, y, idx)
        ctx.pool = pool
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        u, y, idx = ctx.saved_tensors
        p = ctx.params
        ua, ub = _halves(u)
        ya, yb = _halves(y)
        top = torch.max(ya, yb)
        delta_out = torch.cat([top - yb, ya - top])
        spread = ctx.unpool(
            grad * delta_out,
            idx,
            p["kernel_size"],
            p["stride"],
            p["padding"],
            output_size=list(u.shape),
        )
        sa, sb = _halves(spread)
        delta_in = ua - ub
        rescaled = ((sa + sb) / delta_in).expand(2, *delta_in.shape)

        def pool(t: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = ctx.pool(t, **p, return_indices=True)[0]
            return out

        ctx.fn = pool
        return _near_zero(ctx, u, grad, delta_in, rescaled), None, None, None


def _bound(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any] | None:
    try:
        return dict(_signature(func).bind(*args, **kwargs).arguments)
    except (TypeError, ValueError):  # a C builtin without a signature, or a call it rejects
        return None


@functools.lru_cache(maxsize=256)
def _signature(func: Any) -> inspect.Signature:
    """``inspect.signature``, once per function (it took ~20 us per pooling call)."""
    return inspect.signature(func)


def _elementwise(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """``(u, fn, inplace)`` for a rescalable elementwise call, else ``()``."""
    relu = _relu_call(func, args, kwargs)
    if relu is not None:
        return relu[0], _Clamp(0.0, None), relu[1]
    clipped = _clipped_relu_call(func, args, kwargs)
    if clipped is not None:
        cap = clipped[1]
        return clipped[0], _Clamp(0.0, cap), clipped[2]
    kind = _other_activation(func)
    if kind is None or kind in _NOT_ELEMENTWISE or not args:
        return ()
    bound = _bound(func, args, kwargs) or {}
    inplace = getattr(func, "__name__", "").endswith("_") or bool(bound.get("inplace", False))
    rest = args[1:]

    def fn(t: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = func(t.clone() if inplace else t, *rest, **kwargs)
        return out

    return args[0], fn, inplace


def _pool_params(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """The keyword arguments of a max pooling call the rule covers, else None."""
    try:
        if func not in _POOLS:
            return None
    except TypeError:
        return None
    bound = _bound(_POOLS[func][0], args, kwargs)
    if bound is None or bound.pop("return_indices", False):
        return None  # the caller wants the indices: ordinary gradient, reported
    bound.pop("input")
    if bound.get("stride") in (None, []):
        bound["stride"] = bound["kernel_size"]
    return bound


class _DeepLiftMode(TorchFunctionMode):
    """Answers nonlinearity calls with the rescale Functions (see the module docstring)."""

    def __init__(self, report: DeepLiftReport, eps: float) -> None:
        super().__init__()
        self.report, self.eps = report, eps

    def __torch_function__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        call = _elementwise(func, args, kwargs)
        if call and isinstance(call[0], torch.Tensor):
            self.report["rescaled"] += 1
            return _Rescale.apply(call[0], call[1], call[2], self.eps)  # type: ignore[no-untyped-call]
        params = _pool_params(func, args, kwargs)
        if params is not None and args and isinstance(args[0], torch.Tensor):
            self.report["max_pools"] += 1
            return _RescaleMaxPool.apply(args[0], func, params, self.eps)  # type: ignore[no-untyped-call]
        self._count_plain(func)
        return func(*args, **kwargs)

    def _count_plain(self, func: Any) -> None:
        kind = _other_activation(func)
        try:
            if kind is None:
                kind = _PLAIN_KINDS.get(func)
            if kind is None and func in _POOLS:
                kind = "MaxPool (return_indices=True)"
        except TypeError:  # an unhashable callable is not one of ours
            return
        if kind is not None:
            plain = self.report["not_overridden"]
            plain[kind] = plain.get(kind, 0) + 1


@contextmanager
def deeplift_override(model_name: str, eps: float = DEFAULT_EPS) -> Iterator[DeepLiftReport]:
    """Inside: nonlinearities backpropagate DeepLift multipliers over a doubled batch.

    Raises:
        CapabilityError: at exit, when a ReLU ran where it could not be overridden.
    """
    watch = _EscapeWatch()
    report: DeepLiftReport = {"rescaled": 0, "max_pools": 0, "not_overridden": {}}
    with watch, _DeepLiftMode(report, eps):
        yield report
    if watch.escaped:
        raise CapabilityError(
            f"deeplift: {watch.escaped} ReLU call(s) in torch model {model_name} ran outside "
            "Python (TorchScript, torch.compile or a C++ extension), where innersight cannot "
            "apply the rescale rule; the multipliers would silently be plain gradients. Wrap "
            "the eager (un-scripted, un-compiled) model, or use integrated_gradients"
        )


def _doubled(objective: Objective, n: int) -> Logit | Custom:
    """The objective over ``[x; baseline]``: per-sample targets repeated for the second half."""
    objective = check_objective(objective)
    if isinstance(objective, Custom):
        return objective
    if isinstance(objective, Logit):
        index = per_sample(objective.index, n, what="target")
        return Logit(np.concatenate([index, index]))
    raise ObjectiveError(
        f"deeplift explains output scores: got {objective!r}; pass a Logit (a class) or a "
        "Custom score objective (for a layer's channel, use integrated_gradients or saliency)"
    )


class DeepLiftMixin:
    """Mixed into :class:`~.adapter.TorchAdapter`: ``deeplift_value_and_grad``."""

    provides: frozenset[Capability] = frozenset({Capability.DEEPLIFT})
    last_deeplift_report: DeepLiftReport | None = None

    if TYPE_CHECKING:
        model: nn.Module
        options: TorchOptions
        _lock: Any
        _modules: dict[str, nn.Module]

        @property
        def name(self) -> str: ...

        def _prepare(self, x: Any) -> np.ndarray: ...
        def _tensor(self, x_np: np.ndarray) -> torch.Tensor: ...
        def _call(self, t: torch.Tensor, numpy_shape: tuple[int, ...]) -> Any: ...
        def _output_tensor(self, out: Any) -> torch.Tensor: ...
        def _retrying(self, x_np: np.ndarray, run: Callable[[], Any]) -> Any: ...

    def deeplift_value_and_grad(
        self, x: np.ndarray, baseline: np.ndarray, objective: Objective
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(F(x) - F(baseline)`` ``(N,)``, DeepLift multipliers shaped like ``x``); see
        :class:`~innersight.core.deeplift.DeepLiftAdapter` and the module docstring."""
        x_np, b_np = self._prepare(x), self._prepare(baseline)
        if b_np.shape != x_np.shape:
            raise InputError(
                f"baseline has shape {b_np.shape}, the inputs {x_np.shape}: deeplift needs one "
                "baseline per input; repeat a single one with np.broadcast_to(b, x.shape)"
            )
        n = len(x_np)
        target = _doubled(objective, n)
        both = np.concatenate([x_np, b_np])
        with self._lock:
            values, grads = self._retrying(both, lambda: self._deeplift_pass(both, target))
        return (values[:n] - values[n:]).astype(np.float32), grads[:n]

    def _deeplift_pass(
        self, both: np.ndarray, objective: Logit | Custom
    ) -> tuple[np.ndarray, np.ndarray]:
        """One forward and backward of the doubled batch under :func:`deeplift_override`."""
        self.last_deeplift_report = None
        cap = Capture()
        final = self.options.logits_from
        hooks = (
            []
            if final is None
            else [Hook(self._modules[final], logits_hook(cap, objective, final), pre=True)]
        )
        with eval_mode(self.model), torch.inference_mode(False), torch.enable_grad():
            leaf = self._tensor(both).detach().requires_grad_(True)
            with deeplift_override(self.name) as report, hooked(hooks):
                try:
                    out = self._call(leaf.clone(), both.shape)
                except StopForward:
                    out = None
                if cap.value is None:
                    cap.set_value(score_values(objective, self._output_tensor(out)))
            values = cap.value
            assert values is not None  # set above or by the logits hook
            (grad,) = torch.autograd.grad(values.sum(), [leaf], allow_unused=True)
        self.last_deeplift_report = report
        layout = self.options.input_layout
        out_values = values.detach().double().cpu().numpy()
        return out_values, grad_to_numpy(grad, leaf, layout)

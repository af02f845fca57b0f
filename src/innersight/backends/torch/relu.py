"""Guided and deconvnet ReLUs without touching the model.

How: during the forward pass a :class:`~torch.overrides.TorchFunctionMode` intercepts every
Python-level ReLU call (``nn.ReLU`` and ``nn.ReLU(inplace=True)`` call ``F.relu``, so modules are
covered along with ``F.relu``, ``F.relu_``, ``torch.relu``, ``torch.relu_``, ``Tensor.relu``,
``Tensor.relu_`` and ``torch.ops.aten.relu``) and answers it with a custom autograd Function
whose forward is the ordinary ReLU (in place when the call was in place, so code that ignores
the return value of ``x.relu_()`` still works) and whose backward is

* guided (Springenberg et al.): ``grad * (x > 0) * (grad > 0)``
* deconv (Zeiler & Fergus):     ``max(grad, 0)``

Clipped ReLUs get the same rule as in the Keras backend: ``nn.ReLU6``/``F.relu6`` and every
``nn.Hardtanh``/``F.hardtanh`` whose lower bound is 0 (a ReLU capped at ``max_val``) pass a
guided gradient only where ``0 < y < max_val`` (the cap blocks it as the plain gradient does), and
a deconv gradient ``max(grad, 0)``. They count as overridden. A Hardtanh with any other lower
bound (the default ``[-1, 1]``) is not a ReLU: it keeps its plain gradient and is reported as
``"Hardtanh"``.

Detection: a ReLU that runs below Python (TorchScript, ``torch.compile``d code, a C++
extension) cannot be intercepted. A :class:`TorchDispatchMode` watches the dispatcher for
``aten.relu``/``aten.relu_`` (and ``aten.hardtanh`` with lower bound 0, where ReLU6 ends up)
during the same pass; the override Functions compute with ``clamp_min``/``clamp`` so any ReLU
seen there escaped, and the call fails with a CapabilityError instead
of returning plain gradients labelled guided. ReLUs written as ``clamp``/``maximum``/``where``
are not ReLU calls and keep their plain gradient (documented limitation).

Report: every override pass counts the ReLU calls it answered and, by kind, the other nonlinear
activation calls it saw (``F.silu``/``nn.SiLU``, ``nn.GELU``, ``nn.Hardswish``, ``torch.sigmoid``,
``torch.tanh``, ...), which keep their plain gradient; the adapter publishes the counts as
``last_relu_report``, so that a technique can say when "guided" was in fact mostly plain.

Cost: on the reference conv net (see :mod:`.layout`) a guided gradient takes ~6% (batch 32) to
~15% (batch 1) longer than a plain one; the modes add one Python call per torch op.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from innersight.core.errors import CapabilityError

__all__ = ["ReluReport", "relu_override"]

#: ``{"overridden": n, "not_overridden": {"SiLU": n, ...}}`` (see the module docstring).
ReluReport = dict[str, Any]


class _GuidedRelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        out = x.clamp_min(0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (out,) = ctx.saved_tensors
        # == clamp(grad, 0) * (out > 0), one fused pass fewer (the plain ReLU's backward kernel)
        return torch.ops.aten.threshold_backward(grad.clamp_min(0), out, 0)


class _GuidedReluInplace(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        x.clamp_min_(0)
        ctx.mark_dirty(x)
        ctx.save_for_backward(x)  # the output: out > 0 exactly where the input was > 0
        return x

    backward = _GuidedRelu.backward


class _DeconvRelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad.clamp_min(0)


class _DeconvReluInplace(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        x.clamp_min_(0)
        ctx.mark_dirty(x)
        return x

    backward = _DeconvRelu.backward


class _GuidedClippedRelu(torch.autograd.Function):
    """``clamp(x, 0, cap)``; guided backward: positive gradient where ``0 < y < cap``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, cap: float) -> torch.Tensor:
        out = x.clamp(0, cap)
        ctx.save_for_backward(out)
        ctx.cap = cap
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (out,) = ctx.saved_tensors
        keep = (out > 0) & (out < ctx.cap)
        return torch.where(keep, grad.clamp_min(0), torch.zeros_like(grad)), None


class _GuidedClippedReluInplace(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, cap: float) -> torch.Tensor:
        x.clamp_(0, cap)
        ctx.mark_dirty(x)
        ctx.save_for_backward(x)
        ctx.cap = cap
        return x

    backward = _GuidedClippedRelu.backward


class _DeconvClippedRelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, cap: float) -> torch.Tensor:
        return x.clamp(0, cap)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad.clamp_min(0), None


class _DeconvClippedReluInplace(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, cap: float) -> torch.Tensor:
        x.clamp_(0, cap)
        ctx.mark_dirty(x)
        return x

    backward = _DeconvClippedRelu.backward


_FUNCTIONS = {
    "guided": (_GuidedRelu, _GuidedReluInplace),
    "deconv": (_DeconvRelu, _DeconvReluInplace),
}
_CLIPPED_FUNCTIONS = {
    "guided": (_GuidedClippedRelu, _GuidedClippedReluInplace),
    "deconv": (_DeconvClippedRelu, _DeconvClippedReluInplace),
}
_OUT_OF_PLACE = {
    F.relu,
    torch.relu,
    torch.Tensor.relu,
    torch.ops.aten.relu,
    torch.ops.aten.relu.default,
}
_IN_PLACE = {
    torch.relu_,
    F.relu_,
    torch.Tensor.relu_,
    torch.ops.aten.relu_,
    torch.ops.aten.relu_.default,
}
# Clipped ReLUs: relu6 is hardtanh(x, 0, 6); a hardtanh with min_val 0 is a ReLU capped at max_val.
_RELU6 = {F.relu6}
_HARDTANH = {F.hardtanh, F.hardtanh_}
_ATEN_RELU = {torch.ops.aten.relu.default, torch.ops.aten.relu_.default}
_ATEN_HARDTANH = {torch.ops.aten.hardtanh.default, torch.ops.aten.hardtanh_.default}
# Other nonlinear activations, by the name of their nn module: they keep their plain gradient.
_OTHER_KINDS: dict[str, tuple[Any, ...]] = {
    "SiLU": (F.silu,),
    "GELU": (F.gelu,),
    "Hardswish": (F.hardswish,),
    "Hardsigmoid": (F.hardsigmoid,),
    "Mish": (F.mish,),
    "ELU": (F.elu, F.elu_),
    "SELU": (F.selu, F.selu_),
    "CELU": (F.celu, F.celu_),
    "LeakyReLU": (F.leaky_relu, F.leaky_relu_),
    "RReLU": (F.rrelu, F.rrelu_),
    "PReLU": (F.prelu, torch.prelu),
    "Softplus": (F.softplus,),
    "Softsign": (F.softsign,),
    "LogSigmoid": (F.logsigmoid,),
    "GLU": (F.glu,),
    "Hardtanh": (F.hardtanh, F.hardtanh_),  # only those that are no clipped ReLU (min_val != 0)
    "Sigmoid": (torch.sigmoid, torch.sigmoid_, torch.Tensor.sigmoid, torch.Tensor.sigmoid_),
    "Tanh": (torch.tanh, torch.tanh_, torch.Tensor.tanh, torch.Tensor.tanh_),
}
_OTHER_ACTIVATIONS = {func: kind for kind, funcs in _OTHER_KINDS.items() for func in funcs}


def _other_activation(func: Any) -> str | None:
    try:
        return _OTHER_ACTIVATIONS.get(func)
    except TypeError:  # an unhashable callable is not one of ours
        return None


def _relu_call(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, bool] | None:
    """(input, in_place) when ``func(*args, **kwargs)`` is a ReLU call, else None."""
    try:
        if func not in _OUT_OF_PLACE and func not in _IN_PLACE:
            return None
    except TypeError:  # an unhashable callable is not one of ours
        return None
    x = args[0] if args else kwargs.get("input", kwargs.get("self"))
    inplace = func in _IN_PLACE
    if func is F.relu:
        inplace = bool(args[1] if len(args) > 1 else kwargs.get("inplace", False))
    return x, inplace


def _clipped_relu_call(
    func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, float, bool] | None:
    """(input, cap, in_place) when the call is a ReLU clipped at ``cap`` (relu6, hardtanh(0, c))."""
    try:
        if func not in _RELU6 and func not in _HARDTANH:
            return None
    except TypeError:  # an unhashable callable is not one of ours
        return None
    x = args[0] if args else kwargs.get("input")
    if func in _RELU6:
        return x, 6.0, bool(args[1] if len(args) > 1 else kwargs.get("inplace", False))
    names = ("min_val", "max_val", "inplace")
    given = dict(zip(names, args[1:], strict=False)) | {k: kwargs[k] for k in names if k in kwargs}
    low, cap = float(given.get("min_val", -1.0)), float(given.get("max_val", 1.0))
    if low != 0.0 or cap <= 0.0:
        return None  # a hardtanh that is no clipped ReLU: plain gradient, reported
    return x, cap, func is F.hardtanh_ or bool(given.get("inplace", False))


class _ReluOverride(TorchFunctionMode):
    """Answers ReLU calls with the guided/deconv Functions; everything else runs unchanged."""

    def __init__(self, mode: str, report: ReluReport) -> None:
        super().__init__()
        self.out_of_place, self.in_place = _FUNCTIONS[mode]
        self.clipped, self.clipped_in_place = _CLIPPED_FUNCTIONS[mode]
        self.report = report

    def __torch_function__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        call = _relu_call(func, args, kwargs)
        if call is not None and isinstance(call[0], torch.Tensor):
            self.report["overridden"] += 1
            fn = self.in_place if call[1] else self.out_of_place
            return fn.apply(call[0])  # type: ignore[no-untyped-call]
        clipped = _clipped_relu_call(func, args, kwargs)
        if clipped is not None and isinstance(clipped[0], torch.Tensor):
            self.report["overridden"] += 1
            fn = self.clipped_in_place if clipped[2] else self.clipped
            return fn.apply(clipped[0], clipped[1])  # type: ignore[no-untyped-call]
        kind = _other_activation(func)
        if kind is not None:
            plain = self.report["not_overridden"]
            plain[kind] = plain.get(kind, 0) + 1
        return func(*args, **kwargs)


def _clips_at_zero(args: tuple[Any, ...], kwargs: dict[str, Any] | None) -> bool:
    """An aten hardtanh call whose lower bound is 0: a ReLU6-like clamp (the overrides clamp)."""
    low = args[1] if len(args) > 1 else (kwargs or {}).get("min_val", -1.0)
    return float(low) == 0.0


class _EscapeWatch(TorchDispatchMode):
    """Counts ReLUs that reached the dispatcher without passing through the override."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.escaped = 0

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        if func in _ATEN_RELU or (func in _ATEN_HARDTANH and _clips_at_zero(args, kwargs)):
            self.escaped += 1
        return func(*args, **(kwargs or {}))


@contextmanager
def relu_override(mode: str, model_name: str) -> Iterator[ReluReport | None]:
    """Inside: ReLUs backpropagate as ``mode`` ("plain" does nothing and yields None).

    Yields:
        The :data:`ReluReport` of the pass, filled in as the model runs.

    Raises:
        CapabilityError: at exit, when a ReLU ran where it could not be overridden.
    """
    if mode == "plain":
        yield None
        return
    watch = _EscapeWatch()
    report: ReluReport = {"overridden": 0, "not_overridden": {}}
    with watch, _ReluOverride(mode, report):
        yield report
    if watch.escaped:
        raise CapabilityError(
            f"relu={mode!r}: {watch.escaped} ReLU call(s) in torch model {model_name} ran outside "
            "Python (TorchScript, torch.compile or a C++ extension), where innersight cannot "
            f"override them; a {mode} gradient would silently be a plain one. Wrap the eager "
            "(un-scripted, un-compiled) model, or use relu='plain'"
        )

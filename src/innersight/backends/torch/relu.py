"""Guided and deconvnet ReLUs without touching the model.

How: during the forward pass a :class:`~torch.overrides.TorchFunctionMode` intercepts every
Python-level ReLU call (``nn.ReLU`` and ``nn.ReLU(inplace=True)`` call ``F.relu``, so modules are
covered along with ``F.relu``, ``F.relu_``, ``torch.relu``, ``torch.relu_``, ``Tensor.relu``,
``Tensor.relu_`` and ``torch.ops.aten.relu``) and answers it with a custom autograd Function
whose forward is the ordinary ReLU (in place when the call was in place, so code that ignores
the return value of ``x.relu_()`` still works) and whose backward is

* guided (Springenberg et al.): ``grad * (x > 0) * (grad > 0)``
* deconv (Zeiler & Fergus):     ``max(grad, 0)``

Detection: a ReLU that runs below Python (TorchScript, ``torch.compile``d code, a C++
extension) cannot be intercepted. A :class:`TorchDispatchMode` watches the dispatcher for
``aten.relu``/``aten.relu_`` during the same pass; the override Functions compute with
``clamp_min`` so any ReLU seen there escaped, and the call fails with a CapabilityError instead
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


_FUNCTIONS = {
    "guided": (_GuidedRelu, _GuidedReluInplace),
    "deconv": (_DeconvRelu, _DeconvReluInplace),
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
# Clipped ReLUs that look like ReLUs to a reader but are not ReLU calls: refused rather than
# silently left plain (the Keras backend overrides Relu6; here it is not implemented yet).
_UNSUPPORTED = {F.relu6, F.hardtanh, F.hardtanh_}
_ATEN_RELU = {torch.ops.aten.relu.default, torch.ops.aten.relu_.default}
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


class _ReluOverride(TorchFunctionMode):
    """Answers ReLU calls with the guided/deconv Functions; everything else runs unchanged."""

    def __init__(self, mode: str, report: ReluReport) -> None:
        super().__init__()
        self.out_of_place, self.in_place = _FUNCTIONS[mode]
        self.report = report

    def __torch_function__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if func in _UNSUPPORTED:
            raise CapabilityError(
                f"{getattr(func, '__name__', func)} (nn.ReLU6 / nn.Hardtanh) has no guided or "
                "deconv rule in the torch backend, so the gradient would silently be a plain "
                "one; use relu='plain', or a model with nn.ReLU"
            )
        call = _relu_call(func, args, kwargs)
        if call is not None and isinstance(call[0], torch.Tensor):
            self.report["overridden"] += 1
            fn = self.in_place if call[1] else self.out_of_place
            return fn.apply(call[0])
        kind = _other_activation(func)
        if kind is not None:
            plain = self.report["not_overridden"]
            plain[kind] = plain.get(kind, 0) + 1
        return func(*args, **kwargs)


class _EscapeWatch(TorchDispatchMode):
    """Counts ReLUs that reached the dispatcher without passing through the override."""

    def __init__(self) -> None:
        super().__init__()
        self.escaped = 0

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        if func in _ATEN_RELU:
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

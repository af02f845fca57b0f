"""Adapter methods that replace a layer's output (layer integrated gradients, tokens).

:meth:`LayerOverrideMixin.layer_override_value_and_grad` runs the model on the real input with
one module's output (a forward hook) or what it receives (a forward pre-hook) replaced by a
leaf tensor that requires grad, and differentiates the objective by that leaf. The replacement
arrives channels-last and is turned into the layout the adapter found for that very tensor (an
NCHW convolution output is permuted, an NHWC one kept), in the tensor's own dtype and memory
format (so the same kernels run after it, and a model's own ``x.view()`` works). The pass is
the adapter's own gradient pass otherwise: its input preparation and model call, its objective
hooks (a Channel/Neuron objective stops the pass after its layer), eval mode, the ReLU
override, hooks removed in ``finally``.

A module that runs several times is replaced at its last call, the call taps read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch

from innersight.core.adapter import Capability, is_input_tap
from innersight.core.errors import InputError
from innersight.core.objectives import Objective

from .hooks import Hook, eval_mode
from .layout import to_numpy

if TYPE_CHECKING:
    from torch import nn

    from .capture import Capture
    from .options import TorchOptions
    from .probe import Probe
    from .relu import ReluReport

__all__ = ["LayerOverrideMixin"]

_T = TypeVar("_T")


class _Swap:
    """The replacement leaf and the hook that puts it in place at the module's last call."""

    def __init__(self, leaf: torch.Tensor, last_call: int, tap: str) -> None:
        self.leaf, self.last_call, self.tap = leaf, last_call, tap
        self.calls = 0
        self.done = False

    def _value(self, found: Any) -> torch.Tensor | None:
        self.calls += 1
        if self.calls != self.last_call:
            return None
        if not isinstance(found, torch.Tensor):
            raise InputError(
                f"layer_override of {self.tap!r}: the tensor there is a "
                f"{type(found).__name__}, not a tensor; replace a layer whose output (or first "
                "argument) is one tensor"
            )
        if tuple(found.shape) != tuple(self.leaf.shape):
            raise InputError(
                f"layer_override of {self.tap!r}: the replacement has shape (as the model holds "
                f"it) {tuple(self.leaf.shape)}, the tensor it replaces {tuple(found.shape)}; "
                "pass an array shaped like forward(x, taps=[layer]).activations[layer]"
            )
        self.done = True
        # a clone (in-place ops downstream alter it, not the leaf) in the memory format of the
        # tensor it replaces: the same kernels run after it as on the real activations
        return self.leaf.to(found.dtype).clone(memory_format=_format_of(found))

    def output_hook(self, module: nn.Module, args: Any, out: Any) -> Any:
        return self._value(out)

    def input_hook(self, module: nn.Module, args: Any) -> Any:
        value = self._value(args[0] if args else None)
        return None if value is None else (value, *args[1:])


def _format_of(t: torch.Tensor) -> torch.memory_format:
    """channels_last for a rank-4 tensor with NHWC strides, else contiguous."""
    nhwc = t.dim() == 4 and not t.is_contiguous()
    if nhwc and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


class LayerOverrideMixin:
    """Mixed into :class:`~.adapter.TorchAdapter`; ``provides`` lists the capabilities it adds."""

    provides: frozenset[Capability] = frozenset({Capability.LAYER_OVERRIDE})

    if TYPE_CHECKING:
        model: nn.Module
        options: TorchOptions
        last_relu_report: ReluReport | None
        _modules: dict[str, nn.Module]
        _probe: Probe | None
        _lock: Any

        def check_relu(self, relu: str) -> None: ...
        def _check_layer(self, name: str, tap: str | None = None) -> None: ...
        def _check_ran(self, name: str, module: nn.Module) -> None: ...
        def _layout(self, tap: str) -> str: ...
        def _prepare(self, x: Any) -> np.ndarray: ...
        def _tensor(self, x_np: np.ndarray) -> torch.Tensor: ...
        def _retrying(self, x_np: np.ndarray, run: Callable[[], _T]) -> _T: ...
        def _forward_pass(self, x_np: np.ndarray, taps: tuple[str, ...]) -> Any: ...
        def _objective_hooks(self, objective: Objective, cap: Capture) -> list[Hook]: ...
        def _run_for_value(
            self,
            x_leaf: torch.Tensor,
            shape: tuple[int, ...],
            objective: Objective,
            cap: Capture,
            hooks: list[Hook],
            relu: str,
        ) -> tuple[bool, ReluReport | None]: ...

    def layer_override_value_and_grad(
        self,
        x: np.ndarray,
        objective: Objective,
        layer: str,
        replacement: np.ndarray,
        *,
        relu: str = "plain",
    ) -> tuple[np.ndarray, np.ndarray]:
        """Values ``(N,)`` and d(sum of values)/d(replacement), with ``layer``'s output (or,
        for an :func:`~innersight.core.input_tap`, what it receives) replaced by
        ``replacement`` (channels-last, shaped like the tensor it replaces); see
        :class:`innersight.core.override.LayerOverrideAdapter`."""
        from .targets import check_objective

        objective = check_objective(objective)
        self.check_relu(relu)
        name = is_input_tap(layer) or layer
        self._check_layer(name, layer)
        if objective.layer is not None:
            self._check_layer(objective.layer)
        x_np = self._prepare(x)
        rep = np.asarray(replacement)
        with self._lock:
            if self._probe is None:  # call counts and layouts first: one short pass
                self._retrying(x_np, lambda: self._forward_pass(x_np[:1], ()))
                self._check_layer(name, layer)
            run = lambda: self._override_pass(x_np, objective, layer, rep, relu)  # noqa: E731
            return self._retrying(x_np, run)

    def _override_pass(
        self, x_np: np.ndarray, objective: Objective, tap: str, rep: np.ndarray, relu: str
    ) -> tuple[np.ndarray, np.ndarray]:
        from .capture import Capture

        self.last_relu_report = None
        name = is_input_tap(tap) or tap
        module = self._modules[name]
        self._check_ran(name, module)
        layout = self._layout(tap)
        swap = _Swap(self._leaf(rep, layout), self._calls(module), tap)
        pre = is_input_tap(tap) is not None
        hook = Hook(module, swap.input_hook if pre else swap.output_hook, pre=pre)
        cap = Capture()
        hooks = [hook, *self._objective_hooks(objective, cap)]
        with eval_mode(self.model), torch.inference_mode(False), torch.enable_grad():
            x_in = self._tensor(x_np).detach()
            _, report = self._run_for_value(x_in, x_np.shape, objective, cap, hooks, relu)
            if objective.layer is not None and cap.deferred is not None:
                cap.finish(objective, self._layout(objective.layer))
            values, _ = cap.result(objective, None, x_in, module_name(self.model))
            grad = None
            if swap.done and values.requires_grad:
                (grad,) = torch.autograd.grad(values.sum(), [swap.leaf], allow_unused=True)
        self.last_relu_report = report
        g = torch.zeros_like(swap.leaf) if grad is None else grad
        out = values.detach().float().cpu().numpy().astype(np.float32)
        return out, to_numpy(g, layout)

    def _leaf(self, rep: np.ndarray, layout: str) -> torch.Tensor:
        """The channels-last replacement as a leaf in the tensor's layout, requiring grad."""
        if not np.issubdtype(rep.dtype, np.floating):
            raise InputError(
                f"layer_override needs a float replacement, got dtype {rep.dtype}; pass "
                "activations as float32"
            )
        t = torch.from_numpy(np.ascontiguousarray(rep, dtype=np.float32))
        if t.ndim == 4 and layout != "NHWC":
            t = t.permute(0, 3, 1, 2)
        o = self.options
        return t.to(device=o.device, dtype=o.dtype).detach().requires_grad_(True)

    def _calls(self, module: nn.Module) -> int:
        probe = self._probe
        return 1 if probe is None else max(1, int(probe.calls_of(module)))


def module_name(model: Any) -> str:
    """The model's class name (the original one for TorchScript), for messages."""
    return str(getattr(model, "original_name", None) or type(model).__name__)

"""The gradient passes of :class:`~.adapter.TorchAdapter`: ``value_and_grad`` and
``layer_value_and_grad``.

One pass: the objective's hooks (see :mod:`.capture`) evaluate it where it lives (the outputs,
the input of a final softmax, or a layer, stopping the pass after the layer's last call), an
optional leaf hook cuts the graph at ``layer``, and ``torch.autograd.grad`` differentiates the
sum of the per-sample values. ReLU overrides wrap the pass (:mod:`.relu`), and their counts are
published as ``last_relu_report``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np
import torch

from innersight.core.objectives import Custom, Logit, Objective

from .capture import Capture, leaf_hook, logits_hook, objective_hook
from .hooks import Hook, StopForward, eval_mode, hooked
from .layout import grad_to_numpy, to_numpy
from .relu import ReluReport, relu_override
from .targets import check_objective, score_values

if TYPE_CHECKING:
    from torch import nn

    from .options import TorchOptions
    from .probe import Probe

__all__ = ["GradientPasses"]

_T = TypeVar("_T")
_Grads = tuple[np.ndarray, np.ndarray | None, np.ndarray]


class GradientPasses:
    """Mixin of :class:`~.adapter.TorchAdapter`; it uses the adapter's plumbing below."""

    if TYPE_CHECKING:
        model: nn.Module
        options: TorchOptions

        @property
        def name(self) -> str: ...

        last_relu_report: ReluReport | None
        _modules: dict[str, nn.Module]
        _probe: Probe | None
        _lock: Any

        def check_relu(self, relu: str) -> None: ...
        def _check_layer(self, name: str, tap: str | None = None) -> None: ...
        def _check_ran(self, name: str, module: nn.Module) -> None: ...
        def _layout(self, tap: str) -> str: ...
        def _check_input_gradients(self) -> None: ...
        def _prepare(self, x: Any) -> np.ndarray: ...
        def _tensor(self, x_np: np.ndarray) -> torch.Tensor: ...
        def _call(self, t: torch.Tensor, numpy_shape: tuple[int, ...]) -> Any: ...
        def _output_tensor(self, out: Any) -> torch.Tensor: ...
        def _retrying(self, x_np: np.ndarray, run: Callable[[], _T]) -> _T: ...
        def _recorders(self, x_np: np.ndarray) -> tuple[Probe | None, list[Hook]]: ...
        def _adopt(self, probe: Probe | None) -> None: ...
        def _forward_pass(self, x_np: np.ndarray, taps: tuple[str, ...]) -> Any: ...

    def value_and_grad(
        self, x: np.ndarray, objective: Objective, *, relu: str = "plain"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-sample values ``(N,)`` and d(sum of values)/d(x), channels-last like ``x``."""
        values, _, grads = self._gradient(x, objective, relu, layer=None)
        return values, grads

    def layer_value_and_grad(
        self, x: np.ndarray, objective: Objective, layer: str, *, relu: str = "plain"
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Values ``(N,)``, the activations of ``layer`` and d(sum of values)/d(activations).

        Activations and gradients are channels-last, (N, H, W, C) or (N, D) (Grad-CAM).
        """
        values, acts, grads = self._gradient(x, objective, relu, layer=layer)
        return values, cast(np.ndarray, acts), grads

    def _gradient(
        self, x: np.ndarray, objective: Objective, relu: str, layer: str | None
    ) -> _Grads:
        objective = check_objective(objective)
        self.check_relu(relu)
        if layer is None:
            self._check_input_gradients()
        for name in (layer, objective.layer):
            if name is not None:
                self._check_layer(name)
        x_np = self._prepare(x)
        with self._lock:
            return self._retrying(x_np, lambda: self._gradient_pass(x_np, objective, relu, layer))

    def _gradient_pass(
        self, x_np: np.ndarray, objective: Objective, relu: str, layer: str | None
    ) -> _Grads:
        self.last_relu_report = None  # stays None when the pass fails
        cap = Capture()
        probe, recorders = self._recorders(x_np)
        hooks = [] if layer is None else [Hook(self._modules[layer], leaf_hook(cap, layer))]
        hooks += self._objective_hooks(objective, cap) + recorders  # recorders see replacements
        with eval_mode(self.model), torch.inference_mode(False), torch.enable_grad():
            x_leaf = self._tensor(x_np).detach().requires_grad_(layer is None)
            done, report = self._run_for_value(x_leaf, x_np.shape, objective, cap, hooks, relu)
            if done:
                self._adopt(probe)  # only a complete pass saw every module
            values, wrt = self._result(cap, objective, layer, x_leaf)
            total = values.sum()
            grad = None
            if total.requires_grad:
                (grad,) = torch.autograd.grad(total, [wrt], allow_unused=True)
        self.last_relu_report = report
        out_values = values.detach().float().cpu().numpy().astype(np.float32)
        if layer is None:
            return out_values, None, grad_to_numpy(grad, x_leaf, self.options.input_layout)
        g = torch.zeros_like(wrt) if grad is None else grad
        if self._probe is None:  # stopped at a final softmax: one short pass learns the layouts
            self._forward_pass(x_np[:1], ())
        layout = self._layout(layer)
        return out_values, to_numpy(wrt, layout), to_numpy(g, layout)

    def _result(
        self, cap: Capture, objective: Objective, layer: str | None, x_leaf: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        for name in (layer, objective.layer):  # the first pass learns which layers never run
            if name is not None:
                self._check_ran(name, self._modules[name])
        if objective.layer is not None and cap.deferred is not None:
            cap.finish(objective, self._layout(objective.layer))
        return cap.result(objective, layer, x_leaf, self.name)

    def _run_for_value(
        self,
        x_leaf: torch.Tensor,
        shape: tuple[int, ...],
        objective: Objective,
        cap: Capture,
        hooks: list[Hook],
        relu: str,
    ) -> tuple[bool, ReluReport | None]:
        """Run the pass: (True when it ran to the end, not stopped early; the ReLU report)."""
        # A clone as model input: a model normalising its input in place must not hit the leaf.
        x_in = x_leaf.clone() if x_leaf.requires_grad else x_leaf
        with relu_override(relu, self.name) as report, hooked(hooks):
            try:
                out = self._call(x_in, shape)
            except StopForward:
                return False, report
            if isinstance(objective, (Logit, Custom)) and cap.value is None:
                cap.set_value(score_values(objective, self._output_tensor(out)))
        return True, report

    def _objective_hooks(self, objective: Objective, cap: Capture) -> list[Hook]:
        if isinstance(objective, (Logit, Custom)):
            final = self.options.logits_from
            if final is None:
                return []
            return [Hook(self._modules[final], logits_hook(cap, objective, final), pre=True)]
        name = objective.layer
        module = self._modules[name]
        probe = self._probe
        if probe is None:
            # Without call counts and layouts yet (this adapter's first pass) the pass runs to
            # the end, records them, and the objective reads the last call once the layout is
            # known; every later pass stops early.
            return [Hook(module, objective_hook(cap, objective, sys.maxsize, None, known=False))]
        hook = objective_hook(cap, objective, probe.calls_of(module), self._layout(name), True)
        return [Hook(module, hook)]

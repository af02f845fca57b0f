"""The hooks of one pass: what they capture, and where they stop the pass.

* :func:`tap_hook` records a clone of a layer's output (a following ``nn.ReLU(inplace=True)``
  would otherwise overwrite it); a module that runs several times leaves its last output.
  :func:`input_tap_hook` (a pre-hook) records a clone of what a layer receives.
* :func:`objective_hook` evaluates a Channel/Neuron objective on every call of its layer and
  raises :class:`StopForward` after the layer's last call (known from the probe): the rest of
  the network never runs. This is what keeps filter maximization of early layers cheap. On an
  adapter's first pass the layer's layout is not known yet: the hook keeps a (differentiable)
  clone of the output and the value is computed after the pass (:meth:`Capture.finish`).
* :func:`logits_hook` reads the input of the final Softmax/Sigmoid (the pre-activation scores)
  and stops the pass before that activation runs.
* :func:`leaf_hook` cuts the graph at a layer for layer gradients: the output is replaced by a
  clone of a fresh leaf tensor, so d(objective)/d(activation) is exactly what autograd returns
  for the leaf, and in-place ops after the layer alter the clone, never the saved leaf.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from innersight.core.errors import InputError, ObjectiveError
from innersight.core.objectives import Channel, Custom, Logit, Neuron, Objective

from .hooks import StopForward
from .layout import as_nchw
from .targets import layer_objective_values, score_values

__all__ = [
    "Capture",
    "as_tensor",
    "input_tap_hook",
    "leaf_hook",
    "logits_hook",
    "objective_hook",
    "tap_hook",
]

ForwardHook = Callable[[nn.Module, Any, Any], Any]


@dataclass
class Capture:
    """What the hooks of one gradient pass hand back."""

    value: torch.Tensor | None = None  # (N,) objective values
    value_step: int = -1  # when ``value`` was computed, in hook calls
    leaves: list[tuple[int, torch.Tensor]] = field(default_factory=list)  # (step, leaf) per call
    calls: int = 0  # calls of the objective's layer so far
    steps: int = 0
    deferred: tuple[int, Any] | None = None  # (step, output) whose value awaits the layout

    def tick(self) -> int:
        self.steps += 1
        return self.steps

    def set_value(self, value: torch.Tensor) -> None:
        self.value, self.value_step = value, self.tick()

    def finish(self, objective: Objective, layout: str | None) -> None:
        """Compute a deferred Channel/Neuron value now that the layer's layout is known."""
        if self.deferred is None or not isinstance(objective, (Channel, Neuron)):
            return
        step, out = self.deferred
        self.deferred = None
        self.value = layer_objective_values(objective, as_nchw_tensor(out, layout))
        self.value_step = step

    def leaf(self) -> torch.Tensor | None:
        """The layer's output at its last call before the objective's value was computed."""
        before = [leaf for step, leaf in self.leaves if step < self.value_step]
        return before[-1] if before else None

    def result(
        self, objective: Objective, layer: str | None, x: torch.Tensor, model: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(values, tensor to differentiate by): the input ``x``, or the leaf of ``layer``."""
        if self.value is None:
            raise ObjectiveError(
                f"layer {getattr(objective, 'layer', None)!r} did not run in the forward pass of "
                f"{model}; pick a layer that the model's forward() calls"
            )
        if layer is None:
            return self.value, x
        leaf = self.leaf()
        if leaf is None:
            raise ObjectiveError(
                f"layer {layer!r} runs after the objective's layer "
                f"{getattr(objective, 'layer', 'output')!r} in {model} (or not at all), so "
                "the objective does not depend on it; pick a layer at or before the objective's"
            )
        return self.value, leaf


def as_tensor(out: Any, name: str) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        raise InputError(
            f"layer {name!r} returns {type(out).__name__}, not a tensor; innersight reads tensor "
            "outputs only: tap one of its submodules instead"
        )
    return out


def _input_tensor(args: Any, tap: str) -> torch.Tensor:
    first = args[0] if args else None
    if not isinstance(first, torch.Tensor):
        raise InputError(
            f"tap {tap!r}: the layer receives {type(first).__name__} as its first argument, not "
            "a tensor; innersight reads tensors only: tap the layer's output, or the input of "
            "the layer that comes next"
        )
    return first


def tap_hook(acts: dict[str, torch.Tensor], name: str) -> ForwardHook:
    def hook(module: nn.Module, args: Any, out: Any) -> None:
        acts[name] = as_tensor(out, name).clone()

    return hook


def input_tap_hook(acts: dict[str, torch.Tensor], name: str) -> Callable[[nn.Module, Any], None]:
    def pre_hook(module: nn.Module, args: Any) -> None:
        acts[name] = _input_tensor(args, name).clone()

    return pre_hook


def as_nchw_tensor(out: Any, layout: str | None) -> Any:
    return as_nchw(out, layout) if isinstance(out, torch.Tensor) else out


def objective_hook(
    cap: Capture, objective: Channel | Neuron, last_call: int, layout: str | None, known: bool
) -> ForwardHook:
    """``known=False``: the layout is learnt by this pass; the value is computed after it."""

    def hook(module: nn.Module, args: Any, out: Any) -> None:
        cap.calls += 1
        if known:
            cap.set_value(layer_objective_values(objective, as_nchw_tensor(out, layout)))
        else:  # a clone: in-place ops after the layer must not change what is evaluated later
            kept = out.clone() if isinstance(out, torch.Tensor) else out
            cap.deferred = (cap.tick(), kept)
        if cap.calls >= last_call:
            raise StopForward  # nothing after the objective's layer is needed

    return hook


def logits_hook(
    cap: Capture, objective: Logit | Custom, final: str
) -> Callable[[nn.Module, Any], None]:
    def pre_hook(module: nn.Module, args: Any) -> None:
        where = f"the input of {final!r}"
        cap.set_value(score_values(objective, args[0] if args else None, where))
        raise StopForward  # the final Softmax/Sigmoid itself is not needed

    return pre_hook


def leaf_hook(cap: Capture, name: str) -> ForwardHook:
    def hook(module: nn.Module, args: Any, out: Any) -> torch.Tensor:
        leaf = as_tensor(out, name).detach().requires_grad_(True)
        cap.leaves.append((cap.tick(), leaf))
        return leaf.clone()

    return hook

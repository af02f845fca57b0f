"""What the first pass learns about every module: its output shape and how often it runs.

The adapter never runs the model just to look at it, except for one no-grad pass on zeros at
wrap time when ``input_shape`` is declared. Otherwise the recorders of :func:`make_probe` ride
along on the first pass the adapter makes anyway (a forward, or a gradient pass that runs to the
end), so ``layers()`` reports shapes from then on; before, ``output_shape`` is ``()``.

The call counts make early stopping exact for modules that run several times per forward pass
(a shared ``self.relu`` in a ResNet block): an objective on such a module reads its LAST call,
the same call a forward tap records, and the pass stops right after that call. A gradient pass
made before the counts are known runs to the end (and records them). Call counts are assumed
not to depend on the input (true without data-dependent control flow; with fewer calls than
recorded, the pass runs to the end and the last call seen counts).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .hooks import Hook
from .layout import channels_last_shape

__all__ = ["Probe", "make_probe"]


@dataclass
class Probe:
    """Per module (keyed by ``id``): channels-last output shape without batch, and call count."""

    input_shape: tuple[int, ...]
    shapes: dict[int, tuple[int, ...]] = field(default_factory=dict)
    calls: dict[int, int] = field(default_factory=dict)

    def shape_of(self, module: nn.Module) -> tuple[int, ...]:
        return self.shapes.get(id(module), ())

    def calls_of(self, module: nn.Module) -> int:
        """How many times ``module`` runs in one forward pass (at least 1)."""
        return max(1, self.calls.get(id(module), 1))


def _recorder(probe: Probe) -> Callable[[nn.Module, Any, Any], None]:
    def hook(module: nn.Module, args: Any, out: Any) -> None:
        key = id(module)
        probe.calls[key] = probe.calls.get(key, 0) + 1
        if isinstance(out, torch.Tensor) and out.ndim >= 1:
            probe.shapes[key] = channels_last_shape(out.shape)[1:]
        else:
            probe.shapes[key] = ()

    return hook


def make_probe(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[Probe, list[Hook]]:
    """An empty Probe and the hooks (one per module, root excluded) that fill it during a pass."""
    probe = Probe(tuple(input_shape))
    recorder = _recorder(probe)
    # TorchScript modules take no hooks; their shapes stay unknown
    hooks = [
        Hook(m, recorder)
        for name, m in model.named_modules()
        if name and not isinstance(m, torch.jit.ScriptModule)
    ]
    return probe, hooks

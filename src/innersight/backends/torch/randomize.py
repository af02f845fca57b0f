"""Randomised copies of a torch model, for the model-randomization sanity check.

Adebayo et al. (2018) re-initialise a trained network's layers, from the top down, and ask
whether an explanation changes. Here that happens on a ``copy.deepcopy`` of the model: each layer
is re-initialised by its own ``reset_parameters()`` (torch's default initialisation for that
layer type), with torch's generators seeded inside ``torch.random.fork_rng``, so the result
depends only on the seed and the caller's random state is left as it was. The user's model is never
touched.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch
from torch import nn

from innersight.backends.torch.adapter import TorchAdapter
from innersight.core import CapabilityError

__all__ = ["TorchRandomizer"]


def _owns_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False))


def _adapter_options(adapter: TorchAdapter) -> dict[str, Any]:
    """The wrap options that give the copy an adapter like ``adapter`` (layout, shape, ...)."""
    from innersight.backends.torch.options import VALID_OPTIONS

    values = {f.name: getattr(adapter.options, f.name) for f in dataclasses.fields(adapter.options)}
    values["logits"] = "auto" if values.pop("logits_from", None) else False
    if "layer_layouts" in values:
        values["layer_layouts"] = dict(values["layer_layouts"]) or None
    return {k: v for k, v in values.items() if k in VALID_OPTIONS and v is not None}


class TorchRandomizer:
    """A deep copy of an adapter's model whose layers can be re-initialised one at a time.

    Args:
        adapter: the TorchAdapter of the user's model (left untouched).

    Attributes:
        adapter: a TorchAdapter of the copy, with the original adapter's options; it sees every
            re-initialisation (the weights change in place).
    """

    def __init__(self, adapter: Any) -> None:
        if not isinstance(adapter, TorchAdapter):
            raise CapabilityError(
                f"model randomization copies torch models wrapped by innersight's TorchAdapter; "
                f"got {type(adapter).__name__}"
            )
        self._order = [info.name for info in adapter.layers()]
        self.copy = copy.deepcopy(adapter.model)
        self._initial = copy.deepcopy(self.copy.state_dict())
        self._modules = dict(self.copy.named_modules())
        self.adapter = TorchAdapter(self.copy, **_adapter_options(adapter))

    def layers(self) -> list[str]:
        """Names of the modules that own parameters, top (output side) first.

        The order is the adapter's (execution order once the model has run); modules the adapter
        does not list follow in reverse definition order. A module shared under several names
        appears once.
        """
        listed = [n for n in self._order if n in self._modules]
        rest = [n for n in self._modules if n and n not in listed]
        seen: set[int] = set()
        out = []
        for name in [*reversed(listed), *reversed(rest)]:
            module = self._modules[name]
            if _owns_parameters(module) and id(module) not in seen:
                seen.add(id(module))
                out.append(name)
        return out

    def randomize(self, name: str, seed: int) -> bool:
        """Re-initialise layer ``name`` of the copy; False when it has no ``reset_parameters``."""
        module = self._modules[name]
        reset = getattr(module, "reset_parameters", None)
        if not callable(reset):
            return False
        devices = sorted({p.device.index or 0 for p in module.parameters() if p.is_cuda})
        # Seed only the generators this layer draws from, and give them back afterwards:
        # torch.manual_seed would also reseed every CUDA device of the caller for good.
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            torch.default_generator.manual_seed(int(seed))
            for device in devices:
                with torch.cuda.device(device):
                    torch.cuda.manual_seed(int(seed))
            reset()
        return True

    def restore(self) -> None:
        """Give the copy back the original weights (for independent randomization)."""
        self.copy.load_state_dict(self._initial)

"""The torch backend: wraps ``torch.nn.Module`` models in a :class:`TorchAdapter`.

This module is a plugin like any other: the plugin manager registers it and asks
``innersight_wrap_model``. It never imports torch itself; a torch model can only exist when
torch is already in ``sys.modules``, and only then is the adapter module (which imports torch)
loaded. So ``import innersight`` stays free of torch.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from innersight.core.markers import hookimpl

if TYPE_CHECKING:
    from innersight.backends.torch.adapter import TorchAdapter

__all__ = ["innersight_wrap_model"]


def _is_keras_model(model: Any) -> bool:
    """Keras-on-torch models are nn.Modules too; they belong to the Keras adapter."""
    return any(cls.__module__.split(".")[0] == "keras" for cls in type(model).__mro__)


@hookimpl
def innersight_wrap_model(model: Any, options: Mapping[str, Any]) -> TorchAdapter | None:
    """A TorchAdapter for a torch ``nn.Module`` (not a Keras one); None for anything else."""
    torch = sys.modules.get("torch")
    module_type = getattr(getattr(torch, "nn", None), "Module", None)
    if module_type is None or not isinstance(model, module_type) or _is_keras_model(model):
        return None
    from innersight.backends.torch.adapter import TorchAdapter

    return TorchAdapter(model, **dict(options))

"""The torch backend: wraps ``torch.nn.Module`` models in a :class:`TorchAdapter`.

This module is a plugin like any other: the plugin manager registers it and asks
``innersight_wrap_model``. It never imports torch itself; a torch model can only exist when
torch is already in ``sys.modules``, and only then is the adapter module (which imports torch)
loaded. So ``import innersight`` stays free of torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from innersight.core.frameworks import is_torch
from innersight.core.markers import hookimpl

if TYPE_CHECKING:
    from innersight.backends.torch.adapter import TorchAdapter

__all__ = ["innersight_wrap_model"]


@hookimpl
def innersight_wrap_model(model: Any, options: Mapping[str, Any]) -> TorchAdapter | None:
    """A TorchAdapter for a torch ``nn.Module`` (not a Keras one); None for anything else."""
    if not is_torch(model):  # Keras-on-torch models are nn.Modules too: the Keras adapter's
        return None
    from innersight.backends.torch.adapter import TorchAdapter

    return TorchAdapter(model, **dict(options))

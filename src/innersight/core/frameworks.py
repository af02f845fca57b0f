"""Which framework a native model belongs to, without importing any framework.

One detector for the CLI, loading, testing and the backends. It looks only at modules the user
has already imported (``sys.modules``) and at the model's class hierarchy, so calling it never
imports torch or TensorFlow. A Keras 3 model running on the torch backend is an
``nn.Module`` too: it is a Keras model here, as the Keras adapter serves it.
"""

from __future__ import annotations

import sys
from typing import Any, Literal

__all__ = ["Framework", "framework_of", "is_keras", "is_torch", "is_torchscript"]

Framework = Literal["keras", "torch", "torchscript"]


def _class_roots(model: Any) -> set[str]:
    return {cls.__module__.split(".")[0] for cls in type(model).__mro__}


def is_keras(model: Any) -> bool:
    """True for Keras 3 layers and models (on any Keras backend)."""
    return "keras" in _class_roots(model)


def is_torchscript(model: Any) -> bool:
    """True for TorchScript modules (``torch.jit.script``/``trace``/``load``)."""
    torch = sys.modules.get("torch")
    jit = getattr(torch, "jit", None)
    script_type = getattr(jit, "ScriptModule", None)
    return script_type is not None and isinstance(model, script_type)


def is_torch(model: Any) -> bool:
    """True for torch ``nn.Module``s that are not Keras models (TorchScript included)."""
    torch = sys.modules.get("torch")
    module_type = getattr(getattr(torch, "nn", None), "Module", None)
    return module_type is not None and isinstance(model, module_type) and not is_keras(model)


def framework_of(model: Any) -> Framework | None:
    """``"keras"``, ``"torchscript"``, ``"torch"`` or None for anything else."""
    if is_keras(model):
        return "keras"
    if is_torchscript(model):
        return "torchscript"
    return "torch" if is_torch(model) else None

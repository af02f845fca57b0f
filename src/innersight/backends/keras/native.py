"""Keras backend tensors at innersight's numpy boundary (the NativeTensorAdapter methods).

Keras is channels-last on every backend, so a tensor converts to numpy as it is: a
``tf.Tensor`` or ``tf.Variable`` on TensorFlow, a torch tensor on Keras-on-torch, a ``jax.Array``
on JAX (whatever the backend Keras runs on, a tensor of any of these three frameworks is
recognised, as long as that framework is already imported). The copy never shares memory with
the caller's tensor, and integer tensors (token ids) stay integer.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

__all__ = ["from_native", "kind_of", "to_native"]


def kind_of(x: Any) -> str | None:
    """ "tensorflow", "torch" or "jax" for a tensor of that framework, else None."""
    tf = sys.modules.get("tensorflow")
    if tf is not None and isinstance(x, (tf.Tensor, tf.Variable)):
        return "tensorflow"
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        return "torch"
    jax = sys.modules.get("jax")
    if jax is not None and isinstance(x, jax.Array):
        return "jax"
    return None


def from_native(x: Any) -> np.ndarray | None:
    """A numpy copy of a TensorFlow/torch/JAX tensor (channels-last as Keras has it); None for
    anything else. The caller's tensor is only read."""
    kind = kind_of(x)
    if kind is None:
        return None
    if kind == "torch":
        return np.array(x.detach().cpu().numpy(), copy=True)
    if kind == "tensorflow":
        return np.array(x.numpy(), copy=True)
    return np.array(x, copy=True)


def to_native(values: np.ndarray, like: Any) -> Any:
    """``values`` as a tensor of ``like``'s framework (and device, for torch and JAX)."""
    kind = kind_of(like)
    if kind == "tensorflow":
        tf = sys.modules["tensorflow"]
        with tf.device(_tf_device(like)):
            return tf.convert_to_tensor(values)
    if kind == "torch":
        torch = sys.modules["torch"]
        return torch.as_tensor(np.ascontiguousarray(values)).to(like.device)
    if kind == "jax":
        jax = sys.modules["jax"]
        return jax.device_put(values, next(iter(like.devices())))
    return values


def _tf_device(like: Any) -> str:
    device = str(getattr(like, "device", "") or "")
    return device or "/cpu:0"

"""Snapshots of a model's state, to prove that looking inside a model leaves it as it was.

:func:`snapshot` records everything an adapter could leave behind on the user's model as a flat
``{what: fingerprint}`` mapping; :func:`diff` turns two snapshots into readable differences (an
empty list means identical)::

    >>> before = snapshot(model)
    >>> innersight.explain("saliency", model, x)
    >>> assert diff(before, snapshot(model)) == []

What is recorded depends on the model's type; the framework is imported only when it is
already in ``sys.modules`` (a model of that framework cannot exist otherwise):

* torch ``nn.Module``: sha256 of every parameter, buffer and parameter ``.grad``, each module's
  ``training``, each parameter's ``requires_grad`` and tensor hooks, the keys of every hook
  dictionary of every module (``_forward_hooks``, ``_forward_pre_hooks``, ``_backward_hooks``,
  ``_state_dict_hooks``, ...) and of the global ones in ``torch.nn.modules.module``, the
  ``__dict__`` keys and plain (bool/number/str) attributes of each module, the
  ``named_modules`` list (names, types, identities), and torch's grad mode.
* Keras model (or layer): sha256 of every weight, each layer's ``trainable``, ``activation``
  and dtype policy, the layer list (names, types, identities), the ``__dict__`` keys of the
  model and its layers, plus TensorFlow's run-eagerly flag. Keys that Keras itself adds or
  drops on ordinary calls are ignored (:data:`KERAS_CHURN`).
* :class:`~innersight.testing.reference.ReferenceNetwork` or its adapter: sha256 of every
  weight, the layer list and the ``__dict__`` keys of each layer.
* Anything else: no error. The snapshot records what can be recorded generically (type,
  ``__dict__`` keys, plain attributes, sha256 of numpy arrays found in ``__dict__``) and says so
  in :attr:`Snapshot.notes`.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from innersight.core.frameworks import is_keras, is_torch

__all__ = ["KERAS_CHURN", "Snapshot", "diff", "snapshot"]

#: ``__dict__`` entries that Keras 3 itself adds, drops or changes on ordinary use; they are not
#: state an adapter owns. Found by snapshotting built Sequential and functional models (with
#: BatchNormalization and Dropout) before and after ``model(x)``, ``tf.function`` calls,
#: ``GradientTape`` gradients, ``keras.Model(model.inputs, layer.output)`` sub-models, cloning
#: and ``model.predict``: the first call flips ``_called``; ``predict`` caches
#: ``predict_function`` and sets ``stop_predicting`` and ``_jit_compile``. Nothing else moved.
KERAS_CHURN: frozenset[str] = frozenset(
    {"_called", "predict_function", "stop_predicting", "_jit_compile"}
)

_PLAIN = (bool, int, float, str, type(None))
_KEYS_SUFFIX = ": __dict__ keys"


@dataclass(frozen=True)
class Snapshot:
    """A model's state as ``{what: fingerprint}`` strings, plus notes on what was covered.

    Attributes:
        kind: ``"torch"``, ``"keras"``, ``"reference"`` or ``"generic"``.
        entries: one fingerprint per recorded item, e.g.
            ``{"module 'conv1': _forward_hooks": "[]", "param 'conv1.weight': sha256": "3f2a..."}``.
        notes: what the snapshot could not cover (for unknown model types).
    """

    kind: str
    entries: Mapping[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


def snapshot(model: Any) -> Snapshot:
    """Record the state of ``model`` (torch, Keras, reference, or anything else, generically)."""
    from innersight.testing.reference import ReferenceAdapter, ReferenceNetwork

    if isinstance(model, ReferenceAdapter):
        model = model.network
    if isinstance(model, ReferenceNetwork):
        return Snapshot("reference", _reference_entries(model))
    if is_keras(model):  # Keras-on-torch models are nn.Modules too: snapshot them as Keras
        return Snapshot("keras", _keras_entries(model))
    if is_torch(model):
        return Snapshot("torch", _torch_entries(model))
    entries: dict[str, str] = {"type": _type_name(model)}
    _object_entries(entries, "model", model, arrays=True)
    note = (
        f"{_type_name(model)} is not a torch, Keras or reference model: only its type, "
        "__dict__ keys, plain attributes and numpy arrays were recorded"
    )
    return Snapshot("generic", entries, (note,))


def diff(before: Snapshot, after: Snapshot) -> list[str]:
    """Readable differences between two snapshots of one model; ``[]`` when identical."""
    if before.kind != after.kind:
        return [f"snapshot kinds differ: {before.kind} vs {after.kind}"]
    out = []
    for key, old in before.entries.items():
        if key not in after.entries:
            out.append(f"{key}: gone (was {_short(old)})")
        elif after.entries[key] != old:
            out.append(_changed(key, old, after.entries[key]))
    out.extend(
        f"{key}: new ({_short(value)})"
        for key, value in after.entries.items()
        if key not in before.entries
    )
    return out


def _changed(key: str, old: str, new: str) -> str:
    if key.endswith(_KEYS_SUFFIX):
        old_keys, new_keys = set(old.split(", ")), set(new.split(", "))
        parts = []
        if new_keys - old_keys:
            parts.append(f"added {sorted(new_keys - old_keys)}")
        if old_keys - new_keys:
            parts.append(f"removed {sorted(old_keys - new_keys)}")
        return f"{key}: {'; '.join(parts)}"
    return f"{key}: {_short(old)} -> {_short(new)}"


# -- helpers -----------------------------------------------------------------------------------
def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _type_name(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _array_fingerprint(arr: np.ndarray) -> str:
    arr = np.ascontiguousarray(arr)
    return f"{arr.dtype}{list(arr.shape)} sha256:{_sha(arr.tobytes())}"


def _object_entries(
    entries: dict[str, str],
    prefix: str,
    obj: Any,
    *,
    arrays: bool = False,
    ignore: Iterable[str] = (),
) -> None:
    """``__dict__`` keys and plain attribute values (and optionally numpy arrays) of ``obj``."""
    attrs = getattr(obj, "__dict__", None)
    if not isinstance(attrs, dict):
        return
    skip = set(ignore)
    keys = sorted(k for k in attrs if k not in skip)
    entries[f"{prefix}{_KEYS_SUFFIX}"] = ", ".join(keys)
    for key in keys:
        value = attrs[key]
        if isinstance(value, _PLAIN):
            entries[f"{prefix}.{key}"] = repr(value)
        elif arrays and isinstance(value, np.ndarray):
            entries[f"{prefix}.{key}"] = _array_fingerprint(value)


# -- reference -----------------------------------------------------------------------------------
def _reference_entries(net: Any) -> dict[str, str]:
    entries: dict[str, str] = {
        "layers": ", ".join(f"{layer.name}:{layer.kind}@{id(layer):x}" for layer in net.layers)
    }
    _object_entries(entries, "network", net)
    for layer in net.layers:
        prefix = f"layer '{layer.name}'"
        _object_entries(entries, prefix, layer)
        for pname, arr in layer.params.items():
            entries[f"{prefix} {pname}"] = _array_fingerprint(arr)
            entries[f"{prefix} {pname}: writeable"] = repr(bool(arr.flags.writeable))
    return entries


# -- torch ---------------------------------------------------------------------------------------
def _tensor_fingerprint(t: Any) -> str:
    import torch

    data = t.detach().to("cpu").contiguous().reshape(-1)
    raw = data.view(torch.uint8).numpy().tobytes() if data.numel() else b""
    return f"{str(t.dtype).replace('torch.', '')}{list(t.shape)}@{t.device} sha256:{_sha(raw)}"


def _hook_keys(hooks: Any) -> str:
    if hooks is None:
        return "None"
    if isinstance(hooks, Mapping):
        return f"{len(hooks)} {list(hooks.keys())}"
    try:
        return f"{len(hooks)}"
    except TypeError:
        return repr(type(hooks).__name__)


def _torch_entries(model: Any) -> dict[str, str]:
    import torch
    from torch.nn.modules import module as module_mod

    entries: dict[str, str] = {
        "torch grad enabled": repr(torch.is_grad_enabled()),
        "torch inference mode": repr(torch.is_inference_mode_enabled()),
    }
    for gname in sorted(vars(module_mod)):
        value = getattr(module_mod, gname)
        if gname.startswith("_global_") and isinstance(value, Mapping):
            entries[f"torch.nn.modules.module.{gname}"] = _hook_keys(value)
    modules = list(model.named_modules(remove_duplicate=False))
    entries["named_modules"] = ", ".join(
        f"{n or '<root>'}:{type(m).__name__}@{id(m):x}" for n, m in modules
    )
    for name, mod in modules:
        prefix = f"module '{name or '<root>'}'"
        _object_entries(entries, prefix, mod)  # covers `training` and other plain flags
        for key in ("_parameters", "_buffers", "_modules", "_non_persistent_buffers_set"):
            entries[f"{prefix}: {key}"] = ", ".join(sorted(getattr(mod, key, ()) or ()))
        for key, value in vars(mod).items():
            if "hook" in key and isinstance(value, Mapping):
                entries[f"{prefix}: {key}"] = _hook_keys(value)
        for pname, param in mod.named_parameters(recurse=False):
            _torch_param(entries, f"param '{_join(name, pname)}'", param)
        for bname, buf in mod.named_buffers(recurse=False):
            entries[f"buffer '{_join(name, bname)}'"] = (
                "None" if buf is None else _tensor_fingerprint(buf)
            )
    return entries


def _torch_param(entries: dict[str, str], prefix: str, param: Any) -> None:
    entries[prefix] = f"{_tensor_fingerprint(param)} id:{id(param):x}"
    entries[f"{prefix}: requires_grad"] = repr(param.requires_grad)
    entries[f"{prefix}: .grad"] = "None" if param.grad is None else _tensor_fingerprint(param.grad)
    for attr in ("_backward_hooks", "_post_accumulate_grad_hooks"):
        entries[f"{prefix}: {attr}"] = _hook_keys(getattr(param, attr, None))


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


# -- keras ---------------------------------------------------------------------------------------
def _keras_layers(model: Any) -> list[Any]:
    out, seen = [], set()

    def visit(layer: Any) -> None:
        if id(layer) in seen:
            return
        seen.add(id(layer))
        out.append(layer)
        for sub in getattr(layer, "layers", None) or ():
            visit(sub)

    visit(model)
    return out


def _keras_entries(model: Any) -> dict[str, str]:
    entries: dict[str, str] = {}
    tf: Any = sys.modules.get("tensorflow")
    if tf is not None:
        entries["tf.config.functions_run_eagerly"] = repr(tf.config.functions_run_eagerly())
    layers = _keras_layers(model)
    entries["layers"] = ", ".join(f"{lay.name}:{type(lay).__name__}@{id(lay):x}" for lay in layers)
    for layer in layers:
        prefix = f"layer '{layer.name}'"
        entries[f"{prefix}: trainable"] = repr(layer.trainable)
        if hasattr(layer, "activation"):
            act = layer.activation
            entries[f"{prefix}: activation"] = (
                f"{getattr(act, '__name__', type(act).__name__)}@{id(act):x}"
            )
        policy = getattr(layer, "dtype_policy", None)
        entries[f"{prefix}: dtype_policy"] = repr(getattr(policy, "name", policy))
        _object_entries(entries, prefix, layer, ignore=KERAS_CHURN)
    for i, var in enumerate(model.weights):
        path = getattr(var, "path", None) or f"{getattr(var, 'name', 'weight')}#{i}"
        entries[f"weight '{path}'"] = (
            f"{_array_fingerprint(np.asarray(var.numpy()))} id:{id(var):x}"
        )
        entries[f"weight '{path}': trainable"] = repr(getattr(var, "trainable", None))
    return entries

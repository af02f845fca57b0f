"""Several inputs and extra forward arguments: how a derived :class:`~.adapter.TorchAdapter`
feeds the model (the contract is :mod:`innersight.core.inputspec`).

* Packed (``spec.packed``): the adapter's batch is ``(N, width)`` float32. It becomes ONE
  float tensor (the tensor gradients are taken by), and :meth:`Feed.arguments` splits it inside
  torch: each input is a ``narrow`` + ``reshape`` of it, put in the model's layout by rank
  exactly as a single input is (:func:`.layout.to_model_layout`: rank 4 NCHW per
  ``input_layout``, rank 3 (N, C, L) for ``"NCL"``). So the gradient w.r.t. the packed tensor
  comes out packed, and layer taps, layer gradients and ReLU overrides work unchanged.
* Integer inputs (token ids) are cut from the packed row, rounded and cast to their dtype,
  detached: no gradient flows into them (their columns of a packed gradient are zero).
* Unpacked (one input): the batch keeps its own shape and dtype; integer batches are
  validated here (:func:`check_ids`), since core's input check is for float data.
* Extra arguments follow the inputs: numpy arrays become tensors on the adapter's device
  (floating arrays in the model's float dtype, others keep theirs), torch tensors are detached
  and moved to that device, anything else is passed as it is. A batched one (batch axis of
  length 1) is repeated to each call's batch size. Tensors made from numpy are copied for every
  call, so a model writing into an argument in place cannot change the next call's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from innersight.core.errors import CapabilityError, InputError
from innersight.core.inputspec import InputSpec

from .layout import to_model_layout, to_tensor

if TYPE_CHECKING:
    from .options import TorchOptions
    from .probe import Probe

__all__ = [
    "Feed",
    "PassState",
    "check_ids",
    "first_embedding",
    "ids_out_of_range",
    "no_token_gradient",
]


@dataclass
class PassState:
    """What the passes of one input structure learn, shared by the adapters derived for it."""

    probe: Probe | None = None
    contiguous: bool = False  # True once the model failed on the channels_last view


def _is_integer(dtype: str) -> bool:
    return np.dtype(dtype).kind in "iu"


def _check_spec(spec: Any) -> InputSpec:
    if not isinstance(spec, InputSpec):
        raise InputError(
            f"with_inputs takes an innersight.core.inputspec.InputSpec, got {type(spec).__name__}"
        )
    for name in spec.dtypes:
        kind: str
        try:
            kind = np.dtype(name).kind
        except TypeError:
            kind = "?"
        if kind not in "iuf":
            raise InputError(
                f"InputSpec dtype {name!r} is not supported by the torch backend; use a float "
                "dtype ('float32') or an integer one for token ids ('int64')"
            )
    return spec


class Feed:
    """The model's arguments for a batch described by an :class:`InputSpec`."""

    def __init__(self, spec: InputSpec, options: TorchOptions) -> None:
        self.spec = _check_spec(spec)
        self.options = options
        self.integer = tuple(_is_integer(d) for d in spec.dtypes)
        self.extras = [_extra_tensor(a, i, spec, options) for i, a in enumerate(spec.extra_args)]

    @property
    def all_integer(self) -> bool:
        return all(self.integer)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """What one sample of the adapter's batch looks like (without the batch axis)."""
        return (self.spec.width,) if self.spec.packed else self.spec.shapes[0]

    @property
    def probe_shape(self) -> tuple[int, ...]:
        """The model input the shape probe describes: the first image input (whose layout
        :mod:`.detect` counts), else the first input."""
        shapes = zip(self.spec.shapes, self.integer, strict=True)
        images = [s for s, integer in shapes if len(s) == 3 and not integer]
        return images[0] if images else self.spec.shapes[0]

    def has_nchw_view(self) -> bool:
        """Whether some input is an image fed as a channels_last view (see :mod:`.layout`)."""
        return self.options.input_layout == "NCHW" and any(
            len(s) == 3 and not i for s, i in zip(self.spec.shapes, self.integer, strict=True)
        )

    def tensor(self, x_np: np.ndarray, contiguous: bool) -> torch.Tensor:
        """The adapter's batch as one tensor: packed rows in float32 (float64 for a float64
        model), an integer batch in its dtype, a float batch as a single input is fed."""
        o = self.options
        if not self.spec.packed and not self.integer[0]:
            return to_tensor(x_np, o.input_layout, o.device, o.dtype, contiguous=contiguous)
        t = torch.from_numpy(np.ascontiguousarray(x_np))
        if self.integer[0] and not self.spec.packed:
            return t.to(device=o.device)
        return t.to(device=o.device, dtype=torch.promote_types(torch.float32, o.dtype))

    def arguments(self, t: torch.Tensor, contiguous: bool) -> list[Any]:
        """The positional arguments of ``model(...)`` for the batch tensor ``t``."""
        parts = self._split(t, contiguous) if self.spec.packed else [t]
        return parts + self._extras(int(t.shape[0]))

    def _split(self, t: torch.Tensor, contiguous: bool) -> list[torch.Tensor]:
        n, o, spec = int(t.shape[0]), self.options, self.spec
        parts = []
        for off, size, shape, dtype in zip(
            spec.offsets, spec.sizes, spec.shapes, spec.dtypes, strict=True
        ):
            part = t.narrow(1, off, size).reshape(n, *shape)
            if _is_integer(dtype):
                parts.append(part.detach().round().to(_torch_dtype(dtype)))
            else:
                part = to_model_layout(part, o.input_layout, contiguous=contiguous)
                parts.append(part.to(o.dtype))
        return parts

    def _extras(self, n: int) -> list[Any]:
        out = []
        for i, (arg, owned) in enumerate(self.extras):
            if self.spec.is_batched(i):
                arg = arg.expand(n, *arg.shape[1:]).clone()
            elif owned:
                arg = arg.clone()
            out.append(arg)
        return out


def _torch_dtype(name: str) -> torch.dtype:
    return torch.from_numpy(np.zeros(0, dtype=np.dtype(name))).dtype


def _extra_tensor(arg: Any, i: int, spec: InputSpec, options: TorchOptions) -> tuple[Any, bool]:
    """(the argument as the model gets it, whether it is a tensor innersight made)."""
    owned = isinstance(arg, np.ndarray)
    if owned:
        dtype = options.dtype if arg.dtype.kind == "f" else None
        arg = torch.as_tensor(np.array(arg)).to(device=options.device, dtype=dtype)
    elif isinstance(arg, torch.Tensor):
        arg = arg.detach().to(options.device)
    if spec.is_batched(i) and (not isinstance(arg, torch.Tensor) or arg.ndim == 0):
        raise InputError(
            f"extra argument {i} is marked batched but is a {type(spec.extra_args[i]).__name__} "
            "without a batch axis; pass an array or tensor of shape (1, ...), or mark it "
            "not batched to pass it as it is"
        )
    if spec.is_batched(i) and int(arg.shape[0]) != 1:
        raise InputError(
            f"extra argument {i} is marked batched, so its batch axis must have length 1 (the "
            f"sample explained), got shape {tuple(arg.shape)}; pass one sample's value with "
            "arg[i:i + 1], or mark it not batched to pass it as it is"
        )
    return arg, owned


def check_ids(x: Any, spec: InputSpec) -> np.ndarray:
    """A validated copy of an integer batch ``(N, *spec.shapes[0])`` of ``spec.dtypes[0]``.

    Integer-valued float arrays (a technique's perturbed copy) are accepted and cast.
    """
    shape, dtype = spec.shapes[0], np.dtype(spec.dtypes[0])
    arr = x if isinstance(x, np.ndarray) else np.asarray(x)
    want = f"(N, {', '.join(map(str, shape))})" if shape else "(N,)"
    if arr.dtype.kind not in "iuf":
        raise InputError(
            f"token ids must be an integer array {want}, got dtype {arr.dtype}; pass "
            f"np.asarray(ids, dtype={dtype.name!r})"
        )
    if arr.ndim < 2 or tuple(arr.shape[1:]) != tuple(shape) or arr.shape[0] == 0:
        raise InputError(
            f"token ids must be a non-empty batch {want}, got shape {arr.shape}; add the batch "
            "axis with ids[None] for one sequence"
        )
    if arr.dtype.kind == "f" and not (np.isfinite(arr).all() and (arr == np.round(arr)).all()):
        raise InputError(
            "token ids must be whole numbers, got fractional or non-finite values; pass the "
            f"integer ids (dtype {dtype.name})"
        )
    if (arr < 0).any():
        raise InputError(
            f"token ids must be non-negative, got {arr.min()}; pass indices into the "
            "model's vocabulary"
        )
    return np.array(arr, dtype=dtype)


def first_embedding(model: nn.Module) -> str | None:
    """The name of the model's first ``nn.Embedding`` (or ``EmbeddingBag``), or None."""
    for name, m in model.named_modules():
        if name and isinstance(m, (nn.Embedding, nn.EmbeddingBag)):
            return name
    return None


def ids_out_of_range(model: nn.Module, x: np.ndarray) -> InputError:
    """The error for token ids an embedding of the model has no row for (torch raised an
    IndexError while running it): the largest id and every embedding's size."""
    sizes = [
        f"{name!r}: {m.num_embeddings} ids"
        for name, m in model.named_modules()
        if isinstance(m, (nn.Embedding, nn.EmbeddingBag))
    ]
    ids = x if np.issubdtype(x.dtype, np.integer) else np.round(x)
    return InputError(
        f"token ids reach {int(ids.max())}, beyond the rows of the model's embedding "
        f"({', '.join(sizes) or 'no nn.Embedding found'}): map the ids into the vocabulary "
        "(e.g. np.clip(ids, 0, vocab - 1) for unknown ones)"
    )


def no_token_gradient(model: nn.Module, model_name: str) -> CapabilityError:
    """The error for input gradients of a model whose inputs are all token ids."""
    emb = first_embedding(model)
    layer = repr(emb) if emb is not None else "'<the embedding layer>'"
    return CapabilityError(
        f"torch model {model_name} takes integer inputs (token ids), and there is no gradient "
        "with respect to token ids, so input-gradient techniques cannot explain them; explain "
        f"the output of its embedding layer{'' if emb is None else ' ' + repr(emb)} instead: "
        f"innersight.explain('layer_gradient_x_activation', model, ids, layer={layer}) or "
        f"'layer_integrated_gradients' with layer={layer}"
    )

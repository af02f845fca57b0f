"""The reference adapter's several inputs, extra forward arguments and stand-in tensors.

:meth:`ReferenceAdapter.with_inputs <innersight.testing.ReferenceAdapter.with_inputs>` returns a
:class:`DerivedReferenceAdapter`: the same network fed the batch an
:class:`~innersight.core.inputspec.InputSpec` describes. :class:`ReferenceTensor` is a stand-in
framework tensor (channels first, like torch's, with ``requires_grad`` and ``grad``) so that
``innersight.explain``'s tensor path (``from_native``/``to_native``, ``return_type="native"``)
is tested without a framework::

    >>> model = reference_model("linear", input_shapes=((3, 3, 2), (4,)))
    >>> ex = innersight.explain("saliency", model, (a, b), reduce_channels=None)
    >>> ex.values  # (|W_a|, |W_b|) for the target class, one map per input
"""

from __future__ import annotations

from typing import Any

import numpy as np

from innersight.core.adapter import check_input_array
from innersight.core.errors import InputError
from innersight.core.inputspec import InputSpec
from innersight.testing.reference import ReferenceAdapter, ReferenceNetwork

__all__ = [
    "DerivedReferenceAdapter",
    "ReferenceTensor",
    "from_reference_tensor",
    "to_reference_tensor",
]


class DerivedReferenceAdapter(ReferenceAdapter):
    """A :class:`ReferenceAdapter` that takes the batch ``spec`` describes (see
    :meth:`ReferenceAdapter.with_inputs`)."""

    def __init__(self, network: ReferenceNetwork, spec: InputSpec) -> None:
        super().__init__(network)
        expected = network.parts or (network.input_shape,)
        if tuple(spec.shapes) != tuple(expected):
            raise InputError(
                f"reference model {network.name!r} takes inputs of shapes {list(expected)}, "
                f"got an InputSpec of {list(spec.shapes)}"
            )
        if not spec.packed and network.parts is not None and len(network.parts) > 1:
            raise InputError("a reference network of several inputs takes packed rows only")
        self.spec = spec

    @property
    def input_shape(self) -> tuple[int | None, ...]:
        return (self.spec.width,) if self.spec.packed else self.spec.shapes[0]

    def check_input(self, x: Any, *, copy: bool = True) -> np.ndarray:
        arr = np.asarray(x)
        if arr.dtype.kind in "iu" and not self.spec.packed:
            if arr.shape[1:] != self.spec.shapes[0] or not len(arr):
                raise InputError(
                    f"token ids have shape {arr.shape}, expected (N, {self.spec.shapes[0]})"
                )
            return np.array(arr, dtype=np.float32)
        return check_input_array(arr, expected=self.input_shape, copy=copy)

    def network_input(self, x: Any) -> tuple[np.ndarray, np.ndarray | None]:
        x64 = self.check_input(x).astype(np.float64)
        x64 = x64.reshape((len(x64), *self.network.input_shape))
        scale = self._scale(len(x64), x64.ndim)
        return (x64 if scale is None else x64 * scale), scale

    def input_grads(
        self, grads: np.ndarray, scale: np.ndarray | None, shape: tuple[int, ...]
    ) -> np.ndarray:
        grads = np.array((grads if scale is None else grads * scale).reshape(shape))
        if self.spec.packed:  # no gradient flows into integer inputs (token ids)
            for offset, size, dtype in zip(
                self.spec.offsets, self.spec.sizes, self.spec.dtypes, strict=True
            ):
                if np.dtype(dtype).kind in "iu":
                    grads[:, offset : offset + size] = 0.0
        return grads

    def _scale(self, n: int, ndim: int) -> np.ndarray | None:
        """The product of the extra arguments, batched ones repeated to ``n`` samples."""
        scale = None
        for i, arg in enumerate(self.spec.extra_args):
            arr = np.asarray(arg, dtype=np.float64)
            if self.spec.is_batched(i):
                if arr.ndim == 0 or arr.shape[0] != 1:
                    raise InputError(f"batched extra argument {i} has shape {arr.shape}")
                arr = np.repeat(arr, n, axis=0)
                arr = arr.reshape(arr.shape + (1,) * (ndim - arr.ndim))
            scale = arr if scale is None else scale * arr
        return scale

    def __repr__(self) -> str:
        return f"<DerivedReferenceAdapter {self.network.name!r}: {self.spec.shapes}>"


class ReferenceTensor:
    """A stand-in framework tensor: data stored channels first for images (as torch's NCHW),
    with ``requires_grad``, ``grad`` and ``device`` that innersight must leave alone."""

    def __init__(self, data: Any, *, requires_grad: bool = False, device: str = "cpu") -> None:
        self.data = np.array(data)
        self.requires_grad = requires_grad
        self.grad: np.ndarray | None = None
        self.device = device

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    def __getitem__(self, index: Any) -> ReferenceTensor:
        return ReferenceTensor(self.data[index], requires_grad=self.requires_grad)

    def __repr__(self) -> str:
        return f"ReferenceTensor(shape={self.shape}, device={self.device!r})"


def from_reference_tensor(x: Any) -> np.ndarray | None:
    """A copy of a ReferenceTensor's data, channels last; None for anything else."""
    if not isinstance(x, ReferenceTensor):
        return None
    return np.array(np.moveaxis(x.data, 1, -1) if x.data.ndim == 4 else x.data)


def to_reference_tensor(values: np.ndarray, like: Any) -> ReferenceTensor:
    """``values`` as a ReferenceTensor on ``like``'s device, channels first for images with
    channels (N, H, W, C) as ``like`` has them."""
    arr = np.asarray(values)
    if arr.ndim == 4 and isinstance(like, ReferenceTensor) and like.data.ndim == 4:
        arr = np.moveaxis(arr, -1, 1)
    return ReferenceTensor(arr, device=getattr(like, "device", "cpu"))

"""The torch engine of the Keras adapter: Keras models running on ``KERAS_BACKEND=torch``.

A Keras-on-torch model computes eagerly with torch tensors, so each request is a functional
sub-model ``keras.Model(model.input, [...])`` (cached per request, as on TensorFlow) called on a
torch tensor: under ``torch.no_grad()`` for a forward pass, and with autograd for gradients
(``torch.autograd.grad`` w.r.t. the input, or w.r.t. the tapped layer's output tensor, which is
the very tensor the rest of the network consumes). Only those inputs get gradients: the
variables' ``.grad`` stays untouched, and so do ``requires_grad`` and the grad mode.

Guided/deconv ReLUs reuse the torch backend's mechanism (:mod:`innersight.backends.torch.relu`):
a ``TorchFunctionMode`` answers the ``F.relu``/``F.relu6`` calls Keras' torch ops make with
custom autograd Functions, so the user's layers are never touched. Keras' ``hard_sigmoid`` and
``hard_silu`` run as ``F.hardsigmoid``/``F.hardswish`` here and keep their plain gradient, as on
TensorFlow. The report names the other activations by their Keras name (:mod:`.activations`),
as on every Keras backend.

A softmax/sigmoid hidden inside the last layer (which ``logits="auto"`` cannot see from the
graph) is looked for once per gradient function, on its first call: a second function mode notes
which tensors ``softmax``/``sigmoid`` calls returned, and the target is checked against them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from innersight.backends.keras.activations import plain_activations
from innersight.backends.keras.packing import Feed, as_feed, graph_inputs, model_inputs
from innersight.backends.keras.relu_forms import check_model_relus, refuse
from innersight.backends.keras.requests import GradRequest, dense_preactivation, request_values
from innersight.backends.torch.relu import relu_override

__all__ = ["make_forward", "make_grad", "objective_values", "to_numpy"]

# torch activation kinds (as the torch backend's report names them) that are ReLUs with a slope:
# guided/deconv have no agreed meaning for them on any Keras backend.
_LEAKY = frozenset({"LeakyReLU", "PReLU", "RReLU"})


def to_numpy(t: Any) -> np.ndarray:
    """A result tensor of this engine as a float32 numpy array."""
    return t.detach().to("cpu", torch.float32).numpy()


def _input(x: np.ndarray, dtype: str = "float32") -> Any:
    # Keras' own conversion: the tensor lands on the device Keras put the variables on.
    return keras.ops.convert_to_tensor(x, dtype=dtype)


def _inputs(feed: Feed, xt: Any, extras: Sequence[Any]) -> Any:
    """The sub-model's inputs from the batch tensor and the extras (numpy, converted here)."""
    tensors = [_input(e, dtype) for e, (_, dtype) in zip(extras, feed.extras, strict=True)]
    return model_inputs(feed, xt, tensors)


def _float32(t: Any) -> Any:
    return t if t.dtype == torch.float32 else t.to(torch.float32)


class Forward:
    """``x -> [tensor values...]`` through ONE eager pass of a sub-model, without autograd."""

    relu_report = None

    def __init__(self, inp: Any, tensors: Sequence[Any], dense: Mapping[int, Any]) -> None:
        self.feed = as_feed(inp)
        self.sub = keras.Model(graph_inputs(self.feed), list(tensors))
        self.heads = dict(dense)

    def __call__(self, x: np.ndarray, *extras: Any) -> list[Any]:
        with torch.no_grad():
            inputs = _inputs(self.feed, _input(x, self.feed.x_dtype), extras)
            outs = keras.tree.flatten(self.sub(inputs, training=False))
            return [
                _float32(dense_preactivation(self.heads[i], t) if i in self.heads else t)
                for i, t in enumerate(outs)
            ]


def make_forward(inp: Any, tensors: Sequence[Any], dense: Mapping[int, Any] | None = None) -> Any:
    """A cached forward for ``tensors`` (``dense``: positions that get a Dense pre-activation)."""
    return Forward(inp, tensors, dense or {})


def objective_values(kind: str, t: Any, idx: Any, crop: int) -> Any:
    """The ``(N,)`` objective values, exactly as ``objectives.evaluate`` specifies them."""
    t = _float32(t)
    idx = idx.view(-1, 1)
    if kind == "channel":
        if t.dim() > 2:
            h, w = t.shape[1], t.shape[2]
            t = t[:, crop : h - crop, crop : w - crop, :].mean(dim=(1, 2))
        return t.gather(1, idx).view(-1)
    return t.reshape(t.shape[0], -1).gather(1, idx).view(-1)


_PROBABILITY_CALLS = {
    F.softmax: "Softmax",
    torch.softmax: "Softmax",
    torch.Tensor.softmax: "Softmax",
    F.sigmoid: "Sigmoid",
    torch.sigmoid: "Sigmoid",
    torch.Tensor.sigmoid: "Sigmoid",
}


class _ProbabilityWatch(TorchFunctionMode):
    """Notes the tensors that softmax/sigmoid calls return during one pass."""

    def __init__(self) -> None:
        super().__init__()
        self.results: list[tuple[Any, str]] = []

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        try:
            kind = _PROBABILITY_CALLS.get(func)
        except TypeError:  # an unhashable callable is not one of ours
            kind = None
        if kind is not None:
            self.results.append((out, kind))
        return out

    def kind_of(self, t: Any) -> str | None:
        return next((kind for out, kind in self.results if out is t), None)


class Gradient:
    """``(x, idx, crop) -> (values, [activations,] grads)`` for one :class:`GradRequest`."""

    def __init__(self, inp: Any, req: GradRequest, model_name: str) -> None:
        outputs = [req.target] if req.wrt is None else [req.wrt, req.target]
        self.feed = as_feed(inp)
        self.sub = keras.Model(graph_inputs(self.feed), outputs)
        check_model_relus(self.sub, req.relu)
        self.req = req
        self.model_name = model_name
        self.plain = plain_activations(self.sub) if req.relu != "plain" else None
        self.relu_report: dict[str, Any] | None = None
        self._watch = req.on_probabilities is not None  # until the first pass has looked

    def __call__(self, x: np.ndarray, idx: np.ndarray, crop: Any, *extras: Any) -> tuple[Any, ...]:
        req = self.req
        xt = _input(x, self.feed.x_dtype)
        if xt.is_floating_point():  # also when the wrt layer has no weights before it
            xt.requires_grad_(True)
        watch = _ProbabilityWatch() if self._watch else None
        with torch.enable_grad():
            outs, report = self._forward(_inputs(self.feed, xt, extras), watch)
            target = outs[-1]
            if req.dense is not None:
                target = dense_preactivation(req.dense, target)
            if watch is not None:
                self._report_probabilities(watch, target)
            index = torch.as_tensor(np.asarray(idx, dtype=np.int64), device=target.device)
            values = request_values(
                req, _float32(target), lambda: objective_values(req.kind, target, index, int(crop))
            )
            source = xt if req.wrt is None else outs[0]
            (grads,) = torch.autograd.grad(values.sum(), [source], allow_unused=True)
        grads = torch.zeros_like(source) if grads is None else grads
        if report is not None:
            self.relu_report = {"overridden": report["overridden"], "not_overridden": self.plain}
        if req.wrt is None:
            return values.detach(), grads
        return values.detach(), outs[0].detach(), grads

    def _forward(self, xt: Any, watch: _ProbabilityWatch | None) -> tuple[list[Any], Any]:
        with relu_override(self.req.relu, f"Keras {self.model_name!r}") as report:
            if watch is None:
                outs = keras.tree.flatten(self.sub(xt, training=False))
            else:
                with watch:
                    outs = keras.tree.flatten(self.sub(xt, training=False))
        leaky = set(report["not_overridden"]) & _LEAKY if report is not None else set()
        if leaky:  # refused as on TensorFlow and JAX, where the op is seen in the trace
            refuse(self.req.relu, f"a {sorted(leaky)[0]} call inside a layer is a leaky ReLU")
        return outs, report

    def _report_probabilities(self, watch: _ProbabilityWatch, target: Any) -> None:
        self._watch = False
        kind = watch.kind_of(target)
        if kind is not None and self.req.on_probabilities is not None:
            self.req.on_probabilities(kind)


def make_grad(inp: Any, req: GradRequest, model_name: str = "") -> Gradient:
    """The gradient function for one request (ReLU forms checked now, before it ever runs)."""
    return Gradient(inp, req, model_name)

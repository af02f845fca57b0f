"""Objectives evaluated on torch tensors, with exactly the numpy semantics of
:func:`innersight.core.objectives.evaluate` (which is the specification the tests check against).

Rank-4 tensors arrive as NCHW (a layer that returns NHWC tensors is handed over as an NCHW view,
see :func:`.layout.as_nchw`); indices are given channels-last, so they are converted here: a
Channel index picks axis 1 of an NCHW tensor, a flat Neuron index is unravelled
over the channels-last sample shape (H, W, C) and applied as (c, h, w).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from innersight.core.errors import InputError, ObjectiveError
from innersight.core.objectives import (
    Channel,
    Custom,
    Logit,
    Neuron,
    Objective,
    channel_indices,
    check_custom_values,
    neuron_flat_index,
    per_sample,
)

from .layout import channels_last_shape, to_torch_index

__all__ = [
    "check_objective",
    "custom_values",
    "layer_objective_values",
    "logit_values",
    "score_values",
    "select_output",
]


def check_objective(objective: Any) -> Objective:
    if not isinstance(objective, (Logit, Channel, Neuron, Custom)):
        raise ObjectiveError(
            f"objective must be innersight.objectives.Logit, Channel, Neuron or Custom, got "
            f"{type(objective).__name__} ({objective!r})"
        )
    return objective


def custom_values(objective: Custom, out: Any, where: str = "the model") -> torch.Tensor:
    """``objective.fn`` on the channels-last scores (a view of ``out``), checked to be (N,)."""
    out = _tensor(out, where)
    scores = out.permute(0, 2, 3, 1) if out.ndim == 4 else out
    try:
        values = objective.fn(scores)
    except Exception as err:
        raise ObjectiveError(
            f"the score function {objective.name!r} failed on the torch scores of {where} "
            f"(shape {tuple(scores.shape)}): {type(err).__name__}: {err}"
        ) from err
    if not isinstance(values, torch.Tensor):
        raise ObjectiveError(
            f"the score function {objective.name!r} returned {type(values).__name__}; on a torch "
            "model it must return a torch tensor computed from its argument (no .numpy(), no "
            "float()), so that it can be differentiated"
        )
    return check_custom_values(objective, values, scores.shape[0])


def score_values(objective: Logit | Custom, out: Any, where: str = "the model") -> torch.Tensor:
    """The (N,) values of an output objective (Logit or Custom) on the scores ``out``."""
    if isinstance(objective, Custom):
        return custom_values(objective, out, where)
    return logit_values(objective, out, where)


def _tensor(value: Any, where: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise ObjectiveError(
            f"{where} returned {type(value).__name__}, not a tensor; innersight reads tensors "
            "only: pick a layer (or model) that returns one tensor"
        )
    return value


def _rows(n: int, device: torch.device) -> torch.Tensor:
    return torch.arange(n, device=device)


def logit_values(objective: Logit, out: Any, where: str = "the model") -> torch.Tensor:
    """``outputs[i, index[i]]`` on the channels-last flattened outputs, as ``(N,)``."""
    out = _tensor(out, where)
    n = out.shape[0]
    idx = per_sample(objective.index, n, what="target")
    flat = (out.permute(0, 2, 3, 1) if out.ndim == 4 else out).reshape(n, -1)
    size = flat.shape[1]
    bad = idx[(idx < 0) | (idx >= size)]
    if bad.size:
        raise ObjectiveError(
            f"target {int(bad[0])} is out of range: valid values are 0..{size - 1} "
            f"({where} has {size} outputs)"
        )
    return flat[_rows(n, out.device), torch.as_tensor(idx, device=out.device)]


def layer_objective_values(objective: Channel | Neuron, act: Any) -> torch.Tensor:
    """The (N,) values of a Channel/Neuron objective on the layer output ``act``."""
    act = _tensor(act, f"layer {objective.layer!r}")
    if isinstance(objective, Channel):
        return _channel_values(objective, act)
    return _neuron_values(objective, act)


def _channel_values(objective: Channel, act: torch.Tensor) -> torch.Tensor:
    shape = channels_last_shape(act.shape)
    idx = channel_indices(objective, shape)
    n, dev = shape[0], act.device
    picked = act[_rows(n, dev), torch.as_tensor(idx, device=dev)]  # (N,) or (N, H, W)
    if act.ndim == 2:
        return picked
    c = int(objective.crop)
    return picked[:, c : shape[1] - c, c : shape[2] - c].mean(dim=(1, 2))


def _neuron_values(objective: Neuron, act: torch.Tensor) -> torch.Tensor:
    shape = channels_last_shape(act.shape)
    n, dev = shape[0], act.device
    if len(shape) < 2:
        raise ObjectiveError(
            f"Neuron needs a layer with a batch axis; {objective.layer!r} gives {shape}"
        )
    flat = neuron_flat_index(objective, shape[1:], n)
    parts = to_torch_index(flat, shape[1:])
    index = (_rows(n, dev), *(torch.as_tensor(np.asarray(p), device=dev) for p in parts))
    return act[index]


def select_output(out: Any, output: int | str | None, model: str) -> torch.Tensor:
    """The tensor innersight explains among what the model returned (the ``output`` option).

    ``out`` may be a tensor, a tuple/list (``output`` an index), a mapping such as a dict or a
    HuggingFace ``ModelOutput`` (a key, or an index into its values) or another object (an
    attribute name). InputError listing the choices when it cannot be picked.
    """
    if isinstance(out, torch.Tensor):
        if output is None:
            return out
        raise InputError(
            f"torch model {model} returns one tensor, so output={output!r} has nothing to "
            "choose from; wrap the model without the output option"
        )
    choices = _outputs(out)
    if output is None:
        raise InputError(_several_message(out, choices, model))
    picked = _pick(out, choices, output)
    if picked is _MISSING:
        raise InputError(
            f"output={output!r} is not one of the outputs of torch model {model}: it returns "
            f"{_listing(out, choices)}; choose one of {', '.join(map(repr, choices))}"
        )
    if not isinstance(picked, torch.Tensor):
        raise InputError(
            f"output={output!r} of torch model {model} is a {type(picked).__name__}, not a "
            f"tensor; it returns {_listing(out, choices)}: choose a tensor output"
        )
    return picked


_MISSING = object()


def _outputs(out: Any) -> list[int | str]:
    """The names :func:`select_output` accepts for ``out``'s items."""
    if isinstance(out, (tuple, list)):
        return list(range(len(out)))
    if isinstance(out, Mapping):
        return [k for k in out if isinstance(k, (str, int))]
    names = getattr(out, "__dict__", {})
    return [k for k, v in names.items() if not k.startswith("_") and isinstance(v, torch.Tensor)]


def _pick(out: Any, choices: list[int | str], output: int | str) -> Any:
    if isinstance(out, (tuple, list)):
        ok = isinstance(output, int) and -len(out) <= output < len(out)
        return out[output] if ok else _MISSING  # type: ignore[index]
    if isinstance(out, Mapping):
        if output in out:
            return out[output]
        if isinstance(output, int) and -len(choices) <= output < len(choices):
            return out[choices[output]]
        return _MISSING
    return getattr(out, output, _MISSING) if isinstance(output, str) else _MISSING


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"Tensor {tuple(int(s) for s in value.shape)}"
    return type(value).__name__


def _listing(out: Any, choices: list[int | str]) -> str:
    items = ", ".join(f"{c!r}: {_describe(_pick(out, choices, c))}" for c in choices)
    return f"a {type(out).__name__} of {len(choices)} output(s) ({items})"


def _several_message(out: Any, choices: list[int | str], model: str) -> str:
    if not choices:
        return (
            f"torch model {model} returned {type(out).__name__}, not a tensor; innersight "
            "explains one tensor of outputs: wrap the model in a module whose forward() "
            "returns it"
        )
    tensors = [c for c in choices if isinstance(_pick(out, choices, c), torch.Tensor)]
    example = tensors[0] if tensors else choices[0]
    return (
        f"torch model {model} returned {type(out).__name__}, not a tensor: "
        f"{_listing(out, choices)}; innersight explains one output: choose it with "
        f"innersight.wrap(model, output=<one of {', '.join(map(repr, choices))}>), e.g. "
        f"innersight.wrap(model, output={example!r})"
    )

"""Objectives evaluated on torch tensors, with exactly the numpy semantics of
:func:`innersight.core.objectives.evaluate` (which is the specification the tests check against).

Rank-4 tensors arrive as NCHW (a layer that returns NHWC tensors is handed over as an NCHW view,
see :func:`.layout.as_nchw`); indices are given channels-last, so they are converted here: a
Channel index picks axis 1 of an NCHW tensor, a flat Neuron index is unravelled
over the channels-last sample shape (H, W, C) and applied as (c, h, w).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from innersight.core.errors import ObjectiveError
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

"""Token models (ViT, Swin) for Grad-CAM: (N, T, D) tokens laid out as an (N, h, w, D) grid.

``reshape`` (Grad-CAM's parameter, like pytorch-grad-cam's ``reshape_transform``):

* ``None`` (auto): an (N, h, w, C) map is used as it is; tokens (N, T, D) become a grid when T
  is a square (s*s patch tokens) or a square plus one (a class token first, dropped);
* ``True``: the layer must give tokens, laid out as in auto;
* ``False``: no layout: the layer must give an (N, h, w, C) map;
* a callable ``f(array) -> (N, h, w, C) array``: applied to the activations and to their
  gradients (numpy, float64), for token layouts auto cannot know (e.g. extra distillation
  tokens).

The default layer on a token model (:func:`token_choice`): from the last token layer of the
model's final token shape backwards, the first whose grid receives gradient for the target
(one ``layer_value_and_grad`` of one input per layer tried).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from innersight.core import (
    InnersightError,
    InputError,
    LayerInfo,
    ModelAdapter,
    layer_gradient_adapter,
    objectives,
)
from innersight.plugins._layers import (
    Choice,
    describe,
    display_name,
    is_pass_through,
    square_tokens,
)

__all__ = [
    "ReshapeArg",
    "as_grid",
    "check_reshape",
    "not_a_grid",
    "refuse_odd_tokens",
    "token_candidates",
    "token_choice",
]

MAX_PROBES = 24  # token layers tried, from the last, for a default on a token model

ReshapeArg = bool | Callable[[np.ndarray], np.ndarray] | None


def check_reshape(reshape: Any) -> None:
    if reshape is None or isinstance(reshape, (bool, np.bool_)) or callable(reshape):
        return
    raise InputError(
        f"reshape must be None (auto), True, False or a callable turning (N, T, D) tokens into "
        f"(N, h, w, D), got {type(reshape).__name__}"
    )


def as_grid(
    acts: np.ndarray, grads: np.ndarray, reshape: ReshapeArg, layer: str
) -> tuple[np.ndarray, np.ndarray, dict[str, Any] | None] | None:
    """``(acts, grads, how)`` as (N, h, w, C) maps, ``how`` describing a token layout (None for
    a map used as it is); None when the layer gives neither a map nor tokens."""
    if callable(reshape) and not isinstance(reshape, (bool, np.bool_)):
        return _custom(acts, grads, reshape, layer)
    if acts.ndim == 4:
        if reshape is True:
            raise InputError(
                f"reshape=True lays out tokens (N, T, D) as a grid, but layer {layer!r} already "
                f"gives a map {acts.shape[1:]}; leave reshape=None"
            )
        return acts, grads, None
    if acts.ndim != 3:
        return None
    if reshape is False:
        raise InputError(
            f"layer {layer!r} gives tokens {acts.shape[1:]} (N, T, D), not an (H, W, C) map, "
            "and reshape=False keeps them as they are; pass reshape=None to lay them out as a "
            "square grid, or a callable"
        )
    n, count, width = acts.shape
    fit = square_tokens(count)
    if fit is None:
        raise not_a_grid(layer, count, width)
    skip, side = fit
    how = {"how": "auto", "tokens": count, "dropped_tokens": skip, "grid": [side, side]}
    shape = (n, side, side, width)
    return acts[:, skip:].reshape(shape), grads[:, skip:].reshape(shape), how


def not_a_grid(layer: str, count: int, width: int, more: str = "") -> InputError:
    """The error for tokens that auto cannot lay out, with the callable that would."""
    return InputError(
        f"layer {layer!r} gives {count} tokens of width {width}, which are neither a square "
        "grid (s*s) nor a square grid after one class token (s*s + 1), so they cannot be laid "
        "out as an image; pass reshape= a callable turning (N, T, D) into (N, h, w, D), e.g. "
        f"for 2 leading extra tokens reshape=lambda t: t[:, 2:].reshape(len(t), h, w, {width})"
        + more
    )


def _custom(
    acts: np.ndarray, grads: np.ndarray, reshape: Callable[[np.ndarray], np.ndarray], layer: str
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    try:
        a = np.asarray(reshape(acts.copy()), dtype=np.float64)
        g = np.asarray(reshape(grads.copy()), dtype=np.float64)
    except InnersightError:
        raise
    except Exception as err:
        raise InputError(
            f"the reshape callable failed on the activations of layer {layer!r}, shape "
            f"{acts.shape}: {type(err).__name__}: {err}"
        ) from err
    if a.ndim != 4 or a.shape != g.shape or len(a) != len(acts):
        raise InputError(
            f"the reshape callable must return one (h, w, C) map per input, (N, h, w, C) with "
            f"N={len(acts)}; for the activations of layer {layer!r}, shape {acts.shape}, it "
            f"returned {a.shape} (and {g.shape} for their gradients)"
        )
    return a, g, {"how": "callable", "from": list(acts.shape[1:]), "grid": list(a.shape[1:3])}


def _is_tokens(info: LayerInfo) -> bool:
    """A (T, D) output with T >= 2 (pass-throughs are left to the caller)."""
    shape = tuple(info.output_shape)
    return len(shape) == 2 and shape[0] is not None and shape[1] is not None and shape[0] >= 2


def refuse_odd_tokens(after: list[LayerInfo], reshape: ReshapeArg, spatial: list[str]) -> None:
    """Token layers after the last map that auto cannot lay out: say so rather than fall back
    silently to an early map (a ViT's patch embedding)."""
    odd = [info for info in after if _is_tokens(info) and not is_pass_through(info.kind)]
    if odd and not callable(reshape):
        count, width = (int(d or 0) for d in odd[-1].output_shape)
        more = f", or layer= a spatial layer ({', '.join(spatial[-3:])})" if spatial else ""
        raise not_a_grid(odd[-1].name, count, width, more)


def token_candidates(infos: list[LayerInfo], reshape: ReshapeArg) -> list[LayerInfo]:
    """Token layers (T, D) of the model's last token shape, pass-throughs left out."""

    def fits(info: LayerInfo) -> bool:
        if not _is_tokens(info) or is_pass_through(info.kind):
            return False
        return callable(reshape) or square_tokens(int(info.output_shape[0] or 0)) is not None

    tokens = [info for info in infos if fits(info)]
    if not tokens:
        return []
    last = tuple(tokens[-1].output_shape)
    return [info for info in tokens if tuple(info.output_shape) == last]


def token_choice(
    model: ModelAdapter,
    inputs: np.ndarray,
    targets: np.ndarray,
    tokens: list[LayerInfo],
    reshape: ReshapeArg,
) -> Choice | None:
    """From the last, the first token layer whose grid (the patch tokens) gets gradient: with
    class-token pooling, the final norm and the last block's per-token layers feed the head
    through the class token only, so their patch tokens' gradient, and their map, are zero."""
    empty: list[str] = []
    objective = objectives.Logit(targets[:1])
    for info in list(reversed(tokens))[:MAX_PROBES]:
        _, acts, grads = layer_gradient_adapter(model).layer_value_and_grad(
            inputs[:1], objective, info.name
        )
        grid = as_grid(np.asarray(acts, np.float64), np.asarray(grads, np.float64), reshape, "")
        if grid is None or not np.any(grid[1]):
            empty.append(info.name)
            continue
        name = display_name(model, info)
        skipped = (
            f"; later token layers give the patch tokens no gradient (only the class token feeds "
            f"the head), so their maps are empty: {', '.join(repr(e) for e in empty)}"
            if empty
            else ""
        )
        return Choice(
            info.name,
            name,
            f"default: token model; the last token layer whose patch tokens receive gradient, "
            f"{describe(info, name)}{skipped}",
        )
    return None

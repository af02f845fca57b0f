"""What the front ends (report, ``compare --all``, the command line) ask every technique.

They hold no table of technique names: they build one :class:`~innersight.core.PresetContext`
per model and ask each registered technique for its parameters (``technique.presets(ctx)``), its
place (``technique.order``) and what it needs (``technique.requires``). So a third-party
technique behaves in reports and comparisons exactly as a built-in does.

    >>> ctx = preset_context("report", adapter, x, seed=0)
    >>> params = preset_params(technique, ctx, user={"steps": 8})
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from innersight.core.adapter import ModelAdapter, capability_message, shaped_layers
from innersight.core.presets import PresetContext, check_profile
from innersight.core.technique import Technique

__all__ = ["in_order", "preset_context", "preset_params", "skip_for_capabilities"]


def in_order(techniques: Iterable[Technique]) -> list[Technique]:
    """Techniques in section order: ``(technique.order, technique.name)``."""
    return sorted(techniques, key=lambda tech: (tech.order, tech.name))


def declared_shape(model: ModelAdapter) -> tuple[int, ...] | None:
    """The model's declared input shape when every side is known, else None."""
    shape = model.input_shape
    if not shape or any(d is None for d in shape):
        return None
    return tuple(int(d) for d in shape)  # type: ignore[arg-type]


def _probe(model: ModelAdapter, sample: np.ndarray | None) -> np.ndarray | None:
    """One input: the first of ``sample``, else zeros of the declared shape, else None."""
    if sample is not None and len(sample):
        return np.asarray(sample[:1])
    shape = declared_shape(model)
    return None if shape is None else np.zeros((1, *shape), np.float32)


def preset_context(
    profile: str,
    model: ModelAdapter,
    sample: np.ndarray | None = None,
    *,
    seed: int = 0,
    labels: np.ndarray | None = None,
    layer_ok: Callable[[str], bool] | None = None,
) -> PresetContext:
    """The context ``model``'s techniques choose their ``profile`` parameters in.

    Args:
        profile: ``"report"``, ``"quick"`` or ``"full"`` (see :mod:`innersight.core.presets`).
        model: the adapter the techniques will run on.
        sample: the inputs to be explained (their first one is probed once for the layers'
            shapes and the number of classes); None: zeros of the model's declared input
            shape, or nothing when it declares none.
        seed: the run's seed.
        labels: the labels of the data set given to ``accepts_datasets`` techniques.
        layer_ok: which layers a preset may pick (``compare``: those with a counterpart).
    """
    probe = _probe(model, sample)
    layers = list(model.layers()) if probe is None else shaped_layers(model, probe)
    num_classes = None
    if probe is not None:
        num_classes = int(np.prod(np.shape(model.forward(probe).outputs)[1:]))
    return PresetContext(
        profile=check_profile(profile),
        model=model,
        layers=tuple(layers),
        sample_shape=None if probe is None else tuple(int(d) for d in probe.shape[1:]),
        num_classes=num_classes,
        seed=int(seed),
        labels=labels,
        **({} if layer_ok is None else {"layer_ok": layer_ok}),
    )


def preset_params(
    technique: Technique, ctx: PresetContext, user: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """``technique``'s preset for ``ctx`` (None values left out), the run's ``seed`` and no
    progress bar of its own (common parameters every technique accepts), then ``user``'s."""
    params = {k: v for k, v in technique.presets(ctx).items() if v is not None}
    params.update(seed=ctx.seed, progress=False)
    params.update(user or {})
    return params


def skip_for_capabilities(technique: Technique, *models: ModelAdapter) -> str | None:
    """The capability sentence for the first of ``models`` that lacks one of ``technique``'s
    ``requires`` (:func:`innersight.core.capability_message`); None when all have them."""
    for model in models:
        message = capability_message(f"technique {technique.name!r}", technique.requires, model)
        if message is not None:
            return message
    return None

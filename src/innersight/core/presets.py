"""Presets: the parameter sets a technique proposes for reports, quick comparisons and full runs.

Front ends (``innersight report``, ``innersight compare --all``, the CLI) never hold tables of
technique names: they build a :class:`PresetContext` and ask each registered technique for
``technique.presets(ctx)``. A third-party technique that implements ``presets`` therefore behaves
in reports and comparisons exactly as the built-ins do.

Profiles:

- ``"report"``: seconds per technique per model on a CPU, for a report of every technique; a
  technique that reads one layer picks one every model in the report has an equivalent of;
- ``"quick"``: faster still, for ``compare --all`` (two models, every technique);
- ``"full"``: the technique's own defaults, bounded only for the size of the model and inputs
  (e.g. a maximization over at most 10 classes of a 1000-class model).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from innersight.core.errors import InputError

if TYPE_CHECKING:
    from innersight.core.adapter import LayerInfo, ModelAdapter

__all__ = ["PROFILES", "PresetContext", "check_profile"]

PROFILES = ("report", "quick", "full")


def check_profile(profile: Any) -> str:
    """``profile`` when it is one of :data:`PROFILES`; InputError listing them otherwise."""
    if profile not in PROFILES:
        raise InputError(f"profile={profile!r} is unknown; use one of {', '.join(PROFILES)}")
    return str(profile)


def _any_layer(name: str) -> bool:
    return True


@dataclass(frozen=True)
class PresetContext:
    """What a preset may depend on.

    Attributes:
        profile: one of :data:`PROFILES`.
        model: the adapter the technique will run on.
        layers: ``model.layers()`` with output shapes (probed with one input where needed).
        sample_shape: one input's shape, channels last (``(H, W, C)`` for images): the shape of
            the inputs to be explained, else the model's declared input shape; None if unknown.
        num_classes: the number of model outputs (classes), None if unknown.
        seed: the seed of the run (techniques with randomness should use it).
        labels: labels of the data set, for techniques that explain one (``accepts_datasets``).
        layer_ok: whether a layer may be chosen; ``compare`` accepts only layers with a
            counterpart in the other model. Presets that pick a layer must respect it.
    """

    profile: str
    model: ModelAdapter
    layers: Sequence[LayerInfo] = ()
    sample_shape: tuple[int, ...] | None = None
    num_classes: int | None = None
    seed: int = 0
    labels: np.ndarray | None = None
    layer_ok: Callable[[str], bool] = field(default=_any_layer)

    @property
    def is_image(self) -> bool:
        """True when the inputs are images (one input is (H, W, C))."""
        return self.sample_shape is not None and len(self.sample_shape) == 3

    def usable_layers(self) -> list[LayerInfo]:
        """The layers a preset may pick: ``layer_ok`` and a known output shape, in order."""
        return [info for info in self.layers if info.output_shape and self.layer_ok(info.name)]

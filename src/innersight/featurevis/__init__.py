"""Feature visualisation: gradient ascent on generated images, for maximization techniques.

The built-in ``filter_maximization`` and ``class_maximization`` are written on this package,
and a third-party maximization plugin imports it the same way::

    from innersight.featurevis import AscentJob

Modules: :mod:`~innersight.featurevis.job` (:class:`AscentJob`: the parameters every
maximization ``explain`` takes, validated once, and the run),
:mod:`~innersight.featurevis.ascent` (the technique-level loop: options, starting images, value
ranges, batching of targets), :mod:`~innersight.featurevis.optimize` (Adam ascent on
one batch), :mod:`~innersight.featurevis.param` (pixel and Fourier parameterisations) and
:mod:`~innersight.featurevis.transforms` (random jitter/scale/rotate). Only
:mod:`innersight.core` (the contract) is imported here; no framework.
"""

from __future__ import annotations

from innersight.featurevis.ascent import (
    AscentOptions,
    ValueRange,
    image_shape,
    resolve_range,
    run_targets,
)
from innersight.featurevis.job import AscentJob
from innersight.featurevis.optimize import Ascent, ascend, l2_penalty, model_objective
from innersight.featurevis.param import make_param
from innersight.featurevis.transforms import RandomTransforms

__all__ = [
    "Ascent",
    "AscentJob",
    "AscentOptions",
    "RandomTransforms",
    "ValueRange",
    "ascend",
    "image_shape",
    "l2_penalty",
    "make_param",
    "model_objective",
    "resolve_range",
    "run_targets",
]

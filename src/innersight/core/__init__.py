"""The backend-neutral core and the public plugin API.

Plugins import from here::

    from innersight.core import Explanation, Technique, hookimpl, objectives
"""

from __future__ import annotations

from innersight.core import objectives
from innersight.core.adapter import (
    LOGITS,
    BaseAdapter,
    Capability,
    ForwardResult,
    LayerInfo,
    ModelAdapter,
    check_input_array,
    input_tap,
    is_dataset,
    is_input_tap,
)
from innersight.core.ascent import AscentOptions, image_shape, run_targets
from innersight.core.batching import BatchPlanner, Progress, ProgressArg, bytes_per_sample
from innersight.core.errors import (
    BackendNotFoundError,
    CapabilityError,
    InnersightError,
    InnersightWarning,
    InputError,
    LayerNotFoundError,
    ObjectiveError,
    PluginConflictError,
    PluginError,
    PluginLoadError,
    TechniqueNotFoundError,
)
from innersight.core.manager import get_plugin_manager
from innersight.core.markers import hookimpl, hookspec
from innersight.core.optimize import Ascent, ascend, l2_penalty, model_objective
from innersight.core.param import make_param
from innersight.core.render import Renderer
from innersight.core.technique import (
    Explanation,
    Technique,
    check_reduction,
    reduce_channels,
    resolve_target,
)
from innersight.core.transforms import RandomTransforms

__all__ = [
    "LOGITS",
    "Ascent",
    "AscentOptions",
    "BackendNotFoundError",
    "BaseAdapter",
    "BatchPlanner",
    "Capability",
    "CapabilityError",
    "Explanation",
    "ForwardResult",
    "InnersightError",
    "InnersightWarning",
    "InputError",
    "LayerInfo",
    "LayerNotFoundError",
    "ModelAdapter",
    "ObjectiveError",
    "PluginConflictError",
    "PluginError",
    "PluginLoadError",
    "Progress",
    "ProgressArg",
    "RandomTransforms",
    "Renderer",
    "Technique",
    "TechniqueNotFoundError",
    "ascend",
    "bytes_per_sample",
    "check_input_array",
    "check_reduction",
    "get_plugin_manager",
    "hookimpl",
    "hookspec",
    "image_shape",
    "input_tap",
    "is_dataset",
    "is_input_tap",
    "l2_penalty",
    "make_param",
    "model_objective",
    "objectives",
    "reduce_channels",
    "resolve_target",
    "run_targets",
]

"""The backend-neutral core and the public plugin API.

Plugins import from here::

    from innersight.core import Explanation, Technique, hookimpl, objectives
"""

from __future__ import annotations

from innersight.core import objectives
from innersight.core.adapter import (
    BaseAdapter,
    Capability,
    ForwardResult,
    LayerInfo,
    ModelAdapter,
    check_input_array,
)
from innersight.core.batching import BatchPlanner, Progress, bytes_per_sample
from innersight.core.errors import (
    BackendNotFoundError,
    CapabilityError,
    InnersightError,
    InputError,
    LayerNotFoundError,
    ObjectiveError,
    PluginConflictError,
    PluginLoadError,
    TechniqueNotFoundError,
)
from innersight.core.manager import get_plugin_manager
from innersight.core.markers import hookimpl, hookspec
from innersight.core.render import Renderer
from innersight.core.technique import Explanation, Technique, resolve_target

__all__ = [
    "BackendNotFoundError",
    "BaseAdapter",
    "BatchPlanner",
    "Capability",
    "CapabilityError",
    "Explanation",
    "ForwardResult",
    "InnersightError",
    "InputError",
    "LayerInfo",
    "LayerNotFoundError",
    "ModelAdapter",
    "ObjectiveError",
    "PluginConflictError",
    "PluginLoadError",
    "Progress",
    "Renderer",
    "Technique",
    "TechniqueNotFoundError",
    "bytes_per_sample",
    "check_input_array",
    "get_plugin_manager",
    "hookimpl",
    "hookspec",
    "objectives",
    "resolve_target",
]

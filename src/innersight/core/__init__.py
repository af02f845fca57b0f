"""The backend-neutral core and the public plugin API.

Plugins import from here::

    from innersight.core import Explanation, Technique, hookimpl, objectives
"""

from __future__ import annotations

from innersight.core import baselines, lrp, objectives, presets, targets, validate
from innersight.core.adapter import (
    LOGITS,
    BaseAdapter,
    Capability,
    CroppedForwardAdapter,
    ForwardResult,
    LayerGradientAdapter,
    LayerInfo,
    ModelAdapter,
    capability_message,
    check_input_array,
    input_tap,
    is_dataset,
    is_input_tap,
    layer_gradient_adapter,
    missing_capabilities,
    require_capabilities,
    shaped_layers,
)
from innersight.core.baselines import BaselineArg, gaussian_blur, resolve_baseline
from innersight.core.batching import BatchPlanner, Progress, ProgressArg, bytes_per_sample
from innersight.core.deeplift import DeepLiftAdapter
from innersight.core.errors import (
    BackendNotFoundError,
    CapabilityError,
    InnersightError,
    InnersightWarning,
    InputError,
    LayerNotFoundError,
    MissingDependencyError,
    ObjectiveError,
    PluginConflictError,
    PluginError,
    PluginLoadError,
    TechniqueNotFoundError,
)
from innersight.core.inputs import input_kind
from innersight.core.inputspec import InputSpec, NativeTensorAdapter, SeveralInputsAdapter
from innersight.core.lrp import LrpAdapter
from innersight.core.manager import get_plugin_manager
from innersight.core.markers import hookimpl, hookspec
from innersight.core.override import (
    LayerOverrideAdapter,
    has_layer_override,
    layer_override_adapter,
)
from innersight.core.presets import PROFILES, PresetContext
from innersight.core.render import Renderer
from innersight.core.targets import Targets, resolve_targets
from innersight.core.technique import (
    COMMON_PARAMETERS,
    INPUT_KINDS,
    Explanation,
    Technique,
    check_reduction,
    reduce_channels,
    resolve_target,
)

__all__ = [
    "COMMON_PARAMETERS",
    "INPUT_KINDS",
    "LOGITS",
    "PROFILES",
    "BackendNotFoundError",
    "BaseAdapter",
    "BaselineArg",
    "BatchPlanner",
    "Capability",
    "CapabilityError",
    "CroppedForwardAdapter",
    "DeepLiftAdapter",
    "Explanation",
    "ForwardResult",
    "InnersightError",
    "InnersightWarning",
    "InputError",
    "InputSpec",
    "LayerGradientAdapter",
    "LayerInfo",
    "LayerNotFoundError",
    "LayerOverrideAdapter",
    "LrpAdapter",
    "MissingDependencyError",
    "ModelAdapter",
    "NativeTensorAdapter",
    "ObjectiveError",
    "PluginConflictError",
    "PluginError",
    "PluginLoadError",
    "PresetContext",
    "Progress",
    "ProgressArg",
    "Renderer",
    "SeveralInputsAdapter",
    "Targets",
    "Technique",
    "TechniqueNotFoundError",
    "baselines",
    "bytes_per_sample",
    "capability_message",
    "check_input_array",
    "check_reduction",
    "gaussian_blur",
    "get_plugin_manager",
    "has_layer_override",
    "hookimpl",
    "hookspec",
    "input_kind",
    "input_tap",
    "is_dataset",
    "is_input_tap",
    "layer_gradient_adapter",
    "layer_override_adapter",
    "lrp",
    "missing_capabilities",
    "objectives",
    "presets",
    "reduce_channels",
    "require_capabilities",
    "resolve_baseline",
    "resolve_target",
    "resolve_targets",
    "shaped_layers",
    "targets",
    "validate",
]

"""innersight: look inside trained neural networks, on Keras and PyTorch alike.

    >>> import innersight as ins
    >>> ex = ins.explain("saliency", model, x, target=3)
    >>> ex.save("saliency.png")

Importing innersight imports neither torch nor TensorFlow; a backend is loaded only when a model
of its framework is wrapped.
"""

from __future__ import annotations

from innersight import port
from innersight.api import clear_cache, explain, layers, techniques, wrap
from innersight.compare import Comparison, compare
from innersight.core import objectives
from innersight.core.adapter import Capability, ForwardResult, LayerInfo, ModelAdapter
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
from innersight.core.technique import Explanation, Technique
from innersight.loading import load_class_names, load_images, load_model

__version__ = "0.1.0"

__all__ = [
    "BackendNotFoundError",
    "Capability",
    "CapabilityError",
    "Comparison",
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
    "Technique",
    "TechniqueNotFoundError",
    "__version__",
    "clear_cache",
    "compare",
    "explain",
    "get_plugin_manager",
    "layers",
    "load_class_names",
    "load_images",
    "load_model",
    "objectives",
    "port",
    "techniques",
    "wrap",
]

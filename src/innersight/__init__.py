"""innersight: look inside trained neural networks, on Keras and PyTorch alike.

    >>> import innersight as ins
    >>> ex = ins.explain("saliency", model, x, target=3)
    >>> ex.save("saliency.png")

Importing innersight imports neither torch nor TensorFlow; a backend is loaded only when a model
of its framework is wrapped.
"""

from __future__ import annotations

from innersight import (
    metrics,  # the package is callable: ins.metrics() lists the metrics
    port,
)
from innersight.api import clear_cache, evaluate, explain, layers, techniques, wrap
from innersight.compare import Comparison, compare
from innersight.core import objectives
from innersight.core.adapter import (
    LOGITS,
    Capability,
    ForwardResult,
    LayerInfo,
    ModelAdapter,
    input_tap,
)
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
from innersight.core.metric import Evaluation, Metric
from innersight.core.technique import Explanation, Technique
from innersight.loading import load_class_names, load_images, load_model

__version__ = "0.1.0"

__all__ = [
    "LOGITS",
    "BackendNotFoundError",
    "Capability",
    "CapabilityError",
    "Comparison",
    "DatasetRun",
    "Evaluation",
    "Explanation",
    "ForwardResult",
    "InnersightError",
    "InnersightWarning",
    "InputError",
    "LayerInfo",
    "LayerNotFoundError",
    "Metric",
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
    "embed_dataset",
    "evaluate",
    "explain",
    "explain_dataset",
    "get_plugin_manager",
    "input_tap",
    "layers",
    "load_class_names",
    "load_images",
    "load_model",
    "metrics",
    "objectives",
    "port",
    "techniques",
    "wrap",
]

_DATASET = ("DatasetRun", "embed_dataset", "explain_dataset")


def __getattr__(name: str) -> object:
    # Data-set scale (innersight.dataset) is imported on first use, not with innersight.
    if name in _DATASET:
        import innersight.dataset

        return getattr(innersight.dataset, name)
    raise AttributeError(f"module 'innersight' has no attribute {name!r}")

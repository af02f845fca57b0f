"""Cross-framework comparison: one technique on two models, and how far the results agree.

    >>> import innersight as ins
    >>> twin = ins.port.keras_to_torch(keras_model)
    >>> c = ins.compare("saliency", keras_model, twin, x)
    >>> c.summary()          # medians: max_abs_diff, rel_l2, spearman, top1pct, top5pct
    >>> c.save("out/")       # PNG (A | B | |A - B|), HTML, metrics JSON, both explanations
    >>> from innersight.compare import compare_all
    >>> every = compare_all(keras_model, twin, x)   # every technique, quick settings

See ``docs/comparison.md`` for the metrics and the agreement measured per technique.
Importing this package imports neither framework.
"""

from __future__ import annotations

from typing import Any

from innersight.compare.metrics import map_metrics, rankdata, spearman, topk_overlap
from innersight.compare.page import metrics_record, page_html, save_all, write_page
from innersight.compare.quick import QuickComparison, compare_all
from innersight.compare.result import Comparison
from innersight.compare.run import LayerTranslator, compare

__all__ = [
    "Comparison",
    "LayerTranslator",
    "QuickComparison",
    "compare",
    "compare_all",
    "demo_keras",
    "demo_pair",
    "demo_torch",
    "map_metrics",
    "metrics_record",
    "page_html",
    "rankdata",
    "save_all",
    "spearman",
    "topk_overlap",
    "write_page",
]


def demo_torch() -> Any:
    """The trained demo digits CNN in PyTorch (for ``innersight compare demo:torch ...``)."""
    import torch  # noqa: F401  (torch before TensorFlow: the other order can crash)

    from innersight.models import digits_cnn

    return digits_cnn("torch")


def demo_keras() -> Any:
    """The demo digits CNN in Keras, PORTED from the torch build by :mod:`innersight.port`."""
    from innersight.port import torch_to_keras

    return torch_to_keras(demo_torch(), (32, 32, 1), name="digits_cnn")


def demo_pair() -> tuple[Any, Any]:
    """``(torch model, its Keras port)``: the demo digits CNN in both frameworks."""
    net = demo_torch()
    from innersight.port import torch_to_keras

    return net, torch_to_keras(net, (32, 32, 1), name="digits_cnn")

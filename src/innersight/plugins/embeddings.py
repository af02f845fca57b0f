"""Embeddings: how a network arranges a data set, as a 2-D PCA or t-SNE map of one layer.

The features of ``layer`` are tapped with batched forwards (the memory budget and auto batch
size of :class:`~innersight.core.BatchPlanner`), flattened to one vector per sample, and
projected to 2-D by :mod:`._projection`. Spatial (H, W, C) features are flattened in
channels-last order (identical on every backend), not global-average-pooled: pooling would
discard where a feature fires, which is often what separates classes in early layers. To
embed pooled features, tap a pooling layer.

Default layer: the input of the final dense layer, i.e. the penultimate features, exactly as
that layer receives them. The final dense layer is the last layer, in ``layers()`` order (the
order of execution), whose output is 1-D and which owns parameters (so a trailing Softmax, ReLU
or Dropout is skipped). Its input is read with the adapter's :func:`~innersight.core.input_tap`:
when the layer before it outputs that very tensor, the features are named after that layer
(torch: the ``ReLU`` after ``fc1``; Keras: ``fc1`` with its fused ReLU); when functional
operations make it (``F.relu``, pooling and ``flatten`` in ``forward()``), they are named by the
tap, e.g. ``"fc@input"``, which ``layer=`` accepts too. Adapters that do not serve input taps
get the output of the layer listed before the final dense layer, and ``meta["layer_rule"]``
says so. ``meta["layer"]`` names what was used and ``meta["layer_rule"]`` why.

Inputs are an array (N, H, W, C) or a data set: any iterable that is not an array, list or
tuple, yielding channels-last numpy batches ``x`` or ``(x, y)`` pairs (Keras'
``(x, y, sample_weight)`` too) whose ``y`` become the labels (one-hot rows are arg-maxed). For
``tf.data`` pass ``ds.as_numpy_iterator()``; for a torch DataLoader,
``((x.numpy().transpose(0, 2, 3, 1), y.numpy()) for x, y in loader)``. A data set is read once,
batch by batch; its inputs are kept in the Explanation only with ``thumbnails=True``.

Results: ``values`` (N, 2); ``meta`` holds the layer, ``implementation``,
``explained_variance_ratio`` (PCA) or ``kl_divergence`` (t-SNE), ``trustworthiness`` (with
``trustworthiness_neighbors`` = 5), ``knn_accuracy`` (leave-one-out 5-NN in 2-D, with labels),
``labels``, ``timings`` and ``seconds``; see :mod:`._projection` for the methods' settings.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from innersight.core import (
    Explanation,
    InputError,
    ModelAdapter,
    PresetContext,
    Technique,
    hookimpl,
    validate,
)
from innersight.core.batching import ProgressArg
from innersight.plugins import _projection
from innersight.plugins._features import (
    Features,
    as_array,
    as_labels,
    default_layer,
    is_dataset,
    layer_features,
)
from innersight.plugins._presets import only_set

__all__ = ["Embeddings", "Features", "as_labels", "default_layer", "is_dataset", "layer_features"]


class Embeddings(Technique):
    """PCA or t-SNE map of a data set in one layer's feature space (default: penultimate)."""

    name = "embeddings"
    summary = "2-D PCA or t-SNE map of a data set in a layer's feature space, coloured by label."
    requires = frozenset({"forward", "layer_taps"})
    input_kinds = frozenset({"image", "sequence", "tabular", "tokens", "several"})
    order = 100

    def presets(self, ctx: PresetContext) -> dict[str, Any]:
        """Parameters for reports (``"report"``) and ``compare --all`` (``"quick"``)."""
        if ctx.profile == "full":
            return {}
        return only_set(method="pca", labels=ctx.labels)

    #: Takes an iterable of batches as well as an array (for innersight.explain to pass through).
    accepts_datasets = True

    def explain(
        self,
        model: ModelAdapter,
        inputs: Any,
        *,
        layer: str | None = None,
        method: str = "pca",
        labels: Sequence[Any] | np.ndarray | None = None,
        perplexity: float = 30.0,
        seed: int = 0,
        batch_size: int | str = "auto",
        progress: ProgressArg = None,
        thumbnails: bool = False,
    ) -> Explanation:
        """Map the inputs (or a data set) to 2-D by PCA or t-SNE of one layer's features.

        Args:
            layer: layer whose output is embedded (or an input tap, "fc@input"); None: the
                input of the final dense layer.
            method: "pca" (scikit-learn) or "tsne" (openTSNE; scikit-learn's TSNE without it).
            labels: one label per sample (colours, legend and meta["knn_accuracy"]);
                overrides the y of a data set of (x, y) batches.
            perplexity: t-SNE's effective number of neighbours; needs N >= 3 * perplexity + 1.
            seed: seeds t-SNE, randomized PCA and the metrics' subsample (None: a fresh one,
                recorded in ``meta["seed"]``).
            batch_size: samples per forward, or "auto" (memory budget and timing).
            progress: None (bar on a terminal), True, False, or a callback(done, total);
                counts samples for arrays, batches for a data set (total 0 when it has no
                len()).
            thumbnails: draw the inputs at their points when rendering (keeps a data set's
                inputs).
        """
        t0 = time.perf_counter()
        seed = validate.seed(seed)
        known_n = None
        if not is_dataset(inputs):
            inputs = as_array(model, inputs)
            known_n = len(inputs)
        _projection.check_method(method, perplexity, known_n)
        if labels is not None and known_n is not None:
            as_labels(labels, known_n)
        feats = layer_features(
            model,
            inputs,
            layer=layer,
            batch_size=batch_size,
            progress=progress,
            keep_inputs=bool(thumbnails),
        )
        coords, meta = _embed(feats, method, float(perplexity), seed, labels, t0)
        params = {"layer": feats.layer, "method": method, "perplexity": float(perplexity)}
        params.update(seed=seed, batch_size=batch_size, thumbnails=bool(thumbnails))
        return Explanation(
            technique=self.name,
            kind="embedding",
            values=coords,
            inputs=feats.inputs,
            params=params,
            meta=meta,
        )


def _embed(
    feats: Features, method: str, perplexity: float, seed: int, labels: Any, t0: float
) -> tuple[np.ndarray, dict[str, Any]]:
    """The 2-D coordinates of ``feats`` and the meta of the run (``t0``: when it began)."""
    label_arr = _check_features(feats, method, perplexity, labels)
    t1 = time.perf_counter()
    if method == "pca":
        coords, meta = _projection.pca(feats.values, seed=seed)
    else:
        coords, meta = _projection.tsne(feats.values, perplexity=perplexity, seed=seed)
        meta["perplexity"] = perplexity
    t2 = time.perf_counter()
    meta.update(_projection.quality(feats.values, coords, label_arr, seed=seed))
    meta.update(_describe(feats, method, seed, labels, label_arr))
    meta["timings"] = {
        "features": t1 - t0,
        "embedding": t2 - t1,
        "metrics": meta.pop("metrics_seconds"),
    }
    meta["seconds"] = time.perf_counter() - t0
    return coords, meta


def _check_features(
    feats: Features, method: str, perplexity: float, labels: Any
) -> np.ndarray | None:
    """Enough samples and features for the method; the labels to use (argument over data set)."""
    n, dim = feats.values.shape
    _projection.check_method(method, perplexity, n)
    if dim < 2:
        raise InputError(
            f"layer {feats.layer!r} gives {dim} feature per sample; a 2-D embedding needs at "
            "least 2: pick an earlier layer"
        )
    return feats.labels if labels is None else as_labels(labels, n)


def _describe(
    feats: Features, method: str, seed: int, labels: Any, used: np.ndarray | None
) -> dict[str, Any]:
    source = "labels" if labels is not None else "data set" if feats.labels is not None else None
    return {
        "layer": feats.layer,
        "layer_rule": feats.rule,
        "feature_shape": list(feats.shape),
        "n_features": int(feats.values.shape[1]),
        "n_samples": int(feats.values.shape[0]),
        "method": method,
        "seed": seed,
        "labels": None if used is None else used.tolist(),
        "labels_source": source,
    }


@hookimpl
def innersight_register_techniques() -> Iterable[Technique]:
    yield Embeddings()

"""Reading one layer's features of an array or a data set, for the ``embeddings`` technique.

See :mod:`innersight.plugins.embeddings` for the rules (default layer, flattening, data sets).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from innersight.core import (
    BatchPlanner,
    InputError,
    LayerNotFoundError,
    ModelAdapter,
    Progress,
    ProgressArg,
    bytes_per_sample,
    check_input_array,
    input_tap,
    is_dataset,
    is_input_tap,
    shaped_layers,
)
from innersight.core.errors import did_you_mean, summarize_names

__all__ = [
    "Features",
    "as_array",
    "as_labels",
    "default_layer",
    "final_dense",
    "is_dataset",
    "layer_features",
]


@dataclass(frozen=True)
class Features:
    """One layer's features of a data set: ``values`` (N, D) float32, flattened channels-last."""

    values: np.ndarray
    layer: str
    shape: tuple[int, ...]
    rule: str
    labels: np.ndarray | None = None
    inputs: np.ndarray | None = None


def as_labels(labels: Any, n: int, what: str = "labels") -> np.ndarray:
    """One label per sample as a 1-D array; (N, 1) is squeezed and one-hot (N, K) arg-maxed."""
    arr = np.asarray(labels)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    elif arr.ndim == 2 and arr.dtype.kind in "fiub":
        arr = arr.argmax(axis=1)
    if arr.ndim != 1:
        raise InputError(
            f"{what} must hold one label per sample, shape (N,); got shape {arr.shape}"
        )
    if len(arr) != n:
        raise InputError(f"{what} has {len(arr)} entries for {n} samples; pass one per sample")
    if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        arr = arr.astype(np.int64)
    return arr


def final_dense(infos: Sequence[Any], shapes: Mapping[str, tuple[int | None, ...]]) -> int:
    """Position of the final dense layer: the last layer after the first with a 1-D output
    and parameters (so a trailing Softmax, ReLU or Dropout is skipped)."""
    for i in reversed(range(1, len(infos))):
        info = infos[i]
        if len(shapes.get(info.name, ())) == 1 and info.num_params > 0:
            return i
    names = [info.name for info in infos]
    raise InputError(
        "cannot pick a default layer: no layer after the first has a 1-D output and "
        f"parameters (a final dense layer); pass layer= one of: {summarize_names(names)}"
    )


def default_layer(
    model: ModelAdapter,
    infos: Sequence[Any],
    shapes: Mapping[str, tuple[int | None, ...]],
    sample: np.ndarray,
) -> tuple[str, str]:
    """What the final dense layer receives (its :func:`input_tap`), named by the layer that
    outputs it when one does; the rule in words. Adapters without input taps: the output of
    the layer listed before it, and the rule says so."""
    i = final_dense(infos, shapes)
    dense, prev = infos[i].name, infos[i - 1].name
    what = (
        f"the input of the final dense layer {dense!r} (the last layer with a 1-D output and "
        "parameters)"
    )
    tap = input_tap(dense)
    try:
        acts = model.forward(sample, taps=[tap, prev]).activations
    except LayerNotFoundError:
        return prev, (
            f"default: the output of {prev!r}, the layer listed before the final dense layer "
            f"{dense!r}; this {model.backend} adapter does not serve input taps, so any "
            f"functional operations between the two (activation, pooling, flatten) are not "
            "applied: pass layer= to choose"
        )
    got, before = np.asarray(acts[tap]), np.asarray(acts[prev])
    if got.shape == before.shape and np.array_equal(got, before):
        return prev, f"default: {what}, which is the output of {prev!r}"
    return tap, (
        f"default: {what}, tapped as {tap!r}: no layer outputs it (functional operations "
        f"after {prev!r} make it, e.g. an activation, pooling or flatten)"
    )


def _check_layer(model: ModelAdapter, layer: Any, names: list[str]) -> None:
    if not isinstance(layer, str):
        raise InputError(f"layer must be a layer name (str) or None, got {type(layer).__name__}")
    layer = is_input_tap(layer) or layer
    if layer in names:
        return
    lookup = getattr(model, "layer_info", None)
    if lookup is not None:  # raises with suggestions; torch also accepts container modules
        lookup(layer)
        return
    raise LayerNotFoundError(
        f"layer {layer!r} not found in {model.backend} model {model.name}; "
        f"{summarize_names(names)}{did_you_mean(layer, names)}"
    )


def _resolve(
    model: ModelAdapter, layer: str | None, sample: np.ndarray
) -> tuple[str, str, tuple[int, ...], int]:
    """Layer name, how it was chosen, its output shape, and the bytes one sample's forward needs."""
    infos = shaped_layers(model, sample)  # torch learns which layers run, and their shapes
    names = [info.name for info in infos]
    if layer is not None:
        _check_layer(model, layer, names)
    shapes = {info.name: tuple(info.output_shape) for info in infos}
    flexible = [name for name, shape in shapes.items() if None in shape]
    if flexible:  # sizes that depend on the input (a Keras model with a flexible input)
        acts = model.forward(sample, taps=flexible).activations
        shapes.update({k: tuple(np.shape(v)[1:]) for k, v in acts.items()})
    if layer is None:
        layer, rule = default_layer(model, infos, shapes, sample)
    else:
        rule = "given"
    if layer not in shapes:  # a container, an alias or an input tap
        shapes[layer] = tuple(np.shape(model.forward(sample, taps=[layer]).activations[layer])[1:])
    per_sample = bytes_per_sample(sample.shape[1:], list(shapes.values()))
    return layer, rule, tuple(int(d or 0) for d in shapes[layer]), per_sample


def _tap(
    model: ModelAdapter, x: np.ndarray, layer: str, per_sample: int, batch_size: Any, progress: Any
) -> np.ndarray:
    def run(start: int, stop: int) -> np.ndarray:
        act = model.forward(x[start:stop], taps=[layer]).activations[layer]
        return np.asarray(act, dtype=np.float32).reshape(stop - start, -1)

    key = ("embeddings", model.backend, type(model).__name__, model.name, x.shape[1:], layer)
    return BatchPlanner().map(
        run,
        len(x),
        per_sample=per_sample,
        batch_size=batch_size,
        key=key,
        progress=progress,
        desc="embeddings: features",
    )


def as_array(model: ModelAdapter, inputs: Any) -> np.ndarray:
    """The inputs as a validated batch: float32, or (N, T) token ids as they are (the adapter
    that takes them checks them against its Embedding)."""
    if isinstance(inputs, np.ndarray) and inputs.dtype == np.float32:
        return inputs
    if isinstance(inputs, np.ndarray) and inputs.dtype.kind in "iu" and inputs.ndim == 2:
        return inputs
    try:
        return check_input_array(inputs, expected=model.input_shape)
    except InputError as err:
        if isinstance(inputs, (list, tuple)):
            raise InputError(
                f"{err}; a list or tuple is read as one array: to pass a data set of batches "
                "or (x, y) pairs, pass an iterator, e.g. iter(batches)"
            ) from err
        raise


def _split(model: ModelAdapter, item: Any, i: int) -> tuple[np.ndarray, np.ndarray | None]:
    y = None
    if isinstance(item, Mapping):
        raise InputError(
            f"batch {i} of the data set is a {type(item).__name__}; yield arrays (N, H, W, C) "
            "or (x, y) tuples, e.g. ((b['image'], b['label']) for b in data)"
        )
    if isinstance(item, (tuple, list)):
        if len(item) not in (2, 3):
            raise InputError(
                f"batch {i} of the data set is a {type(item).__name__} of {len(item)} items; "
                "yield x, (x, y) or (x, y, sample_weight)"
            )
        item, y = item[0], item[1]
    kind = getattr(getattr(item, "dtype", None), "kind", "")
    if kind in "iu" and kind and getattr(item, "ndim", 0) == 2:
        raise InputError(
            f"batch {i} of the data set holds token ids {tuple(item.shape)}; a data set of "
            "token ids is not read batch by batch: pass the ids as one array, "
            "innersight.explain('embeddings', model, np.concatenate(id_batches), "
            "labels=np.concatenate(label_batches)) (if these are numeric features, not token "
            "ids, yield them as floats: x.astype(np.float32))"
        )
    try:
        x = check_input_array(item, expected=model.input_shape)
    except InputError as err:
        raise InputError(f"batch {i} of the data set: {err}") from err
    return x, None if y is None else as_labels(y, len(x), f"the labels (y) of batch {i}")


def layer_features(
    model: ModelAdapter,
    inputs: Any,
    *,
    layer: str | None = None,
    batch_size: int | str = "auto",
    progress: ProgressArg = None,
    keep_inputs: bool = True,
) -> Features:
    """The flattened features of ``layer`` (default: penultimate) for an array or a data set."""
    if not is_dataset(inputs):
        x = as_array(model, inputs)
        name, rule, shape, per_sample = _resolve(model, layer, x[:1])
        values = _tap(model, x, name, per_sample, batch_size, progress)
        return Features(values, name, shape, rule, None, x)
    chunks: list[np.ndarray] = []
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    total = len(inputs) if hasattr(inputs, "__len__") else 0
    with Progress(total, "embeddings: features (batches)", progress) as bar:
        for i, item in enumerate(iter(inputs)):
            x, y = _split(model, item, i)
            if i == 0:
                name, rule, shape, per_sample = _resolve(model, layer, x[:1])
                first, labelled = x.shape[1:], y is not None
            elif x.shape[1:] != first:
                raise InputError(
                    f"batch {i} of the data set has samples of shape {x.shape[1:]}, "
                    f"batch 0 has {first}; every batch must have the same sample shape"
                )
            elif (y is not None) != labelled:
                raise InputError(
                    f"batch {i} of the data set {'has' if y is not None else 'has no'} labels "
                    f"but batch 0 {'has' if labelled else 'has none'}; yield (x, y) for every "
                    "batch or for none"
                )
            chunks.append(_tap(model, x, name, per_sample, batch_size, False))
            xs += [x] if keep_inputs else []
            ys += [y] if y is not None else []
            bar.update(1)
    if not chunks:
        raise InputError("the data set yielded no batches; pass at least one batch (N, H, W, C)")
    return Features(
        np.concatenate(chunks),
        name,
        shape,
        rule,
        np.concatenate(ys) if ys else None,
        np.concatenate(xs) if xs else None,
    )

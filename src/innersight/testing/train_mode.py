"""A model in training mode is explained as in inference mode, and stays in training mode.

Users often look inside a model in the middle of training: a torch model after ``model.train()``,
or a Keras model with BatchNormalization and Dropout layers (whose behaviour is chosen per call).
An explanation must not depend on Dropout's random masks nor on BatchNorm's batch statistics,
and looking must not change the model: no module left in eval mode, no running statistics
(BatchNorm ``running_mean``/``running_var``/``num_batches_tracked``, Keras ``moving_mean``/
``moving_variance``) updated by a forward pass that ran in training mode.

:func:`check_train_mode_preserved` runs a technique through ``innersight.explain`` and verifies
all of it; it is backend-neutral (it reads only :func:`~innersight.testing.snapshot` and the
Explanations), so a third-party backend can run it on its own framework's models.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from innersight.core.frameworks import is_torch
from innersight.testing.checks import ConformanceWarning, assert_close, fail
from innersight.testing.state import diff, snapshot

__all__ = ["check_train_mode_preserved", "training_flags"]

#: Snapshot entries that are training state: any change to them is reported first, by name.
_TRAINING_KEYS = ("training", "running_", "num_batches_tracked", "moving_")


def training_flags(model: Any) -> dict[str, bool]:
    """``{module name: training}`` of a torch model; ``{}`` for other frameworks (Keras picks
    training per call, so a model has no mode to record, on the torch backend too)."""
    if not is_torch(model):
        return {}
    return {name or "<root>": bool(m.training) for name, m in model.named_modules()}


def check_train_mode_preserved(
    model: Any,
    x: np.ndarray,
    *,
    technique: str = "saliency",
    independent_samples: bool = True,
    **params: Any,
) -> None:
    """``technique`` on a model in training mode gives inference-mode results and leaves the
    model exactly as it was, still in training mode.

    Verifies, for ``innersight.explain(technique, model, x, **params)``:

    * the model's snapshot is unchanged: every module's ``training`` flag (still True where it
      was), BatchNorm running statistics and every other buffer and weight bit for bit,
      ``requires_grad``, hooks, Keras ``trainable`` flags;
    * two runs give identical values (Dropout active would make them differ);
    * each sample's result does not depend on the rest of the batch: explaining ``x[:1]`` alone
      gives the first sample's values (BatchNorm in training mode would normalise with the
      batch's statistics). Needs ``len(x) >= 2``; skipped with ``independent_samples=False``.

    Args:
        model: a native model, best in training mode (torch: after ``model.train()``) and with
            BatchNorm and Dropout layers; a torch model with no module in training mode only
            gets the state checks, with a ConformanceWarning.
        x: a batch of at least 2 samples (N, H, W, C).
        technique: the registered technique to run (default ``"saliency"``).
        independent_samples: False for techniques whose values depend on the whole batch by
            design (embeddings: PCA/t-SNE of all samples together).
        **params: the technique's parameters (``seed=0`` is added when it takes a seed).

    Raises:
        ConformanceError: naming what changed or which results differ.
    """
    import innersight

    c = "check_train_mode_preserved"
    x = np.asarray(x, dtype=np.float32)
    if x.ndim < 2 or len(x) < 2:
        fail(c, f"needs a batch of at least 2 samples, got shape {x.shape}")
    flags = _flags_of_a_model_in_training(c, model)
    params.setdefault("seed", 0)  # a common parameter: every technique takes it
    before = snapshot(model)
    first = innersight.explain(technique, model, x, **params)
    _check_unchanged(c, technique, before, model, flags)
    second = innersight.explain(technique, model, x, **params)
    _check_unchanged(c, technique, before, model, flags)
    _check_same(
        c, f"{technique} values{{}} of a second identical run (Dropout left on?)", first, second
    )
    if not independent_samples:
        return
    alone = innersight.explain(technique, model, x[:1], **params)
    _check_unchanged(c, technique, before, model, flags)
    what = f"{technique} values{{}} of sample 0 explained alone vs. in a batch of {len(x)}"
    _check_same(c, what + " (BatchNorm using batch statistics?)", first, alone, rows=1)


def _check_same(c: str, what: str, first: Any, again: Any, rows: int | None = None) -> None:
    """``again``'s values equal ``first``'s (its first ``rows``); ``what`` has a ``{}`` for the
    key of a per-layer mapping."""
    for key, a, b in _pairs(first.values, again.values):
        assert_close(c, what.format(key), b, np.asarray(a)[:rows])


def _flags_of_a_model_in_training(c: str, model: Any) -> dict[str, bool]:
    flags = training_flags(model)
    if flags and not any(flags.values()):
        warnings.warn(
            f"{c}: no module of {type(model).__name__} is in training mode; call model.train() "
            "first, or the check proves only that the model is left unchanged",
            ConformanceWarning,
            stacklevel=3,
        )
    return flags


def _check_unchanged(
    c: str, technique: str, before: Any, model: Any, flags: Mapping[str, bool]
) -> None:
    now = training_flags(model)
    switched = [
        f"{name}: {old} -> {now.get(name)}" for name, old in flags.items() if now.get(name) != old
    ]
    if switched:
        fail(
            c,
            f"{technique} changed training flags (restore them in finally): "
            + "; ".join(switched[:10]),
        )
    changes = diff(before, snapshot(model))
    if changes:
        training = [d for d in changes if any(k in d for k in _TRAINING_KEYS)]
        rest = [d for d in changes if d not in training]
        lines = (training + rest)[:15]
        fail(
            c,
            f"{technique} left the {before.kind} model changed"
            + (" (training state: running statistics or flags)" if training else "")
            + ":\n  "
            + "\n  ".join(lines),
        )


def _pairs(a: Any, b: Any) -> list[tuple[str, Any, Any]]:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return [(f"[{k!r}]", a[k], b.get(k)) for k in a]
    return [("", a, b)]

"""The architectures under test as :class:`Subject`: model, inputs and the model's initial state.

Building a Keras application and tracing its functions costs far more than one technique on it,
so every test of one architecture shares one Subject (and, through ``wrap``'s cache, one
adapter): :class:`Subjects` builds each the first time a test asks for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from innersight.testing import Snapshot, snapshot
from tests.realarch import replicas_keras, replicas_torch


@dataclass
class Subject:
    """One architecture under test: the user's model, its inputs and its state before any test.

    Attributes:
        name: the replica's name (``k_`` prefix: Keras).
        native: the user's model as built (torch ``nn.Module`` in eval mode, or Keras model).
        model: what is explained: ``native``, or the single-output view of a multi-output
            Keras model (see :meth:`~tests.realarch.replicas_keras.KerasReplica.explained`).
        x: two channels-last images in 0..1.
        many: six images, for techniques that need a data set (embeddings).
        conventional: the accepted Grad-CAM layer names.
        filter_layer: a spatial layer for filter maximization.
        before: :func:`innersight.testing.snapshot` of ``native``, taken right after building.
    """

    name: str
    native: Any
    model: Any
    x: np.ndarray
    many: np.ndarray
    conventional: frozenset[str]
    filter_layer: str
    before: Snapshot


def _images(n: int, size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, size, size, 3), dtype=np.float32)


def make_subject(name: str) -> Subject:
    """Build the replica ``name`` (torch or Keras) with its inputs and its initial snapshot."""
    if name.startswith("k_"):
        pytest.importorskip("keras")
        replica: Any = replicas_keras.REPLICAS[name]
    else:
        replica = replicas_torch.REPLICAS[name]
    native = replica.build()
    model = replica.explained(native) if name.startswith("k_") else native
    return Subject(
        name=name,
        native=native,
        model=model,
        x=_images(2, replica.size, 1),
        many=_images(6, replica.size, 2),
        conventional=replica.conventional,
        filter_layer=replica.filter_layer or sorted(replica.conventional)[0],
        before=snapshot(native),
    )


class Subjects(dict):  # type: ignore[type-arg]
    """``{name: Subject}``, filled lazily: a model is built the first time it is looked up."""

    def __missing__(self, name: str) -> Subject:
        self[name] = subject = make_subject(name)
        return subject

"""Heatmaps of vectors: (N, F) tabular and (N, L) sequence maps render as one strip per input."""

from __future__ import annotations

import numpy as np

from innersight.core import Explanation


def _image(values: np.ndarray) -> np.ndarray:
    return Explanation(technique="t", kind="heatmap", values=values).to_image()


def test_a_vector_map_renders_one_strip_per_input_in_feature_order() -> None:
    values = np.array([[0.0, 1.0, 2.0, 3.0], [3.0, 2.0, 1.0, 0.0]])
    image = _image(values)
    assert image.dtype == np.uint8 and image.ndim == 3
    # reversing the features of every input mirrors each strip left to right
    mirrored = _image(values[:, ::-1])
    np.testing.assert_array_equal(mirrored, image[:, ::-1])
    # the two inputs' strips are mirror images of each other
    top, bottom = image[: image.shape[0] // 2 - 2], image[image.shape[0] // 2 + 2 :]
    assert not np.array_equal(top, bottom)

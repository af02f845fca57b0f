"""An Explanation of several inputs: rendering, parts, saving and loading."""

from __future__ import annotations

import numpy as np
import pytest

import innersight as ins
from innersight.core import Explanation, InputError, Renderer
from innersight.core.render import render
from innersight.testing import reference_model


@pytest.fixture
def ex():
    model = reference_model("linear", input_shapes=((6, 6, 3), (5, 5, 1)), seed=1)
    rng = np.random.default_rng(0)
    a, b = rng.random((2, 6, 6, 3), np.float32), rng.random((2, 5, 5, 1), np.float32)
    return ins.explain("saliency", model, (a, b), target=0)


def test_render_draws_one_panel_per_input_side_by_side(ex):
    image = ex.to_image()
    first, second = ex.part(0).to_image(), ex.part(1).to_image()
    assert image.shape == (
        max(first.shape[0], second.shape[0]),
        first.shape[1] + 4 + second.shape[1],
        3,
    )
    np.testing.assert_array_equal(image[: first.shape[0], : first.shape[1]], first)
    np.testing.assert_array_equal(image[: second.shape[0], first.shape[1] + 4 :], second)


def test_part_holds_one_inputs_map_and_inputs(ex):
    part = ex.part(1)
    assert part.values is ex.values[1] and part.inputs is ex.inputs[1]
    assert part.meta["input_index"] == 1 and len(ex) == 2
    with pytest.raises(InputError, match="has 2 inputs"):
        ex.part(2)


def test_npz_round_trip_keeps_the_tuples(ex, tmp_path):
    back = Explanation.load(ex.save(tmp_path / "two.npz"))
    assert isinstance(back.values, tuple) and isinstance(back.inputs, tuple)
    for got, want in zip(back.values + back.inputs, ex.values + ex.inputs, strict=True):
        np.testing.assert_array_equal(got, want)


class _ImagesOnly(Renderer):
    kind = "heatmap"

    def render(self, explanation, **options):
        if np.ndim(explanation.values) != 3:
            raise InputError(f"cannot draw values of shape {np.shape(explanation.values)}")
        return np.zeros((*np.shape(explanation.values)[1:], 3), np.uint8)


def test_an_input_that_cannot_be_drawn_says_how_to_render_one():
    model = reference_model("linear", input_shapes=((4, 4, 1), (3,)), seed=2)
    rng = np.random.default_rng(1)
    x = (rng.random((1, 4, 4, 1), np.float32), rng.random((1, 3), np.float32))
    ex = ins.explain("saliency", model, x, target=0)
    with pytest.raises(InputError, match=r"cannot render input 1 .* ex.part\(j\).to_image\(\)"):
        render(ex, _ImagesOnly())
    assert render(ex.part(0), _ImagesOnly()).shape == (4, 4, 3)  # the advice works

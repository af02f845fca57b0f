from __future__ import annotations

import numpy as np
import pytest

from innersight.core import ObjectiveError, objectives


def test_per_sample_broadcasts_and_validates():
    assert objectives.per_sample(2, 3).tolist() == [2, 2, 2]
    assert objectives.per_sample([0, 1, 2], 3).tolist() == [0, 1, 2]
    assert objectives.per_sample(np.array([1.0, 2.0]), 2).tolist() == [1, 2]
    with pytest.raises(ObjectiveError, match="has 2 entries for 3 samples"):
        objectives.per_sample([0, 1], 3)
    with pytest.raises(ObjectiveError, match="bool"):
        objectives.per_sample(True, 3)
    with pytest.raises(ObjectiveError, match="sequence of ints"):
        objectives.per_sample("cat", 3)


def test_logit_picks_one_score_per_sample():
    out = np.arange(12, dtype=np.float32).reshape(4, 3)
    vals = objectives.evaluate(objectives.Logit([0, 1, 2, 0]), out, {})
    assert vals.tolist() == [0, 4, 8, 9]
    with pytest.raises(ObjectiveError, match="target 3 is out of range: valid values are 0..2"):
        objectives.evaluate(objectives.Logit(3), out, {})


def test_channel_mean_with_crop_matches_a_loop():
    rng = np.random.default_rng(0)
    act = rng.standard_normal((2, 6, 5, 3))
    obj = objectives.Channel("l", [2, 0], crop=1)
    vals = objectives.evaluate(obj, np.zeros((2, 1)), {"l": act})
    expected = [act[0, 1:5, 1:4, 2].mean(), act[1, 1:5, 1:4, 0].mean()]
    np.testing.assert_allclose(vals, expected)


def test_channel_on_vector_layer_and_bad_crop():
    act = np.arange(6.0).reshape(2, 3)
    assert objectives.evaluate(objectives.Channel("d", 1), act, {"d": act}).tolist() == [1, 4]
    with pytest.raises(
        ObjectiveError, match="crop=3 leaves nothing of layer 'l' .6x6.; use 0 <= crop <= 2"
    ):
        objectives.evaluate(objectives.Channel("l", 0, crop=3), act, {"l": np.zeros((1, 6, 6, 2))})
    with pytest.raises(ObjectiveError, match="channel of layer 'd' 5 is out of range"):
        objectives.evaluate(objectives.Channel("d", 5), act, {"d": act})


def test_neuron_flat_and_tuple_index_agree():
    act = np.random.default_rng(1).standard_normal((2, 3, 4, 5))
    flat = int(np.ravel_multi_index((1, 2, 3), (3, 4, 5)))
    a = objectives.evaluate(objectives.Neuron("l", flat), act[:, :1, :1, :1], {"l": act})
    b = objectives.evaluate(objectives.Neuron("l", (1, 2, 3)), act, {"l": act})
    np.testing.assert_array_equal(a, act[:, 1, 2, 3])
    np.testing.assert_array_equal(b, act[:, 1, 2, 3])
    with pytest.raises(ObjectiveError, match=r"neuron \(3, 0, 0\) is outside layer 'l'"):
        objectives.evaluate(objectives.Neuron("l", (3, 0, 0)), act, {"l": act})

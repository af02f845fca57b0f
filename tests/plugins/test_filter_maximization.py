"""filter_maximization: objectives rise, batching does not matter, torch == Keras, messages."""

from __future__ import annotations

import numpy as np
import pytest

import innersight as ins
from innersight.testing import ReferenceAdapter, check_technique, reference_model

SMALL = {"size": (12, 12, 3)}  # the torch small net declares no input shape
DIGITS = {"size": (32, 32, 1)}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Two intra-op threads on two busy cores make each tiny torch call ~10x slower."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def relative_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Max abs difference relative to the value range of ``b``."""
    return float(np.abs(a - b).max() / (b.max() - b.min()))


def test_every_filter_of_a_pre_relu_layer_rises_far_above_its_start(digits_torch):
    ex = ins.explain("filter_maximization", digits_torch, layer="conv2", progress=False, **DIGITS)
    start, end = np.array(ex.meta["initial_objective"]), np.array(ex.meta["objective"])
    assert ex.values.shape == (32, 32, 32, 1) and ex.values.dtype == np.float32
    # pre-ReLU means start near zero on the gray image, with either sign (-2.6..2.7 measured);
    # every one rises by >= 2 (measured min 2.37: filter 15, which needs a dark pattern) and
    # the median rise is ~20, i.e. >= 5x the largest starting magnitude
    rise = end - start
    assert np.all(rise >= 2.0), rise
    assert np.median(rise) >= 5 * np.abs(start).max()
    assert ex.meta["stalled"] == [] and ex.meta["revived"] == []
    # the objective recorded is the mean of the feature map, recomputed from the images
    acts = ins.wrap(digits_torch).forward(ex.values, taps=["conv2"]).activations["conv2"]
    np.testing.assert_allclose(
        acts[:, 2:-2, 2:-2].mean(axis=(1, 2))[np.arange(32), np.arange(32)], end, rtol=1e-4
    )


def test_relu_layer_filters_that_start_off_are_revived(digits_keras):
    ex = ins.explain("filter_maximization", digits_keras, layer="conv3", progress=False)
    start, end = np.array(ex.meta["initial_objective"]), np.array(ex.meta["objective"])
    alive = start > 0
    stalled = ex.meta["stalled"]
    # measured: 23 of 64 start on and rise >= 22x; 41 start off (objective exactly 0), 39 of
    # them are switched on by the deconvnet gradient; 2 (17 and 26) stay off from gray noise
    assert np.all(end[alive] >= 10 * start[alive])
    revived_on = [f for f in ex.meta["revived"] if f not in stalled]
    assert len(revived_on) >= 35 and np.all(end[revived_on] > 5.0)  # measured min 12.9
    assert len(stalled) <= 4 and np.all(end[stalled] == 0) and np.all(start[stalled] == 0)
    assert set(ex.meta["revived"]) == set(np.flatnonzero(start == 0).tolist())


class NoDeconv(ReferenceAdapter):
    """A reference adapter whose ReLU override fails, as on a model with uncatchable ReLUs."""

    def value_and_grad(self, x, objective, *, relu="plain"):
        if relu != "plain":
            raise ins.CapabilityError("cannot override this model's ReLUs")
        return super().value_and_grad(x, objective, relu=relu)


def test_dead_filters_are_revived_or_reported_as_stalled(small_weights):
    # small net, relu2 from gray noise: filters 0, 1, 3, 4, 5 start exactly off (objective 0)
    kw = {"layer": "relu2", "steps": 20, "progress": False}
    ex = ins.explain("filter_maximization", ReferenceAdapter.from_weights(small_weights), **kw)
    start, end = np.array(ex.meta["initial_objective"]), np.array(ex.meta["objective"])
    assert ex.meta["revived"] == [0, 1, 3, 4, 5] and ex.meta["stalled"] == []
    assert np.all(start[[0, 1, 3, 4, 5]] == 0) and np.all(end > 10)  # measured 15..32
    plain = ins.explain("filter_maximization", NoDeconv.from_weights(small_weights), **kw)
    assert plain.meta["stalled"] == [0, 1, 3, 4, 5] and plain.meta["revived"] == []
    assert plain.meta["objective"][2] == pytest.approx(ex.meta["objective"][2], rel=1e-6)
    np.testing.assert_array_equal(np.array(plain.meta["objective"])[[0, 1, 3, 4, 5]], 0)


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_batched_one_at_a_time_and_subsets_agree(backend, torch_small, keras_small):
    model, layer = (torch_small, "relu2") if backend == "torch" else (keras_small, "conv2")
    kw = {"steps": 30, "jitter": 1, "scale": (0.9, 1.1), "rotate": 5, "progress": False}
    kw.update(SMALL)
    full = ins.explain("filter_maximization", model, layer=layer, **kw)
    one = ins.explain("filter_maximization", model, layer=layer, batch_size=1, **kw)
    np.testing.assert_allclose(one.values, full.values, atol=1e-5)
    sub = ins.explain("filter_maximization", model, layer=layer, filters=[4, 1], **kw)
    np.testing.assert_allclose(sub.values, full.values[[4, 1]], atol=1e-5)
    assert sub.meta["filters"] == [4, 1] and len(full.values) == 6


@pytest.mark.parametrize("steps", [5, 30])
def test_torch_and_keras_give_the_same_images(steps, torch_small, keras_small):
    # float32 round-off differs between the frameworks and normalised steps can amplify it, so
    # agreement is checked for short runs: max |diff| / value range, measured <= 1e-7 here
    k = ins.explain("filter_maximization", keras_small, layer="conv2", steps=steps, progress=False)
    t = ins.explain(
        "filter_maximization", torch_small, layer="relu2", steps=steps, progress=False, **SMALL
    )
    assert relative_diff(t.values, k.values) < 1e-5
    np.testing.assert_allclose(t.meta["objective"], k.meta["objective"], rtol=1e-4, atol=1e-6)


def test_digits_torch_and_keras_agree_with_fft_and_transforms(digits_torch, digits_keras):
    kw = {"filters": [0, 5, 9], "steps": 10, "param": "fft", "jitter": 2, "progress": False}
    k = ins.explain("filter_maximization", digits_keras, layer="conv2", **kw)
    t = ins.explain("filter_maximization", digits_torch, layer="relu2", **kw, **DIGITS)
    assert relative_diff(t.values, k.values) < 1e-4


def test_error_messages(torch_small, keras_small):
    fm = "filter_maximization"
    with pytest.raises(ins.LayerNotFoundError, match="layer 'conv9' not found.*did you mean"):
        ins.explain(fm, keras_small, layer="conv9")
    with pytest.raises(
        ins.InputError, match=r"layer 'fc1' has output shape \(8,\), not a spatial.*conv1, pool1"
    ):
        ins.explain(fm, keras_small, layer="fc1")
    with pytest.raises(ins.InputError, match="steps must be a positive int, got 0"):
        ins.explain(fm, keras_small, layer="conv1", steps=0)
    with pytest.raises(ins.InputError, match="param='dct' is unknown; use one of 'pixel', 'fft'"):
        ins.explain(fm, keras_small, layer="conv1", param="dct")
    with pytest.raises(ins.InputError, match=r"init has shape \(8, 8, 3\), expected \(12, 12, 3\)"):
        ins.explain(fm, keras_small, layer="conv1", init=np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ins.InputError, match=r"filters \[4, 7\] are out of range.*0\.\.3"):
        ins.explain(fm, keras_small, layer="conv1", filters=[0, 4, 7])
    with pytest.raises(ins.InputError, match=r"crop=5 does not fit layer 'conv1' \(10x10\)"):
        ins.explain(fm, keras_small, layer="conv1", crop=5)
    with pytest.raises(ins.InputError, match=r"does not declare its input shape.*size=\(H, W, C\)"):
        ins.explain(fm, torch_small, layer="relu1")


def test_example_inputs_give_the_image_shape_and_range_of_an_undeclared_model(torch_small):
    x = np.random.default_rng(0).random((2, 12, 12, 3), dtype=np.float32)
    ex = ins.explain("filter_maximization", torch_small, x, layer="relu1", steps=3, progress=False)
    sized = ins.explain(
        "filter_maximization",
        torch_small,
        layer="relu1",
        steps=3,
        progress=False,
        value_range=(0, 1),
        **SMALL,
    )
    assert ex.inputs is None and ex.values.shape == (4, 12, 12, 3)
    assert ex.params["value_range"] == [0.0, 1.0]  # x lies in 0..1
    np.testing.assert_array_equal(ex.values, sized.values)  # only the shape and range of x


def test_snapshots_make_an_animated_gif(tmp_path, keras_small):
    from PIL import Image

    ex = ins.explain(
        "filter_maximization",
        keras_small,
        layer="conv1",
        steps=12,
        snapshot_every=4,
        progress=False,
    )
    assert len(ex.meta["frames"]) == 4  # start, steps 4 and 8, end
    np.testing.assert_array_equal(ex.meta["frames"][-1], ex.values)
    path = ex.save(tmp_path / "filters.gif")
    with Image.open(path) as gif:
        assert gif.n_frames == 4 and gif.is_animated
    again = ins.Explanation.load(ex.save(tmp_path / "filters.npz"))
    np.testing.assert_array_equal(again.values, ex.values)
    assert "frames" not in again.meta and again.meta["filters"] == [0, 1, 2, 3]


def test_progress_false_is_silent_and_callbacks_count_filter_steps(
    capsys, monkeypatch, keras_small
):
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # as on a terminal
    kw = {"layer": "conv1", "steps": 3}
    ins.explain("filter_maximization", keras_small, progress=False, **kw)
    assert capsys.readouterr().err == ""
    ins.explain("filter_maximization", keras_small, progress=True, **kw)
    assert "filter_maximization" in capsys.readouterr().err  # one bar, over filter-steps
    calls = []
    ins.explain("filter_maximization", keras_small, progress=lambda *a: calls.append(a), **kw)
    assert calls == [(4, 12), (8, 12), (12, 12)] and capsys.readouterr().err == ""


def test_rendering_tiles_eight_filters_per_row(digits_keras):
    ex = ins.explain("filter_maximization", digits_keras, layer="conv1", steps=3, progress=False)
    image = ex.to_image()
    # 16 filters of 32x32 upscaled to 64x64: 2 rows of 8, 4-pixel gaps and margins
    assert image.shape == (4 + 64 + 4 + 64 + 4, 4 + 8 * 64 + 7 * 4 + 4, 3)
    assert image[4:68, 4:68].std() > 0  # the cells hold pictures, not blank paper


def test_conformance_on_the_reference_and_torch_backends(torch_small, small_weights):
    check_technique("filter_maximization", reference_model("conv"), None, layer="relu1", steps=5)
    adapter = ins.wrap(torch_small, input_shape=(12, 12, 3))
    check_technique("filter_maximization", adapter, None, layer="relu2", steps=5, jitter=1)
    ref = ReferenceAdapter.from_weights(small_weights)
    check_technique("filter_maximization", ref, None, layer="conv2", steps=3, param="fft")

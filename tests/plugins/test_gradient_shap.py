"""gradient_shap: closed forms on a linear model with the draws actually made, Captum's
GradientShap on the same torch model (and on the Keras twin) fed the SAME draws (Captum's
``np.random.choice`` baseline indices, ``np.random.uniform`` alphas and noisy copies are patched
to return innersight's, since the two draw from different generators; its convergence deltas are
compared with ``meta["completeness"]``), torch vs Keras parity, completeness in expectation, and
the error messages.

Relative error everywhere: ``max |ours - reference| / max |reference|``.
"""

from __future__ import annotations

import numpy as np
import pytest

import innersight as ins
from innersight import port
from innersight.plugins import gradient_shap
from innersight.plugins.gradient_shap import GradientShap, draw
from innersight.testing import ReferenceAdapter, check_technique

TARGETS = [0, 1, 2, 0]


@pytest.fixture(scope="module", autouse=True)
def registered():
    """The module through the plugin manager's public API, until core.manager.BUILTIN_PLUGINS
    lists it (then it is registered already and this does nothing)."""
    manager = ins.get_plugin_manager()
    name = gradient_shap.__name__
    added = name not in manager.infos
    if added:
        manager.register(gradient_shap, name, distribution="innersight")
    yield
    if added:
        manager.unregister(name)


def rel_error(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


def all_draws(n: int, samples: int, seed: int, count: int, stdevs: float, shape=(12, 12, 3)):
    """The draws of every copy, row ``i * samples + k`` (Captum's repeat_interleave order)."""
    owner, copy = np.repeat(np.arange(n), samples), np.tile(np.arange(samples), n)
    return owner, draw(seed, owner, copy, shape, count, stdevs)


@pytest.fixture(params=["numpy", "torch", "keras"])
def small(request, small_weights, torch_small, keras_small):
    if request.param == "numpy":
        return ReferenceAdapter.from_weights(small_weights)
    return {"torch": torch_small, "keras": keras_small}[request.param]


@pytest.fixture(scope="module")
def linear_weights() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    return rng.standard_normal((432, 5)).astype(np.float32), np.linspace(-1, 1, 5, dtype=np.float32)


@pytest.fixture(scope="module", params=["torch", "keras"])
def linear(request, linear_weights):
    import keras

    km = keras.Sequential([keras.Input((12, 12, 3)), keras.layers.Flatten(), keras.layers.Dense(5)])
    km.layers[-1].set_weights(list(linear_weights))
    return km if request.param == "keras" else port.keras_to_torch(km)


@pytest.fixture(scope="module")
def distribution() -> np.ndarray:
    return np.random.default_rng(2).random((5, 12, 12, 3), dtype=np.float32)


# -- numbers -----------------------------------------------------------------------------------
def test_linear_model_closed_form_with_the_drawn_baselines_and_noise(
    linear, linear_weights, distribution, images
):
    """score = w . x + b has the gradient w everywhere: the attribution is
    mean_k (x + e_k - b_k) * w, whatever alpha; it adds up to mean_k score(x_k) - score(b_k)."""
    samples, stdevs, seed = 7, 0.05, 4
    w = linear_weights[0][:, TARGETS].T.reshape(4, 12, 12, 3).astype(np.float64)
    owner, d = all_draws(4, samples, seed, len(distribution), stdevs)
    diff = (images[owner] + d.noise - distribution[d.pick]).astype(np.float64)
    expected = diff.reshape(4, samples, 12, 12, 3).mean(axis=1) * w
    ex = ins.explain("gradient_shap", linear, images, baseline=distribution, target=TARGETS,
                     n_samples=samples, stdevs=stdevs, seed=seed, progress=False)  # fmt: skip
    assert rel_error(ex.values, expected) <= 1e-5
    for row in ex.meta["completeness"]:
        assert row["relative_error"] <= 1e-4


def test_one_baseline_without_noise_is_exact_on_a_linear_model(linear, linear_weights, images):
    """A single baseline and stdevs=0: (x - b) * w, the exact integrated gradients."""
    w = linear_weights[0][:, TARGETS].T.reshape(4, 12, 12, 3)
    ex = ins.explain(
        "gradient_shap", linear, images, baseline=0.25, target=TARGETS, n_samples=3, progress=False
    )
    np.testing.assert_allclose(ex.values, (images - 0.25) * w, rtol=1e-5, atol=1e-6)
    mean = ins.explain(
        "gradient_shap",
        linear,
        images,
        baseline="mean",
        target=TARGETS,
        n_samples=3,
        progress=False,
    )
    colour = images.mean(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(mean.values, (images - colour) * w, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", ["torch", "keras"])
@pytest.mark.parametrize("stdevs", [0.0, 0.05])
def test_equals_captum_gradient_shap_on_the_same_draws(
    backend, stdevs, torch_small, keras_small, distribution, images, monkeypatch
):
    import torch
    from captum.attr import GradientShap as CaptumGradientShap
    from captum.attr._core.noise_tunnel import NoiseTunnel as CaptumNoiseTunnel

    samples, seed = 6, 3
    owner, d = all_draws(4, samples, seed, len(distribution), stdevs)
    noisy = images[owner] + d.noise
    monkeypatch.setattr(np.random, "choice", lambda _n, _size: d.pick.copy())
    monkeypatch.setattr(np.random, "uniform", lambda _lo, _hi, _size: d.alpha.astype(np.float64))
    monkeypatch.setattr(
        CaptumNoiseTunnel,
        "_add_noise_to_input",
        staticmethod(
            lambda _input, _stdev, _n: torch.from_numpy(noisy.transpose(0, 3, 1, 2).copy())
        ),
    )
    xt = torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).requires_grad_()
    bt = torch.from_numpy(distribution.transpose(0, 3, 1, 2).copy())
    reference, delta = CaptumGradientShap(torch_small).attribute(
        xt, bt, n_samples=samples, stdevs=stdevs, target=TARGETS, return_convergence_delta=True
    )
    monkeypatch.undo()
    reference = reference.detach().numpy().transpose(0, 2, 3, 1)
    model = torch_small if backend == "torch" else keras_small
    ex = ins.explain("gradient_shap", model, images, baseline=distribution, target=TARGETS, n_samples=samples,
                     stdevs=stdevs, seed=seed, batch_size=5, progress=False)  # fmt: skip
    assert np.abs(reference).max() > 1e-3
    assert rel_error(ex.values, reference) <= 1e-5
    # Captum's delta per copy: sum(a_k) - (score(x_k) - score(b_k)); ours is its mean per input
    ours = np.array([c["sum_attr"] - c["score_diff"] for c in ex.meta["completeness"]])
    captum_delta = delta.detach().numpy().reshape(4, samples).mean(axis=1)
    np.testing.assert_allclose(ours, captum_delta, rtol=1e-4, atol=1e-5)


def test_completeness_holds_in_expectation(torch_small, images):
    """On the ReLU net (one baseline 0, no noise), each copy's total sum(x * grad(alpha_k x))
    is an unbiased estimate of score(x) - score(0): recomputed copy by copy from the drawn
    alphas, its mean is the technique's total, and it lies within 4 standard errors of the
    score difference."""
    samples, seed = 400, 0
    ex = ins.explain(
        "gradient_shap",
        torch_small,
        images,
        target=TARGETS,
        n_samples=samples,
        seed=seed,
        progress=False,
    )
    owner, d = all_draws(4, samples, seed, 1, 0.0)
    adapter = ins.wrap(torch_small)
    points = d.alpha[:, None, None, None] * images[owner]
    _, grads = adapter.value_and_grad(points, ins.objectives.Logit(np.asarray(TARGETS)[owner]))
    per_copy = (images[owner] * grads).reshape(4, samples, -1).sum(axis=2, dtype=np.float64)
    totals = np.array([c["sum_attr"] for c in ex.meta["completeness"]])
    np.testing.assert_allclose(totals, per_copy.mean(axis=1), rtol=1e-5, atol=1e-7)
    diff = np.array([c["score_diff"] for c in ex.meta["completeness"]])
    scores = adapter.forward(np.concatenate([images, 0 * images])).outputs[
        np.arange(8), TARGETS * 2
    ]
    np.testing.assert_allclose(diff, scores[:4] - scores[4:], rtol=1e-5, atol=1e-7)
    standard_error = per_copy.std(axis=1, ddof=1) / np.sqrt(samples)
    assert np.all(np.abs(totals - diff) <= 4 * standard_error)
    assert np.all(standard_error > 0)


@pytest.mark.parametrize("stdevs", [0.0, 0.05])
def test_completeness_scores_each_input_and_baseline_once(
    stdevs, torch_small, distribution, images, monkeypatch
):
    """``meta["completeness"]`` needs score(x_k) - score(b_k) per copy. Without noise x_k is
    the input itself, so the N inputs and the B baselines are each scored once (9 rows here),
    not once per copy (2 x 24 rows): the score differences are still those of the draws made,
    recomputed here from one forward of the inputs and one of the baselines."""
    samples, seed = 6, 3
    adapter = ins.wrap(torch_small)
    rows: list[int] = []
    plain_forward = adapter.forward

    def counting(x, *args, **kwargs):
        if ins.LOGITS in (kwargs.get("taps") or ()):
            rows.append(len(x))
        return plain_forward(x, *args, **kwargs)

    monkeypatch.setattr(adapter, "forward", counting)
    ex = GradientShap().run(adapter, images, baseline=distribution, target=TARGETS,
                            n_samples=samples, stdevs=stdevs, seed=seed, batch_size=5,
                            progress=False)  # fmt: skip
    monkeypatch.undo()
    owner, d = all_draws(4, samples, seed, len(distribution), stdevs)
    assert sum(rows) <= len(images) + len(distribution) + (len(owner) if stdevs else 0)
    logits_x = adapter.forward(images[owner] + d.noise).outputs.astype(np.float64)
    logits_b = adapter.forward(distribution).outputs.astype(np.float64)[d.pick]
    classes = np.asarray(TARGETS)[owner]
    per_copy = logits_x[np.arange(len(owner)), classes] - logits_b[np.arange(len(owner)), classes]
    expected = per_copy.reshape(4, samples).mean(axis=1)
    got = np.array([c["score_diff"] for c in ex.meta["completeness"]])
    assert np.abs(expected).max() > 1e-3
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_torch_and_keras_agree(torch_small, keras_small, distribution, images):
    kw = {"baseline": distribution, "n_samples": 6, "stdevs": 0.05, "progress": False}
    t = ins.explain("gradient_shap", torch_small, images, **kw).values
    k = ins.explain("gradient_shap", keras_small, images, **kw).values
    assert rel_error(k, t) <= 1e-5


def test_batch_size_and_reductions(torch_small, distribution, images):
    kw = {"baseline": distribution, "n_samples": 6, "stdevs": 0.05, "progress": False}
    one = ins.explain("gradient_shap", torch_small, images, batch_size=24, **kw).values
    many = ins.explain("gradient_shap", torch_small, images, batch_size=5, **kw).values
    np.testing.assert_allclose(many, one, rtol=1e-6, atol=1e-9)
    summed = ins.explain("gradient_shap", torch_small, images, reduce_channels="sum", **kw).values
    np.testing.assert_allclose(summed, one.sum(axis=-1), rtol=1e-5, atol=1e-7)


def test_seed_none_is_recorded_and_repeats(torch_small, images):
    fresh = ins.explain(
        "gradient_shap", torch_small, images, seed=None, n_samples=3, progress=False
    )
    again = ins.explain(
        "gradient_shap", torch_small, images, seed=fresh.meta["seed"], n_samples=3, progress=False
    )
    np.testing.assert_array_equal(fresh.values, again.values)


# -- errors --------------------------------------------------------------------------------------
def test_baseline_distribution_messages_and_advice(torch_small, distribution, images):
    with pytest.raises(
        ins.InputError,
        match=r"baseline has shape \(5, 12, 12, 1\): a distribution of baselines must be \(B, 12, 12, 3\) with B >= 1 \(the inputs are \(4, 12, 12, 3\)\)",
    ):
        ins.explain("gradient_shap", torch_small, images, baseline=distribution[..., :1])
    with pytest.raises(ins.InputError, match=r"baseline contains NaN or Inf values"):
        ins.explain("gradient_shap", torch_small, images, baseline=np.full((2, 12, 12, 3), np.nan))
    with pytest.raises(ins.InputError, match=r"baseline='gray' is unknown; pass a number"):
        ins.explain("gradient_shap", torch_small, images, baseline="gray")
    ex = ins.explain(
        "gradient_shap", torch_small, images, baseline=distribution[:2], n_samples=2, progress=False
    )
    assert np.isfinite(ex.values).all() and np.abs(ex.values).max() > 0


def test_parameter_messages(torch_small, images):
    with pytest.raises(
        ins.InputError, match=r"n_samples must be a positive int, got 0; pass e.g. n_samples=25"
    ):
        ins.explain("gradient_shap", torch_small, images, n_samples=0)
    with pytest.raises(
        ins.InputError, match=r"stdevs must be a finite number >= 0, got -1; pass e.g. stdevs=0.1"
    ):
        ins.explain("gradient_shap", torch_small, images, stdevs=-1)


# -- contract ------------------------------------------------------------------------------------
def test_technique_contract_and_model_untouched(small, images):
    check_technique(GradientShap(), ins.wrap(small), images, n_samples=3, target=1)


def test_listed_with_its_order_and_bounded_presets(torch_small):
    from innersight.core import PresetContext

    tech = ins.techniques()["gradient_shap"]
    assert isinstance(tech, GradientShap)
    assert tech.order == 55
    adapter = ins.wrap(torch_small)
    for profile, samples in (("report", 10), ("quick", 8)):
        assert tech.presets(PresetContext(profile, adapter)) == {"n_samples": samples}
    assert tech.presets(PresetContext("full", adapter)) == {}


def test_several_inputs_with_one_baseline_each_is_the_closed_form():
    """Two inputs (a tuple) of the linear reference model F = W_a . a + W_b . b + c, one
    baseline per input: the gradient is W everywhere, so every draw gives (x - b) * W."""
    from innersight.testing import reference_model

    shapes = ((3, 3, 2), (4,))
    model = reference_model("linear", input_shapes=shapes, num_classes=3, seed=1)
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((3, *s)).astype(np.float32) for s in shapes)
    ex = ins.explain("gradient_shap", model, (a, b), target=2, baseline=(0.5, -1.0),
                     n_samples=4, progress=False)  # fmt: skip
    w = model.network.layers[-1].kernel[:, 2]
    np.testing.assert_allclose(ex.values[0], (a - 0.5) * w[:18].reshape(shapes[0]), rtol=1e-5)
    np.testing.assert_allclose(ex.values[1], (b + 1.0) * w[18:], rtol=1e-5)

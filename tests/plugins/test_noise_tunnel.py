"""noise_tunnel: closed forms on a linear model with the noise actually drawn, Captum's
NoiseTunnel on the same torch model (and on the Keras twin) fed the SAME noisy copies (Captum's
``_add_noise_to_input`` is patched to return innersight's copies, since the two draw from
different generators), a brute-force loop over the copies with a third-party base technique,
torch vs Keras parity, and the error messages.

Relative error everywhere: ``max |ours - reference| / max |reference|``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import innersight as ins
from innersight import port
from innersight.core import Explanation, Technique, hookimpl, objectives, resolve_target
from innersight.plugins import input_x_gradient, noise_tunnel
from innersight.plugins.noise_tunnel import NoiseTunnel, noisy_copies
from innersight.testing import ReferenceAdapter, check_technique

TARGETS = [0, 1, 2, 0]
MODULES = (noise_tunnel, input_x_gradient)


@pytest.fixture(scope="module", autouse=True)
def registered():
    """The modules through the plugin manager's public API, until core.manager.BUILTIN_PLUGINS
    lists them (then they are registered already and this does nothing)."""
    manager = ins.get_plugin_manager()
    added = [m.__name__ for m in MODULES if m.__name__ not in manager.infos]
    for module in MODULES:
        if module.__name__ in added:
            manager.register(module, module.__name__, distribution="innersight")
    yield
    for name in added:
        manager.unregister(name)


def rel_error(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


def drawn_noise(x: np.ndarray, samples: int, stdevs: float, seed: int) -> np.ndarray:
    """(N, samples, ...) the noise noise_tunnel adds, by its documented scheme."""
    owner, copy = np.repeat(np.arange(len(x)), samples), np.tile(np.arange(samples), len(x))
    noisy = noisy_copies(x, owner, copy, stdevs, seed)
    return (noisy - x[owner]).reshape(len(x), samples, *x.shape[1:])


@pytest.fixture(params=["numpy", "torch", "keras"])
def small(request, small_weights, torch_small, keras_small):
    if request.param == "numpy":
        return ReferenceAdapter.from_weights(small_weights)
    return {"torch": torch_small, "keras": keras_small}[request.param]


@pytest.fixture(scope="module")
def linear_weights() -> np.ndarray:
    return np.random.default_rng(7).standard_normal((432, 5)).astype(np.float32)


@pytest.fixture(scope="module", params=["torch", "keras"])
def linear(request, linear_weights):
    import keras

    km = keras.Sequential([keras.Input((12, 12, 3)), keras.layers.Flatten(), keras.layers.Dense(5)])
    km.layers[-1].set_weights([linear_weights, np.linspace(-1, 1, 5, dtype=np.float32)])
    return km if request.param == "keras" else port.keras_to_torch(km)


# -- numbers -----------------------------------------------------------------------------------
@pytest.mark.parametrize("base", ["saliency", "input_x_gradient", "guided_backprop"])
def test_zero_noise_repeats_the_base(small, images, base):
    """stdevs=0: every copy is the input, so smoothgrad is the base's map, smoothgrad_sq its
    square and vargrad zero."""
    maps = ins.explain(base, small, images, target=TARGETS).values
    kw = {"base": base, "target": TARGETS, "stdevs": 0.0, "nt_samples": 3, "progress": False}
    mean = ins.explain("noise_tunnel", small, images, nt_type="smoothgrad", **kw).values
    sq = ins.explain("noise_tunnel", small, images, nt_type="smoothgrad_sq", **kw).values
    var = ins.explain("noise_tunnel", small, images, nt_type="vargrad", **kw).values
    assert np.abs(maps).max() > 0
    np.testing.assert_allclose(mean, maps, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(sq, maps.astype(np.float64) ** 2, rtol=1e-6, atol=1e-10)
    assert np.abs(var).max() <= 1e-12 * np.abs(maps).max() ** 2


def test_linear_model_closed_forms_with_the_drawn_noise(linear, linear_weights, images):
    """On score = w . x + b: input_x_gradient of copy k is (x + e_k) * w, so the tunnel gives
    (x + mean_k e_k) * w, mean_k ((x + e_k) * w)^2 and w^2 var_k(e_k); saliency's |w| does
    not move at all (vargrad 0)."""
    samples, stdevs, seed = 6, 0.3, 5
    w = linear_weights[:, TARGETS].T.reshape(4, 12, 12, 3).astype(np.float64)
    e = drawn_noise(images, samples, stdevs, seed).astype(np.float64)
    copies = images[:, None].astype(np.float64) + e
    kw = {"target": TARGETS, "nt_samples": samples, "stdevs": stdevs, "seed": seed}
    expected = {
        "smoothgrad": copies.mean(axis=1) * w,
        "smoothgrad_sq": (copies**2).mean(axis=1) * w**2,
        "vargrad": copies.var(axis=1) * w**2,
    }
    for nt_type, want in expected.items():
        got = ins.explain(
            "noise_tunnel", linear, images, base="input_x_gradient", nt_type=nt_type, **kw
        )
        assert rel_error(got.values, want) <= 1e-5, nt_type
    sal = ins.explain(
        "noise_tunnel",
        linear,
        images,
        base="saliency",
        base_params={"reduce_channels": None},
        nt_type="vargrad",
        **kw,
    )
    assert np.abs(sal.values).max() <= 1e-10


BASES = {  # innersight base and its parameters -> Captum method and its arguments
    "saliency": ({"reduce_channels": None}, "Saliency", {}),
    "input_x_gradient": ({}, "InputXGradient", {}),
    "guided_backprop": ({}, "GuidedBackprop", {}),
    "integrated_gradients": (
        {"method": "gauss_legendre", "steps": 8},
        "IntegratedGradients",
        {"method": "gausslegendre", "n_steps": 8},
    ),
}


@pytest.mark.parametrize("nt_type", ["smoothgrad", "smoothgrad_sq", "vargrad"])
@pytest.mark.parametrize("base", sorted(BASES))
@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_equals_captum_noise_tunnel_on_the_same_copies(
    backend, base, nt_type, torch_small, keras_small, images, monkeypatch
):
    import captum.attr
    import torch
    from captum.attr._core.noise_tunnel import NoiseTunnel as CaptumNoiseTunnel

    samples, stdevs, seed = 5, 0.1, 3
    params, captum_name, captum_kw = BASES[base]
    owner, copy = np.repeat(np.arange(4), samples), np.tile(np.arange(samples), 4)
    noisy = noisy_copies(images, owner, copy, stdevs, seed)
    monkeypatch.setattr(
        CaptumNoiseTunnel,
        "_add_noise_to_input",
        staticmethod(
            lambda _input, _stdev, _n: torch.from_numpy(noisy.transpose(0, 3, 1, 2).copy())
        ),
    )
    xt = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    method = getattr(captum.attr, captum_name)(torch_small)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Captum: "Setting backward hooks on ReLU"
        reference = CaptumNoiseTunnel(method).attribute(
            xt, nt_type=nt_type, nt_samples=samples, stdevs=stdevs, target=TARGETS, **captum_kw
        )
    reference = reference.detach().numpy().transpose(0, 2, 3, 1)
    model = torch_small if backend == "torch" else keras_small
    ex = ins.explain(
        "noise_tunnel", model, images, base=base, base_params=params, target=TARGETS,
        nt_type=nt_type, nt_samples=samples, stdevs=stdevs, seed=seed, batch_size=7, progress=False,
    )  # fmt: skip
    assert np.abs(reference).max() > 1e-6
    assert rel_error(ex.values, reference) <= 1e-5


def test_torch_and_keras_agree(torch_small, keras_small, images):
    kw = {"nt_samples": 6, "stdevs": 0.1, "progress": False}
    t = ins.explain("noise_tunnel", torch_small, images, **kw).values
    k = ins.explain("noise_tunnel", keras_small, images, **kw).values
    assert rel_error(k, t) <= 1e-5


def test_batch_size_does_not_change_the_result(torch_small, images):
    kw = {"base": "input_x_gradient", "nt_samples": 6, "nt_type": "vargrad", "progress": False}
    one = ins.explain("noise_tunnel", torch_small, images, batch_size=24, **kw).values
    many = ins.explain("noise_tunnel", torch_small, images, batch_size=5, **kw).values
    np.testing.assert_allclose(many, one, rtol=1e-6, atol=1e-12)


# -- any technique as base, one call per chunk ---------------------------------------------------
class SignedGradient(Technique):
    """A third-party gradient technique: the signed gradient summed over channels."""

    name = "test_signed_gradient"
    summary = "Signed gradient summed over channels (a test plugin)."
    requires = frozenset({"input_gradients"})

    def __init__(self) -> None:
        self.batches: list[int] = []

    def explain(self, model, inputs, *, target=None):
        self.batches.append(len(inputs))
        targets = resolve_target(model, inputs, target)
        _, grads = model.value_and_grad(inputs, objectives.Logit(targets))
        return Explanation(self.name, "heatmap", grads.sum(axis=-1), inputs)


@pytest.fixture
def third_party():
    tech = SignedGradient()

    class Plugin:
        @hookimpl
        def innersight_register_techniques(self):
            return [tech]

    manager = ins.get_plugin_manager()
    manager.register(Plugin(), "test-signed-gradient", distribution="test-plugin")
    yield tech
    manager.unregister("test-signed-gradient")


def test_third_party_base_one_call_per_chunk_equals_a_loop(third_party, torch_small, images):
    samples, stdevs, seed = 6, 0.2, 1
    kw = {"base": third_party.name, "target": TARGETS, "nt_samples": samples, "stdevs": stdevs}
    ex = ins.explain(
        "noise_tunnel", torch_small, images, nt_type="vargrad", batch_size=8, seed=seed, **kw
    )
    assert third_party.batches == [8, 8, 8]  # 24 copies, three calls, not 24
    owner, copy = np.repeat(np.arange(4), samples), np.tile(np.arange(samples), 4)
    noisy = noisy_copies(images, owner, copy, stdevs, seed)
    adapter = ins.wrap(torch_small)
    loop = np.stack([
        third_party.explain(adapter, noisy[r : r + 1], target=[TARGETS[owner[r]]]).values[0]
        for r in range(len(noisy))
    ]).reshape(4, samples, 12, 12).astype(np.float64)  # fmt: skip
    np.testing.assert_allclose(ex.values, loop.var(axis=1), rtol=1e-5, atol=1e-12)
    assert rel_error(ex.values, loop.var(axis=1)) <= 1e-5


def test_a_random_base_gets_its_own_seed_per_chunk(torch_small, images):
    """smoothgrad as the base: reproducible for one seed, different for another."""
    kw = {
        "base": "smoothgrad",
        "base_params": {"samples": 2},
        "nt_samples": 4,
        "batch_size": 4,
        "progress": False,
    }
    a = ins.explain("noise_tunnel", torch_small, images, seed=1, **kw).values
    b = ins.explain("noise_tunnel", torch_small, images, seed=1, **kw).values
    c = ins.explain("noise_tunnel", torch_small, images, seed=2, **kw).values
    np.testing.assert_array_equal(a, b)
    assert rel_error(c, a) > 1e-3


def test_seed_none_is_recorded_and_repeats(torch_small, images):
    fresh = ins.explain(
        "noise_tunnel", torch_small, images, seed=None, nt_samples=3, progress=False
    )
    again = ins.explain(
        "noise_tunnel", torch_small, images, seed=fresh.meta["seed"], nt_samples=3, progress=False
    )
    np.testing.assert_array_equal(fresh.values, again.values)


# -- errors --------------------------------------------------------------------------------------
def test_unknown_base_message_and_advice(torch_small, images):
    with pytest.raises(
        ins.TechniqueNotFoundError,
        match=r"noise_tunnel: no technique named 'salency' to use as base; available: .*saliency.*; did you mean 'saliency'",
    ):
        ins.explain("noise_tunnel", torch_small, images, base="salency")
    assert ins.explain(
        "noise_tunnel", torch_small, images, base="saliency", nt_samples=2
    ).values.shape == (4, 12, 12)


def test_base_params_messages_and_advice(torch_small, images):
    with pytest.raises(
        ins.InputError,
        match=r"base_params must not set 'target': pass target= to noise_tunnel itself",
    ):
        ins.explain("noise_tunnel", torch_small, images, base_params={"target": 1})
    with pytest.raises(
        ins.InputError,
        match=r"base_params: technique 'saliency' has no parameter 'reduce_channel'; valid parameters: reduce_channels, progress, seed; did you mean 'reduce_channels'",
    ):
        ins.explain("noise_tunnel", torch_small, images, base_params={"reduce_channel": None})
    with pytest.raises(
        ins.InputError,
        match=r"base_params must be a dict of the base technique's parameters, got list",
    ):
        ins.explain("noise_tunnel", torch_small, images, base_params=["reduce_channels"])
    ex = ins.explain(
        "noise_tunnel",
        torch_small,
        images,
        target=1,
        base_params={"reduce_channels": None},
        nt_samples=2,
    )
    assert ex.values.shape == images.shape


def test_base_that_returns_no_per_input_map_is_refused(torch_small, images):
    with pytest.raises(
        ins.InputError,
        match=r"noise_tunnel: base technique 'activation_grid' returned kind 'layer_grid' with values dict for 2 inputs; noise_tunnel smooths techniques that return one map per input \(kind 'heatmap'\), e.g. base='saliency'",
    ):
        ins.explain(
            "noise_tunnel",
            torch_small,
            images[:1],
            base="activation_grid",
            nt_samples=2,
            batch_size=2,
        )
    with pytest.raises(
        ins.InputError,
        match=r"noise_tunnel: base='class_maximization' does not explain a batch of inputs",
    ):
        ins.explain("noise_tunnel", torch_small, images, base="class_maximization")


def test_base_capabilities_are_checked_with_advice(small_weights, images):
    """An adapter without relu_override: guided_backprop cannot be the base, saliency can."""
    from innersight.core import Capability

    class NoOverride(ReferenceAdapter):
        capabilities = ReferenceAdapter.capabilities - {Capability.RELU_OVERRIDE}

    adapter = NoOverride.from_weights(small_weights)
    with pytest.raises(
        ins.CapabilityError,
        match=r"noise_tunnel's base technique 'guided_backprop' needs relu_override, which the "
        r"numpy adapter for .* does not provide \(it provides .*\); pick one that needs only",
    ):
        ins.explain("noise_tunnel", adapter, images, base="guided_backprop")
    ex = ins.explain("noise_tunnel", adapter, images, base="saliency", nt_samples=2)
    assert np.abs(ex.values).max() > 0

    class NoGradients(ReferenceAdapter):
        capabilities = frozenset({Capability.FORWARD, Capability.LAYER_TAPS})

    assert NoiseTunnel().missing_capabilities(NoGradients.from_weights(small_weights)) == [
        "input_gradients"
    ]


def test_parameter_messages(torch_small, images):
    with pytest.raises(
        ins.InputError,
        match=r"nt_type='smooth' is unknown; use one of 'smoothgrad', 'smoothgrad_sq', 'vargrad'",
    ):
        ins.explain("noise_tunnel", torch_small, images, nt_type="smooth")
    with pytest.raises(
        ins.InputError,
        match=r"stdevs must be a finite number >= 0, got -0.1; pass e.g. stdevs=0.15",
    ):
        ins.explain("noise_tunnel", torch_small, images, stdevs=-0.1)
    with pytest.raises(
        ins.InputError, match=r"nt_samples must be a positive int, got 0; pass e.g. nt_samples=25"
    ):
        ins.explain("noise_tunnel", torch_small, images, nt_samples=0)


# -- contract ------------------------------------------------------------------------------------
def test_technique_contract_and_model_untouched(small, images):
    check_technique(NoiseTunnel(), ins.wrap(small), images, nt_samples=3, target=1)


def test_listed_with_its_order_and_bounded_presets(torch_small, images):
    from innersight.core import PresetContext

    tech = ins.techniques()["noise_tunnel"]
    assert isinstance(tech, NoiseTunnel)
    assert tech.order == 45
    adapter = ins.wrap(torch_small)
    for profile, samples in (("report", 10), ("quick", 8)):
        assert tech.presets(PresetContext(profile, adapter)) == {"nt_samples": samples}
    assert tech.presets(PresetContext("full", adapter)) == {}
    assert tech.missing_capabilities(adapter) == []

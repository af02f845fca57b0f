"""guided_grad_cam: the nearest-neighbour rule against torch's interpolate, Captum's
GuidedGradCam (nearest and bilinear) on the same torch model and on the Keras twin, a second
computation from guided_backprop and grad_cam, torch vs Keras parity, and its error messages.

Relative error everywhere: ``max |ours - reference| / max |reference|``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import innersight as ins
from innersight.plugins import guided_grad_cam
from innersight.plugins.grad_cam import upsample_bilinear
from innersight.plugins.guided_grad_cam import GuidedGradCAM, upsample_nearest
from innersight.testing import ReferenceAdapter, check_technique

TARGETS = [0, 1, 2, 0]
#: The small net's last conv block: torch's relu2 is Keras' conv2 (ReLU fused).
LAYER = {"torch": "relu2", "keras": "conv2"}


@pytest.fixture(scope="module", autouse=True)
def registered():
    """The module through the plugin manager's public API, until core.manager.BUILTIN_PLUGINS
    lists it (then it is registered already and this does nothing)."""
    manager = ins.get_plugin_manager()
    name = guided_grad_cam.__name__
    added = name not in manager.infos
    if added:
        manager.register(guided_grad_cam, name, distribution="innersight")
    yield
    if added:
        manager.unregister(name)


def rel_error(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


def test_nearest_upsampling_by_hand():
    cam = np.array([[[1.0, 2.0], [3.0, 4.0]]])
    np.testing.assert_array_equal(
        upsample_nearest(cam, (4, 4))[0], np.kron(cam[0], np.ones((2, 2)))
    )
    np.testing.assert_array_equal(upsample_nearest(cam, (3, 2))[0], [[1, 2], [1, 2], [3, 4]])


def test_nearest_upsampling_is_torchs_index_rule():
    """Every map size 1..12 to every output size 1..130, on float32 maps (as Captum's on a
    float32 model). Among them are sizes where torch's float32 ``floor(j * (h / H))`` is one
    less than the exact ``floor(j * h / H)`` (2 -> 82 at j = 41): the rule must be torch's."""
    import torch

    rng = np.random.default_rng(0)
    differs = 0
    for h in range(1, 13):
        for size in range(1, 131):
            maps = rng.standard_normal((1, h, h + 1)).astype(np.float32)
            ref = torch.nn.functional.interpolate(
                torch.from_numpy(maps)[:, None], size=(size, size + 3), mode="nearest"
            )[:, 0].numpy()
            np.testing.assert_array_equal(upsample_nearest(maps, (size, size + 3)), ref)
            exact = np.minimum(np.arange(size) * h // size, h - 1)
            differs += not np.array_equal(exact, guided_grad_cam.nearest_index(size, h))
    assert differs > 0


def captum_guided_grad_cam(torch_small, images, mode):
    import torch
    from captum.attr import GuidedGradCam

    xt = torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Captum: "Setting backward hooks on ReLU"
        attr = GuidedGradCam(torch_small, torch_small.relu2).attribute(
            xt, target=TARGETS, interpolate_mode=mode
        )
    return attr.detach().numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_equals_captum_guided_grad_cam(backend, mode, torch_small, keras_small, images):
    """Captum on the torch model at relu2 (3x3 -> 12x12); ours on it and its Keras twin."""
    reference = captum_guided_grad_cam(torch_small, images, mode)
    model = torch_small if backend == "torch" else keras_small
    ex = ins.explain(
        "guided_grad_cam",
        model,
        images,
        target=TARGETS,
        layer=LAYER[backend],
        interpolate_mode=mode,
    )
    assert np.abs(reference).max() > 1e-4
    assert rel_error(ex.values, reference) <= 1e-5


def test_default_layer_is_grad_cams(torch_small, keras_small, images):
    for backend, model in (("torch", torch_small), ("keras", keras_small)):
        ex = ins.explain("guided_grad_cam", model, images, target=TARGETS)
        cam = ins.explain("grad_cam", model, images, target=TARGETS)
        assert ex.meta["layer"] == cam.meta["layer"] == LAYER[backend]
        assert ex.meta["layer_rule"] == cam.meta["layer_rule"]
        np.testing.assert_allclose(ex.meta["cam"], cam.meta["cam"], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_is_guided_backprop_times_upsampled_grad_cam(mode, small_weights, images):
    """A second computation from the two techniques it combines (numpy reference adapter)."""
    model = ReferenceAdapter.from_weights(small_weights)
    guided = ins.explain("guided_backprop", model, images, target=TARGETS).values
    cam = np.asarray(
        ins.explain("grad_cam", model, images, target=TARGETS, layer="relu2").meta["cam"]
    )
    resize = upsample_nearest if mode == "nearest" else upsample_bilinear
    expected = guided * resize(cam, (12, 12))[..., None]
    ex = ins.explain(
        "guided_grad_cam", model, images, target=TARGETS, layer="relu2", interpolate_mode=mode
    )
    assert np.abs(expected).max() > 0
    np.testing.assert_allclose(ex.values, expected, rtol=1e-5, atol=1e-7)


def test_torch_and_keras_agree(torch_small, keras_small, images):
    t = ins.explain("guided_grad_cam", torch_small, images).values
    k = ins.explain("guided_grad_cam", keras_small, images).values
    assert rel_error(k, t) <= 1e-5


def test_unknown_interpolate_mode_message_and_advice(torch_small, images):
    with pytest.raises(
        ins.InputError,
        match=r"interpolate_mode='bicubic' is unknown; use one of 'nearest', 'bilinear'",
    ):
        ins.explain("guided_grad_cam", torch_small, images, interpolate_mode="bicubic")
    ex = ins.explain("guided_grad_cam", torch_small, images, interpolate_mode="bilinear")
    assert ex.params["interpolate_mode"] == "bilinear"


def test_layer_without_a_map_message_and_advice(torch_small, images):
    with pytest.raises(
        ins.InputError,
        match=r"guided_grad_cam needs a layer with a spatial \(H, W, C\) output; 'fc1' gives \(8,\)\. "
        r"Spatial layers: conv1, relu1, pool1, conv2, relu2; leave layer=None to use the last one, 'relu2'",
    ):
        ins.explain("guided_grad_cam", torch_small, images, layer="fc1")
    assert ins.explain("guided_grad_cam", torch_small, images, layer=None).meta["layer"] == "relu2"


def test_vector_inputs_are_refused_with_advice():
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)
    ).eval()
    x = np.random.default_rng(0).random((2, 6), dtype=np.float32)
    with pytest.raises(
        ins.CapabilityError,
        match=r"technique 'guided_grad_cam' takes images \(N, H, W, C\); got tabular rows "
        r"\(N, F\)\. Techniques that take tabular inputs: .*guided_backprop",
    ):
        ins.explain("guided_grad_cam", model, x)
    assert ins.explain("guided_backprop", model, x, target=0).values.shape == (2, 6)


@pytest.mark.parametrize("backend", ["numpy", "torch", "keras"])
def test_technique_contract_and_model_untouched(
    backend, small_weights, torch_small, keras_small, images
):
    model = {
        "numpy": ReferenceAdapter.from_weights(small_weights),
        "torch": torch_small,
        "keras": keras_small,
    }[backend]
    check_technique(GuidedGradCAM(), ins.wrap(model), images, target=1)


def test_listed_with_its_order():
    tech = ins.techniques()["guided_grad_cam"]
    assert isinstance(tech, GuidedGradCAM)
    assert tech.order == 72
    assert tech.requires == frozenset({"input_gradients", "relu_override", "layer_gradients"})

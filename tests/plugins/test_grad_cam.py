"""Grad-CAM: against plain torch autograd, the CAM closed form, and across backends."""

from __future__ import annotations

import numpy as np
import pytest

import innersight as ins
from innersight.core import Capability
from innersight.plugins.grad_cam import upsample_bilinear
from innersight.testing import ReferenceAdapter, check_technique, reference_model
from tests.models import KERAS_TO_TORCH

BACKENDS = ["numpy", "torch", "keras"]
SPATIAL = {
    "numpy": "conv1, relu1, pool1, conv2, relu2",
    "torch": "conv1, relu1, pool1, conv2, relu2",
    "keras": "conv1, pool1, conv2",
}


@pytest.fixture(params=BACKENDS)
def small(request, small_weights, torch_small, keras_small):
    if request.param == "numpy":
        return ReferenceAdapter.from_weights(small_weights)
    return {"torch": torch_small, "keras": keras_small}[request.param]


def torch_grad_cam(net, images, layer, targets, relu=True):
    """Grad-CAM written out with a forward hook and torch.autograd, nothing from innersight."""
    import torch
    import torch.nn.functional as F

    seen = {}
    handle = net.get_submodule(layer).register_forward_hook(lambda m, i, o: seen.update(a=o))
    try:
        x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
        logits = net(x)
        score = logits[torch.arange(len(x)), torch.as_tensor(targets)].sum()
        (grad,) = torch.autograd.grad(score, [seen["a"]])
    finally:
        handle.remove()
    acts = seen["a"].detach()
    cam = (grad.mean(dim=(2, 3), keepdim=True) * acts).sum(dim=1)
    if relu:
        cam = cam.clamp(min=0)
    up = F.interpolate(cam[:, None], size=images.shape[1:3], mode="bilinear", align_corners=False)
    return cam.double().numpy(), up[:, 0].double().numpy()


@pytest.mark.parametrize("layer", ["relu2", "conv2", "pool1", "relu1"])
@pytest.mark.parametrize("relu", [True, False])
def test_matches_plain_torch_autograd(torch_small, images, layer, relu):
    targets = [0, 1, 2, 1]
    cam, up = torch_grad_cam(torch_small, images, layer, targets, relu=relu)
    ex = ins.explain("grad_cam", torch_small, images, layer=layer, target=targets, relu=relu)
    assert np.abs(up).max() > 3e-3  # maps peak at 0.003-0.02: atol 1e-7 is tight (measured 4e-9)
    np.testing.assert_allclose(ex.values, up, atol=1e-7, rtol=1e-5)
    np.testing.assert_allclose(np.array(ex.meta["cam"]), cam, atol=1e-7, rtol=1e-5)
    assert ex.values.shape == (4, 12, 12) and ex.values.dtype == np.float32
    if not relu:
        assert ex.values.min() < 0


def test_default_layer_is_the_last_spatial_one(small, images):
    ex = ins.explain("grad_cam", small, images)
    assert ex.meta["layer"] == SPATIAL[ins.wrap(small).backend].split(", ")[-1]
    pred = ins.wrap(small).predict_classes(images)
    assert ex.meta["target"] == pred.tolist()
    np.testing.assert_array_equal(
        ex.values,
        ins.explain("grad_cam", small, images, layer=ex.meta["layer"], target=pred).values,
    )


def test_torch_keras_and_numpy_agree(small_weights, torch_small, keras_small, images):
    """Same weights, same maps: to 5e-7 on maps peaking at 0.007-0.024 (measured 2e-8)."""
    ref = ReferenceAdapter.from_weights(small_weights)
    for k_layer in ("conv1", "pool1", "conv2"):
        t_layer = KERAS_TO_TORCH[k_layer]
        k = ins.explain("grad_cam", keras_small, images, layer=k_layer, target=2)
        t = ins.explain("grad_cam", torch_small, images, layer=t_layer, target=2)
        n = ins.explain("grad_cam", ref, images, layer=t_layer, target=2)
        assert np.abs(k.values).max() > 5e-3
        np.testing.assert_allclose(t.values, k.values, atol=5e-7, rtol=1e-5)
        np.testing.assert_allclose(n.values, k.values, atol=5e-7, rtol=1e-5)
        np.testing.assert_allclose(
            np.array(t.meta["weights"]), np.array(k.meta["weights"]), atol=5e-7, rtol=1e-5
        )


def test_global_average_pooling_model_gives_cam_closed_form(images):
    """conv -> relu -> global average pool -> dense: Grad-CAM is the CAM of Zhou et al. (2016),
    relu(sum_c W[c, t] A_c) / (h * w), on both frameworks."""
    import keras
    import torch

    rng = np.random.default_rng(11)
    kernel = (rng.standard_normal((3, 3, 3, 5)) * 0.5).astype(np.float32)
    dense = rng.standard_normal((5, 4)).astype(np.float32)
    km = keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            keras.layers.Conv2D(5, 3, activation="relu", name="conv"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(4, name="fc"),
        ]
    )
    km.get_layer("conv").set_weights([kernel, np.zeros(5, np.float32)])
    km.get_layer("fc").set_weights([dense, np.zeros(4, np.float32)])
    tm = torch.nn.Sequential(
        torch.nn.Conv2d(3, 5, 3),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(5, 4),
    ).eval()
    with torch.no_grad():
        tm[0].weight.copy_(torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()))
        tm[0].bias.zero_()
        tm[4].weight.copy_(torch.from_numpy(dense.T.copy()))
        tm[4].bias.zero_()
    targets = np.array([0, 1, 2, 3])
    for model, layer in ((km, "conv"), (tm, "1")):
        adapter = ins.wrap(model)
        acts = adapter.forward(images, taps=[layer]).activations[layer].astype(np.float64)
        expected = np.maximum(np.einsum("nhwc,cn->nhw", acts, dense[:, targets]), 0) / 100
        ex = ins.explain("grad_cam", adapter, images, layer=layer, target=targets)
        assert expected.max() > 1e-3
        np.testing.assert_allclose(np.array(ex.meta["cam"]), expected, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(
            np.array(ex.meta["weights"]), dense[:, targets].T / 100, rtol=1e-5
        )


@pytest.mark.parametrize(
    ("size_in", "size_out"),
    [((3, 3), (12, 12)), ((5, 4), (12, 9)), ((7, 7), (4, 5)), ((1, 1), (3, 3))],
)
def test_bilinear_upsampling_matches_torch(size_in, size_out):
    torch = pytest.importorskip("torch")
    maps = np.random.default_rng(0).standard_normal((2, *size_in))
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(maps)[:, None], size=size_out, mode="bilinear", align_corners=False
    )
    np.testing.assert_allclose(
        upsample_bilinear(maps, size_out), expected[:, 0].numpy(), rtol=1e-12, atol=1e-12
    )


def test_signed_map_relus_to_the_default(small, images):
    signed = ins.explain("grad_cam", small, images, target=1, relu=False)
    plain = ins.explain("grad_cam", small, images, target=1)
    np.testing.assert_allclose(
        np.maximum(np.array(signed.meta["cam"]), 0),
        np.array(plain.meta["cam"]),
        rtol=1e-6,
        atol=1e-7,
    )


def test_non_spatial_layer_names_the_spatial_ones(small, images):
    backend = ins.wrap(small).backend
    last = SPATIAL[backend].split(", ")[-1]
    with pytest.raises(
        ins.InputError,
        match=rf"grad_cam needs a layer with a spatial \(H, W, C\) output; 'fc1' gives \(8,\)\. "
        rf"Spatial layers: {SPATIAL[backend]}; leave layer=None to use the last one, '{last}'",
    ):
        ins.explain("grad_cam", small, images, layer="fc1")


def test_unknown_layer_and_bad_parameters(small, images):
    with pytest.raises(ins.LayerNotFoundError, match=r"layer 'conv9' not found .*did you mean"):
        ins.explain("grad_cam", small, images, layer="conv9")
    with pytest.raises(
        ins.InputError, match=r"layer must be a layer name \(str\) or None, got int"
    ):
        ins.explain("grad_cam", small, images, layer=3)
    with pytest.raises(ins.InputError, match=r"relu must be True or False, got 'no'"):
        ins.explain("grad_cam", small, images, relu="no")


def test_model_without_spatial_layers(images):
    linear = reference_model("linear", input_shape=(12, 12, 3))
    with pytest.raises(
        ins.InputError,
        match=r"numpy model reference_linear has no layer with a spatial \(H, W, C\) output",
    ):
        ins.explain("grad_cam", linear, images)


def test_adapter_without_layer_gradients_is_refused(small_weights, images):
    class NoLayerGradients(ReferenceAdapter):
        capabilities = ReferenceAdapter.capabilities - {Capability.LAYER_GRADIENTS}

    adapter = NoLayerGradients(ReferenceAdapter.from_weights(small_weights).network)
    with pytest.raises(ins.CapabilityError, match="technique 'grad_cam' needs layer_gradients"):
        ins.explain("grad_cam", adapter, images)


def test_torch_shapes_unknown_before_a_pass(small_weights, images):
    """A fresh torch adapter knows no output shape yet; the default layer is still found."""
    from tests.models import torch_small

    adapter = ins.wrap(torch_small(small_weights))
    assert all(info.output_shape == () for info in adapter.layers())
    ex = ins.explain("grad_cam", adapter, images, target=0)
    assert ex.meta["layer"] == "relu2"


def test_conformance(small, images):
    check_technique("grad_cam", ins.wrap(small), images[:3])
    check_technique(
        "grad_cam",
        ins.wrap(small),
        images[:3],
        layer=SPATIAL[ins.wrap(small).backend].split(", ")[0],
        relu=False,
    )

"""The CAM family's errors (each message, and that its advice works), its capabilities, the
default layer without gradients, and the presets of the gradient CAMs and Eigen-CAM."""

from __future__ import annotations

import numpy as np
import pytest

import innersight as ins
from innersight.core import Capability, PresetContext
from innersight.plugins import eigen_cam, grad_cam_plus_plus, layer_cam, score_cam
from innersight.testing import ReferenceAdapter

pytest.importorskip("torch")

MODULES = {
    "grad_cam_plus_plus": grad_cam_plus_plus,
    "score_cam": score_cam,
    "layer_cam": layer_cam,
    "eigen_cam": eigen_cam,
}
NAMES = sorted(MODULES)


@pytest.fixture(scope="module")
def registered():
    """The four techniques in ``innersight.explain`` (registered here until the built-in list
    names them)."""
    manager = ins.get_plugin_manager()
    added = [f"tests:{name}" for name in NAMES if name not in ins.techniques()]
    for key in added:
        manager.register(MODULES[key.split(":")[1]], key)
    yield
    for key in added:
        manager.unregister(key)


def explain(name, model, x, **params):
    if name == "score_cam":
        params.setdefault("progress", False)
    return ins.explain(name, model, x, **params)


@pytest.mark.parametrize("name", NAMES)
def test_a_layer_without_a_map_names_the_spatial_ones(registered, torch_small, images, name):
    with pytest.raises(
        ins.InputError,
        match=rf"^{name} needs a layer with a spatial \(H, W, C\) output; 'fc1' gives \(8,\)\. "
        r"Spatial layers: conv1, relu1, pool1, conv2, relu2; leave layer=None to use the last "
        r"one, 'relu2'$",
    ):
        explain(name, torch_small, images, layer="fc1")
    assert explain(name, torch_small, images).meta["layer"] == "relu2"  # the advice


@pytest.mark.parametrize("name", NAMES)
def test_grayscale_images_without_a_channel_axis(registered, digits_torch, digits, name):
    x = digits.x_test[:2, :, :, 0]  # (2, 32, 32)
    tech = ins.techniques()[name]
    with pytest.raises(
        ins.InputError,
        match=rf"^{name} explains images \(N, H, W, C\), got inputs of shape \(2, 32, 32\); add "
        r"a channel axis to grayscale images with x\[\.\.\., None\]$",
    ):
        tech.run(ins.wrap(digits_torch), x, progress=False)
    assert explain(name, digits_torch, x[..., None]).values.shape == (2, 32, 32)


@pytest.mark.parametrize("name", NAMES)
def test_bad_layer_and_relu(registered, torch_small, images, name):
    with pytest.raises(
        ins.InputError,
        match=r"^layer must be a layer name \(str\) or None, got int; pass e\.g\. "
        r"layer='conv3', or None for Grad-CAM's default layer$",
    ):
        explain(name, torch_small, images, layer=3)
    with pytest.raises(ins.InputError, match=r"^relu must be True or False, got 'no'$"):
        explain(name, torch_small, images, relu="no")
    with pytest.raises(ins.LayerNotFoundError, match=r"layer 'relu9' not found .*did you mean"):
        explain(name, torch_small, images, layer="relu9")
    assert explain(name, torch_small, images, layer="relu1", relu=False).meta["layer"] == "relu1"


def test_score_cam_parameters(registered, torch_small, images):
    cases = [
        ({"score": "prob"}, r"^score='prob' is unknown; use one of 'logit', 'probability'$"),
        (
            {"max_channels": 0},
            r"^max_channels must be a positive int, got 0; pass e\.g\. max_channels=32$",
        ),
        (
            {"batch_size": "big"},
            r"^batch_size must be a positive int or 'auto', got 'big'; pass e\.g\. batch_size=32$",
        ),
        ({"batch_size": 0}, r"^batch_size must be a positive int or 'auto', got 0"),
    ]
    for params, message in cases:
        with pytest.raises(ins.InputError, match=message):
            explain("score_cam", torch_small, images, **params)
    ex = explain(
        "score_cam", torch_small, images, score="probability", max_channels=32, batch_size=32
    )
    assert ex.meta["masked_inputs"] == 4 * 6  # 32 >= the 6 channels of relu2: all of them


def test_eigen_cam_sign(registered, torch_small, images):
    with pytest.raises(ins.InputError, match=r"^sign='flip' is unknown; use one of 'max', 'svd'$"):
        explain("eigen_cam", torch_small, images, sign="flip")
    assert explain("eigen_cam", torch_small, images, sign="svd").params["sign"] == "svd"


@pytest.mark.parametrize("name", ["grad_cam_plus_plus", "layer_cam"])
def test_gradient_cams_need_layer_gradients(registered, small_weights, images, name):
    class NoLayerGradients(ReferenceAdapter):
        capabilities = ReferenceAdapter.capabilities - {Capability.LAYER_GRADIENTS}

    adapter = NoLayerGradients(ReferenceAdapter.from_weights(small_weights).network)
    with pytest.raises(ins.CapabilityError, match=f"technique '{name}' needs layer_gradients"):
        explain(name, adapter, images)


class ForwardOnly:
    """An adapter without layer gradients (nor input gradients): forward and taps only."""

    def __init__(self, inner) -> None:
        self._inner = inner
        self.capabilities = frozenset({Capability.FORWARD, Capability.LAYER_TAPS})

    def __getattr__(self, name):
        if name in ("layer_value_and_grad", "value_and_grad"):
            raise AttributeError(name)
        return getattr(self._inner, name)


@pytest.mark.parametrize("name", ["score_cam", "eigen_cam"])
def test_gradient_free_cams_default_layer_without_gradients(name):
    """On a ViT the default probes gradients; without them, the last token layer (the final
    norm), said so in the rule; on a convnet, Grad-CAM's rule needs no gradient anyway."""
    from tests.realarch.subjects import make_subject

    vit = make_subject("vit_tiny")
    tech = {"score_cam": score_cam.ScoreCAM, "eigen_cam": eigen_cam.EigenCAM}[name]()
    params = {"progress": False, "max_channels": 4} if name == "score_cam" else {}
    ex = tech.run(ForwardOnly(ins.wrap(vit.model)), vit.x, **params)
    assert ex.meta["layer"] == "norm"
    assert "the adapter gives no layer gradients" in ex.meta["layer_rule"]
    given = tech.run(ins.wrap(vit.model), vit.x, layer="norm", **params)
    np.testing.assert_allclose(ex.values, given.values, rtol=1e-6)


@pytest.mark.parametrize("name", ["grad_cam_plus_plus", "layer_cam", "eigen_cam"])
def test_one_pass_techniques_need_no_preset(torch_small, name):
    tech = {
        "grad_cam_plus_plus": grad_cam_plus_plus.GradCAMPlusPlus,
        "layer_cam": layer_cam.LayerCAM,
        "eigen_cam": eigen_cam.EigenCAM,
    }[name]()
    for profile in ins.core.PROFILES:
        assert tech.presets(PresetContext(profile, ins.wrap(torch_small))) == {}
    assert 74 <= tech.order <= 78

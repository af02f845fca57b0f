"""The CAM family against pytorch-grad-cam's recipe, written out here with torch hooks.

pytorch-grad-cam needs torchvision, which does not load beside the CPU torch wheel, so its
recipe is transcribed from its source (``base_cam.py``, ``grad_cam_plusplus.py``,
``score_cam.py``, ``layer_cam.py``, ``eigen_cam.py``, ``utils/svd_on_activations.py``,
``utils/image.py``) as numpy and torch code that uses nothing from innersight: a forward hook
records the layer's output (after ``reshape_transform``), ``torch.autograd.grad`` its gradient
(``loss.backward()`` there: the same numbers, without touching the parameters' ``.grad``), the
channel weights and maps are its formulas on NCHW float32 arrays, and its ``scale_cam_image``
(min-max, then ``cv2.resize``: bilinear with half-pixel centres, which is
``F.interpolate(align_corners=False)`` when upsampling) gives its output.

Compared: innersight's ``meta["cam"]`` with the recipe's map before ``scale_cam_image``,
innersight's ``values`` with that map upsampled, and the recipe's own output with
``scale_cam_image`` of innersight's map: max |a - b| / max |b| <= 1e-5 everywhere (measured
numbers in the docstrings of the tests).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

import innersight as ins
from innersight.plugins.eigen_cam import EigenCAM
from innersight.plugins.grad_cam_plus_plus import GradCAMPlusPlus
from innersight.plugins.layer_cam import LayerCAM
from innersight.plugins.score_cam import ScoreCAM

torch = pytest.importorskip("torch")
F = torch.nn.functional

TECHNIQUES = {
    "grad_cam_plus_plus": GradCAMPlusPlus,
    "score_cam": ScoreCAM,
    "layer_cam": LayerCAM,
    "eigen_cam": EigenCAM,
}
#: Agreement bound: max |innersight - recipe| / max |recipe|.
REL = 1e-5


# -- pytorch-grad-cam's recipe ----------------------------------------------------------------
def vit_reshape(tensor, height=8, width=8):
    """pytorch-grad-cam's ViT ``reshape_transform`` (its docs): drop the class token, NCHW."""
    result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
    return result.transpose(2, 3).transpose(1, 2)


def recipe_activations(net, module, x_nhwc, targets, reshape=None, gradients=True):
    """``ActivationsAndGradients``: the module's output and d(sum of target outputs)/d(output),
    after ``reshape`` (NCHW), as float32 numpy; and the model's outputs."""
    seen = {}
    handle = module.register_forward_hook(lambda m, i, o: seen.__setitem__("out", o))
    try:
        x = torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2).copy())
        outputs = net(x)
    finally:
        handle.remove()
    out = seen["out"]
    transform = reshape or (lambda t: t)
    acts = transform(out).detach().numpy()
    if not gradients:
        return acts, None, outputs.detach()
    loss = sum(o[t] for o, t in zip(outputs, targets, strict=True))
    (grad,) = torch.autograd.grad(loss, [out])
    return acts, transform(grad).numpy(), outputs.detach()


def recipe_grad_cam_plus_plus_weights(activations, grads):
    """``GradCAMPlusPlus.get_cam_weights``, verbatim."""
    grads_power_2 = grads**2
    grads_power_3 = grads_power_2 * grads
    sum_activations = np.sum(activations, axis=(2, 3))
    eps = 0.000001
    aij = grads_power_2 / (
        2 * grads_power_2 + sum_activations[:, :, None, None] * grads_power_3 + eps
    )
    aij = np.where(grads != 0, aij, 0)
    weights = np.maximum(grads, 0) * aij
    return np.sum(weights, axis=(2, 3))


def recipe_score_cam_weights(net, x_nhwc, targets, activations, batch_size=16):
    """``ScoreCAM.get_cam_weights``: a loop per input, chunks of 16 channels."""
    input_tensor = torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        upsample = torch.nn.UpsamplingBilinear2d(size=input_tensor.shape[-2:])
        upsampled = upsample(torch.from_numpy(activations))
        maxs = upsampled.view(upsampled.size(0), upsampled.size(1), -1).max(dim=-1)[0]
        mins = upsampled.view(upsampled.size(0), upsampled.size(1), -1).min(dim=-1)[0]
        maxs, mins = maxs[:, :, None, None], mins[:, :, None, None]
        upsampled = (upsampled - mins) / (maxs - mins + 1e-8)
        input_tensors = input_tensor[:, None, :, :] * upsampled[:, :, None, :, :]
        scores = []
        for target, tensor in zip(targets, input_tensors, strict=True):
            for i in range(0, tensor.size(0), batch_size):
                batch = tensor[i : i + batch_size, :]
                scores.extend([o[target].cpu().item() for o in net(batch)])
        scores = torch.Tensor(scores).view(activations.shape[0], activations.shape[1])
        return torch.nn.Softmax(dim=-1)(scores).numpy()


def recipe_2d_projection(activation_batch):
    """``utils.svd_on_activations.get_2d_projection``, verbatim."""
    activation_batch = activation_batch.copy()
    activation_batch[np.isnan(activation_batch)] = 0
    projections = []
    for activations in activation_batch:
        reshaped_activations = (activations).reshape(activations.shape[0], -1).transpose()
        reshaped_activations = reshaped_activations - reshaped_activations.mean(axis=0)
        U, S, VT = np.linalg.svd(reshaped_activations, full_matrices=True)  # noqa: RUF059
        projection = reshaped_activations @ VT[0, :]
        projection = projection.reshape(activations.shape[1:])
        projections.append(projection)
    return np.float32(projections)


def recipe_2d_projection_with_sign_correction(activation_batch):
    """``utils.svd_on_activations.get_2d_projection_with_sign_correction`` (Seg-Eigen-CAM)."""
    activation_batch = activation_batch.copy()
    activation_batch[np.isnan(activation_batch)] = 0
    projections = []
    for activations in activation_batch:
        reshaped = activations.reshape(activations.shape[0], -1).transpose()
        reshaped = reshaped - reshaped.mean(axis=0)
        _, _, VT = np.linalg.svd(reshaped, full_matrices=True)
        projection = reshaped @ VT[0, :]
        projection = projection.reshape(activations.shape[1:])
        if abs(projection.min()) > abs(projection.max()):
            projection = -projection
        projections.append(projection)
    return np.float32(projections)


def recipe_cam(method, net, module, x_nhwc, targets, reshape=None):
    """The map ``compute_cam_per_layer`` takes to ``scale_cam_image``: (N, h, w), rectified.
    ``eigen_cam`` is the sign-corrected projection (innersight's default ``sign="max"``)."""
    grads_needed = method in ("grad_cam_plus_plus", "layer_cam")
    acts, grads, _ = recipe_activations(net, module, x_nhwc, targets, reshape, grads_needed)
    if method == "grad_cam_plus_plus":
        weights = recipe_grad_cam_plus_plus_weights(acts, grads)
        cam = (weights[:, :, None, None] * acts).sum(axis=1)
    elif method == "score_cam":
        weights = recipe_score_cam_weights(net, x_nhwc, targets, acts)
        cam = (weights[:, :, None, None] * acts).sum(axis=1)
    elif method == "layer_cam":
        cam = (np.maximum(grads, 0) * acts).sum(axis=1)
    else:
        cam = recipe_2d_projection_with_sign_correction(acts)
    return np.maximum(cam, 0)


def resize(maps, size):
    """cv2.resize(INTER_LINEAR) upsampling = bilinear, half-pixel centres, edges clamped."""
    out = F.interpolate(torch.from_numpy(np.float32(maps))[:, None], size=size, mode="bilinear")
    return out[:, 0].numpy()


def scale_cam_image(cam, size=None):
    """``utils.image.scale_cam_image``: each map to 0..1, then resized."""
    result = []
    for img in cam:
        img = img - np.min(img)
        img = img / (1e-7 + np.max(img))
        result.append(img)
    result = np.float32(result)
    return resize(result, size) if size is not None else result


def recipe_output(cam, size):
    """What pytorch-grad-cam returns for one target layer: ``scale_cam_image`` per layer,
    then ``aggregate_multi_layers`` (a mean over one layer, rectified, scaled again)."""
    per_layer = np.maximum(scale_cam_image(cam, size)[:, None], 0)
    return scale_cam_image(np.mean(per_layer, axis=1))


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def check_against_recipe(ex, ref, size) -> float:
    """Map, upsampled values and pytorch-grad-cam's output all within REL; the worst error."""
    errors = [
        rel_err(ex.meta["cam"], ref),
        rel_err(ex.values, resize(ref, size)),
        rel_err(
            recipe_output(np.asarray(ex.meta["cam"], np.float32), size), recipe_output(ref, size)
        ),
    ]
    assert max(errors) <= REL, errors
    return max(errors)


def run(name: str, model, x, targets, **params):
    """``name`` on ``model`` with ``target=targets`` (Eigen-CAM has no target)."""
    if name != "eigen_cam":
        params["target"] = targets
    return TECHNIQUES[name]().run(ins.wrap(model), x, progress=False, **params)


METHODS = sorted(TECHNIQUES)


# -- the tests --------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("layer", ["relu1", "relu2"])
def test_small_net_matches_the_recipe(torch_small, images, method, layer):
    """The tests' small conv net at a 10x10 and a 3x3 layer: measured worst 4.4e-7."""
    targets = [0, 1, 2, 1]
    ref = recipe_cam(method, torch_small, torch_small.get_submodule(layer), images, targets)
    ex = run(method, torch_small, images, targets, layer=layer)
    assert np.abs(ref).max() > 1e-3 and (ref > 0).mean() > 0.1  # a real map, not all zero
    check_against_recipe(ex, ref, images.shape[1:3])


@pytest.mark.parametrize("method", METHODS)
def test_trained_digits_cnn_matches_the_recipe(digits_torch, digits, method):
    """The demo's trained digits CNN at relu3 (8x8x64), three test digits: worst 4.8e-7."""
    x, y = digits.x_test[1:4], digits.y_test[1:4]
    ref = recipe_cam(method, digits_torch, digits_torch.get_submodule("relu3"), x, y)
    ex = run(method, digits_torch, x, y, layer="relu3")
    assert ex.values.shape == (3, 32, 32) and ex.values.dtype == np.float32
    check_against_recipe(ex, ref, (32, 32))


@pytest.mark.parametrize("method", METHODS)
def test_vit_tokens_match_the_recipe_with_its_reshape_transform(method):
    """ViT: the default layer is Grad-CAM's (``blocks.1.norm1``, pytorch-grad-cam's advice) and
    ``reshape`` lays tokens out as the recipe's ``reshape_transform`` does: worst 2.5e-6 to
    3.9e-6 (Score-CAM; its chunks, and so the float32 rounding, vary with the timing)."""
    from tests.realarch.subjects import make_subject

    subject = make_subject("vit_tiny")
    model, x, targets = subject.model, subject.x, [3, 7]
    ex = run(method, model, x, targets)
    grad_cam = ins.explain("grad_cam", model, x, target=targets)
    assert ex.meta["layer"] == grad_cam.meta["layer"] == "blocks.1.norm1"
    assert ex.meta["layer_rule"] == grad_cam.meta["layer_rule"]
    assert ex.meta["reshape"] == {"how": "auto", "tokens": 65, "dropped_tokens": 1, "grid": [8, 8]}
    ref = recipe_cam(method, model, model.blocks[1].norm1, x, targets, reshape=vit_reshape)
    check_against_recipe(ex, ref, (32, 32))
    assert ins.testing.diff(subject.before, ins.testing.snapshot(subject.native)) == []


@pytest.mark.parametrize("method", ["grad_cam_plus_plus", "layer_cam", "eigen_cam"])
def test_resnet_layer4_matches_the_recipe(method):
    """A torchvision ResNet-18 replica at ``layer4`` (its default, pytorch-grad-cam's
    ``model.layer4[-1]``) on 64x64 inputs: worst 1.3e-7."""
    from tests.realarch.subjects import make_subject

    subject = make_subject("resnet18_tv")
    model, x, targets = subject.model, subject.x, [1, 4]
    ex = run(method, model, x, targets)
    assert ex.meta["layer"] == "layer4"
    ref = recipe_cam(method, model, model.layer4[-1], x, targets)
    check_against_recipe(ex, ref, (64, 64))


def test_the_recipe_is_not_grad_cam(torch_small, images):
    """The four recipes differ from Grad-CAM and from each other on the same layer, so the
    agreement above is not one formula checked four times."""
    maps: dict[str, Callable] = {}
    for method in METHODS:
        maps[method] = recipe_cam(method, torch_small, torch_small.relu1, images, [0, 1, 2, 1])
    maps["grad_cam"] = np.asarray(
        ins.explain("grad_cam", torch_small, images, layer="relu1", target=[0, 1, 2, 1]).meta["cam"]
    )
    names = sorted(maps)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert rel_err(scale_cam_image(maps[a]), scale_cam_image(maps[b])) > 0.05, (a, b)


@pytest.mark.parametrize("subject", ["digits", "vit_tiny"])
def test_eigen_cam_svd_sign_is_lapacks_as_in_pytorch_grad_cam(subject, digits):
    """``sign="svd"``: on the very activations pytorch-grad-cam reads, its ``EigenCAM`` map,
    sign included (measured 6e-7); through the adapter, whose activations differ from a plain
    forward by rounding (3.8e-6 on the digits CNN), the same map up to a sign per input. That
    sign is LAPACK's and may flip under such rounding (measured here: it flips the second
    digit), which is why ``sign="max"`` is the default."""
    from innersight.plugins.eigen_cam import first_component
    from tests.realarch.subjects import make_subject

    if subject == "digits":
        from innersight.models import digits_cnn

        model, x, reshape = digits_cnn("torch"), digits.x_test[1:4], None
        module = model.relu3
    else:
        vit = make_subject("vit_tiny")
        model, x, reshape, module = vit.model, vit.x, vit_reshape, vit.model.blocks[1].norm1
    acts, _, _ = recipe_activations(model, module, x, None, reshape, gradients=False)
    ref = recipe_2d_projection(acts)
    assert rel_err(first_component(acts.transpose(0, 2, 3, 1))[0], ref) <= REL
    layer = "relu3" if subject == "digits" else None
    signed = np.asarray(
        EigenCAM().run(ins.wrap(model), x, layer=layer, sign="svd", relu=False).meta["cam"]
    )
    for ours, theirs in zip(signed, ref, strict=True):
        assert min(rel_err(ours, theirs), rel_err(-ours, theirs)) <= REL

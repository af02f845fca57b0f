"""Regenerate every picture of the technique pages (docs/techniques/*.md) into docs/images/.

    .venv/bin/python docs/make_images.py            # all pictures
    .venv/bin/python docs/make_images.py saliency   # only those whose name starts with "saliency"

Everything comes from the demo digits CNN (``innersight.models.digits_cnn``, 99% on the held-out
digits) and its seeded test split, so the pictures are reproducible: every technique that draws
random numbers gets ``seed=0``. torch computes everything; Keras (TensorFlow) is loaded only for
the side-by-side pictures that show the two frameworks giving the same result. The whole run
takes well under two minutes on two CPU cores.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
import torch  # before TensorFlow: the other order can crash on some builds

import innersight as ins
from innersight.core.render import colorize, normalise, png_bytes, tile, to_uint8, upscale
from innersight.models import digits_cnn, digits_data, torch_name
from innersight.models.architectures import DIGITS_SPEC
from innersight.plugins.grad_cam import upsample_bilinear
from innersight.plugins.renderers import display_inputs, stack, titled

OUT = Path(__file__).resolve().parent / "images"
SHOW = [1, 2, 3]  # test digits 5, 9 and 2
SIDE = 96  # pixels per map in the composite pictures

torch.set_num_threads(1)  # tiny model, shared cores: one intra-op thread is the fastest


class Context:
    """The models and data, built once and only when a picture needs them."""

    def __init__(self) -> None:
        self.data = digits_data()
        self.x = self.data.x_test[SHOW]
        self.y = self.data.y_test[SHOW]
        # The torch CNN declares no input shape; the adapter learns it from this option.
        self.torch = ins.wrap(digits_cnn("torch"), input_shape=(32, 32, 1))
        self._keras = None

    @property
    def keras(self):
        if self._keras is None:
            self._keras = digits_cnn("keras")
        return self._keras


def save(name: str, image: np.ndarray) -> None:
    (OUT / f"{name}.png").write_bytes(png_bytes(image))


def heat(maps: np.ndarray, *, signed: bool) -> list[np.ndarray]:
    """(N, H, W) maps -> coloured uint8 panels, each map scaled on its own (as the renderer)."""
    policy = "symmetric" if signed else "per_map"
    colours = to_uint8(colorize(normalise(maps, policy), signed=signed))
    return [upscale(c, SIDE) for c in colours]


def columns(inputs: np.ndarray, named_maps: list[tuple[str, np.ndarray, bool]]) -> np.ndarray:
    """One row per input: the input, then each named map; a title above each column."""
    shown = [upscale(img, SIDE) for img in display_inputs(inputs)]
    cols = [("input", shown)] + [(t, heat(m, signed=s)) for t, m, s in named_maps]
    gap = 4
    blocks = []
    for title, panels in cols:
        blocks.append(titled(tile(panels, per_row=1, gap=gap), title))
    return side_by_side(blocks, gap=gap + 2)


def side_by_side(images: list[np.ndarray], *, gap: int = 8) -> np.ndarray:
    """Images left to right, top-aligned, on white."""
    height = max(img.shape[0] for img in images)
    width = sum(img.shape[1] for img in images) + gap * (len(images) - 1)
    out = np.full((height, width, 3), 255, np.uint8)
    x = 0
    for img in images:
        out[: img.shape[0], x : x + img.shape[1]] = img
        x += img.shape[1] + gap
    return out


# -- one function per picture ---------------------------------------------------------------
def activation_grid(ctx: Context) -> np.ndarray:
    ex = ins.explain("activation_grid", ctx.torch, ctx.x[:1], layers=["relu1", "relu2", "relu3"])
    return ex.to_image()


def saliency(ctx: Context) -> np.ndarray:
    return ins.explain("saliency", ctx.torch, ctx.x, target=ctx.y).to_image()


def guided_backprop(ctx: Context) -> np.ndarray:
    logit = ins.objectives.Logit(ctx.y)
    _, plain = ctx.torch.value_and_grad(ctx.x, logit)
    _, deconv = ctx.torch.value_and_grad(ctx.x, logit, relu="deconv")
    guided = ins.explain("guided_backprop", ctx.torch, ctx.x, target=ctx.y).values
    maps = [("gradient", plain, True), ("deconv", deconv, True), ("guided", guided, True)]
    return columns(ctx.x, [(t, m[..., 0], s) for t, m, s in maps])


def occlusion(ctx: Context) -> np.ndarray:
    maps = []
    for window, stride in ((4, 2), (8, 2), (16, 4)):
        ex = ins.explain(
            "occlusion",
            ctx.torch,
            ctx.x,
            target=ctx.y,
            window=window,
            stride=stride,
            progress=False,
        )
        maps.append((f"window={window}", ex.values, True))
    return columns(ctx.x, maps)


def smoothgrad(ctx: Context) -> np.ndarray:
    plain = ins.explain("saliency", ctx.torch, ctx.x, target=ctx.y).values
    maps = [("saliency", plain, False)]
    for noise in (0.1, 0.2):
        ex = ins.explain(
            "smoothgrad", ctx.torch, ctx.x, target=ctx.y, noise=noise, samples=50, progress=False
        )
        maps.append((f"noise={noise}", ex.values, False))
    sq = ins.explain(
        "smoothgrad", ctx.torch, ctx.x, target=ctx.y, samples=50, magnitude=True, progress=False
    )
    maps.append(("magnitude=True", sq.values, False))
    return columns(ctx.x, maps)


def integrated_gradients(ctx: Context) -> np.ndarray:
    maps = []
    for baseline in (0.0, "mean"):
        ex = ins.explain(
            "integrated_gradients",
            ctx.torch,
            ctx.x,
            target=ctx.y,
            baseline=baseline,
            reduce_channels="sum",
            progress=False,
        )
        maps.append((f"baseline={baseline!r}", ex.values, True))
    return columns(ctx.x, maps)


def grad_cam(ctx: Context) -> np.ndarray:
    maps = []
    for layer in ("relu2", "relu3", "pool3"):
        ex = ins.explain("grad_cam", ctx.torch, ctx.x, target=ctx.y, layer=layer)
        maps.append((f"layer={layer!r}", ex.values, False))
    return columns(ctx.x, maps)


def filter_maximization(ctx: Context) -> np.ndarray:
    keras_layer = "conv2"  # Keras fuses the ReLU into conv2; torch's twin is relu2
    kw = {"filters": list(range(16)), "progress": False}
    t = ins.explain(
        "filter_maximization", ctx.torch, layer=torch_name(DIGITS_SPEC, keras_layer), **kw
    )
    k = ins.explain("filter_maximization", ctx.keras, layer=keras_layer, **kw)
    return stack(
        [
            titled(t.to_image(per_row=16), "torch, layer='relu2', filters 0-15"),
            titled(k.to_image(per_row=16), "keras, layer='conv2', filters 0-15"),
        ]
    )


def class_maximization(ctx: Context) -> np.ndarray:
    t = ins.explain("class_maximization", ctx.torch, progress=False)
    k = ins.explain("class_maximization", ctx.keras, progress=False)
    return stack(
        [
            titled(t.to_image(per_row=10), "torch, classes 0-9"),
            titled(k.to_image(per_row=10), "keras, classes 0-9"),
        ]
    )


def embeddings(ctx: Context) -> np.ndarray:
    x, y = ctx.data.x_test, ctx.data.y_test
    pca = ins.explain("embeddings", ctx.torch, x, labels=y, progress=False)
    tsne = ins.explain("embeddings", ctx.torch, x, labels=y, method="tsne", progress=False)
    return side_by_side([pca.to_image(size=4.0), tsne.to_image(size=4.0)], gap=0)


def input_x_gradient(ctx: Context) -> np.ndarray:
    _, grads = ctx.torch.value_and_grad(ctx.x, ins.objectives.Logit(ctx.y))
    ixg = ins.explain("input_x_gradient", ctx.torch, ctx.x, target=ctx.y).values
    return columns(
        ctx.x, [("gradient", grads[..., 0], True), ("input x gradient", ixg[..., 0], True)]
    )


def deconvolution(ctx: Context) -> np.ndarray:
    _, plain = ctx.torch.value_and_grad(ctx.x, ins.objectives.Logit(ctx.y))
    deconv = ins.explain("deconvolution", ctx.torch, ctx.x, target=ctx.y).values
    guided = ins.explain("guided_backprop", ctx.torch, ctx.x, target=ctx.y).values
    maps = [("gradient", plain, True), ("deconvolution", deconv, True), ("guided", guided, True)]
    return columns(ctx.x, [(t, m[..., 0], s) for t, m, s in maps])


def guided_grad_cam(ctx: Context) -> np.ndarray:
    guided = ins.explain("guided_backprop", ctx.torch, ctx.x, target=ctx.y).values
    cam = ins.explain("grad_cam", ctx.torch, ctx.x, target=ctx.y).values
    maps = [("guided", guided[..., 0], True), ("grad_cam", cam, False)]
    for mode in ("nearest", "bilinear"):
        ex = ins.explain("guided_grad_cam", ctx.torch, ctx.x, target=ctx.y, interpolate_mode=mode)
        maps.append((mode, ex.values[..., 0], True))
    return columns(ctx.x, maps)


def noise_tunnel(ctx: Context) -> np.ndarray:
    plain = ins.explain("saliency", ctx.torch, ctx.x, target=ctx.y).values
    maps = [("saliency", plain, False)]
    kw = {"target": ctx.y, "nt_samples": 50, "stdevs": 0.15, "progress": False}
    for nt_type in ("smoothgrad", "smoothgrad_sq", "vargrad"):
        ex = ins.explain("noise_tunnel", ctx.torch, ctx.x, nt_type=nt_type, **kw)
        maps.append((nt_type, ex.values, False))
    ixg = ins.explain("noise_tunnel", ctx.torch, ctx.x, base="input_x_gradient", **kw)
    maps.append(("input x gradient", ixg.values[..., 0], True))
    return columns(ctx.x, maps)


def gradient_shap(ctx: Context) -> np.ndarray:
    ig = ins.explain("integrated_gradients", ctx.torch, ctx.x, target=ctx.y, progress=False)
    maps = [("integrated_gradients", ig.values[..., 0], True)]
    for title, baseline in (("shap: black", 0.0), ("shap: 32 digits", ctx.data.x_train[:32])):
        ex = ins.explain(
            "gradient_shap",
            ctx.torch,
            ctx.x,
            target=ctx.y,
            baseline=baseline,
            n_samples=50,
            progress=False,
        )
        maps.append((title, ex.values[..., 0], True))
    return columns(ctx.x, maps)


def _cam_layers(ctx: Context, technique: str, **params: Any) -> np.ndarray:
    maps = []
    for layer in ("relu2", "relu3", "pool3"):
        ex = ins.explain(technique, ctx.torch, ctx.x, layer=layer, **params)
        maps.append((f"layer={layer!r}", ex.values, False))
    return columns(ctx.x, maps)


def grad_cam_plus_plus(ctx: Context) -> np.ndarray:
    return _cam_layers(ctx, "grad_cam_plus_plus", target=ctx.y)


def score_cam(ctx: Context) -> np.ndarray:
    return _cam_layers(ctx, "score_cam", target=ctx.y, progress=False)


def layer_cam(ctx: Context) -> np.ndarray:
    return _cam_layers(ctx, "layer_cam", target=ctx.y)


def eigen_cam(ctx: Context) -> np.ndarray:
    return _cam_layers(ctx, "eigen_cam")


def _perturbation_maps(ctx: Context, name: str, **params: Any) -> np.ndarray:
    maps = []
    masks = (
        ("grid=4", {"grid": 4}),
        ("grid=8", {"grid": 8}),
        ("slic", {"feature_mask": "slic", "segments": 40}),
    )
    for title, mask in masks:
        ex = ins.explain(name, ctx.torch, ctx.x, target=ctx.y, progress=False, **mask, **params)
        maps.append((title, ex.values, True))
    return columns(ctx.x, maps)


def feature_ablation(ctx: Context) -> np.ndarray:
    return _perturbation_maps(ctx, "feature_ablation")


def kernel_shap(ctx: Context) -> np.ndarray:  # grid=8 with 1000 coalitions, the others "auto"
    maps = []
    for title, params in (
        ("grid=4", {"grid": 4}),
        ("grid=8", {"grid": 8, "n_samples": 1000}),
        ("slic", {"feature_mask": "slic", "segments": 40}),
    ):
        ex = ins.explain(
            "kernel_shap", ctx.torch, ctx.x, target=ctx.y, seed=0, progress=False, **params
        )
        maps.append((title, ex.values, True))
    return columns(ctx.x, maps)


def lime(ctx: Context) -> np.ndarray:
    return _perturbation_maps(ctx, "lime", seed=0)


def _layer_maps(ctx: Context, technique: str, **params: Any) -> np.ndarray:
    maps = []
    for layer in ("relu2", "relu3", "pool3"):
        ex = ins.explain(technique, ctx.torch, ctx.x, layer=layer, **params)
        summed = ex.values.astype(np.float64).sum(axis=-1)
        maps.append((f"layer={layer!r}", upsample_bilinear(summed, ctx.x.shape[1:3]), True))
    return columns(ctx.x, maps)


def layer_gradient_x_activation(ctx: Context) -> np.ndarray:
    return _layer_maps(ctx, "layer_gradient_x_activation", target=ctx.y)


def layer_conductance(ctx: Context) -> np.ndarray:
    return _layer_maps(ctx, "layer_conductance", target=ctx.y, progress=False)


def _neuron_maps(ctx: Context, technique: str, **params: Any) -> np.ndarray:
    maps = []
    for layer in ("relu2", "relu3", "pool3"):
        ex = ins.explain(technique, ctx.torch, ctx.x, layer=layer, **params)
        h, w, c = ex.meta["neuron"][0]
        maps.append((f"{layer} ({h}, {w}, {c})", ex.values[..., 0], True))
    return columns(ctx.x, maps)


def neuron_gradient(ctx: Context) -> np.ndarray:
    return _neuron_maps(ctx, "neuron_gradient")


def neuron_integrated_gradients(ctx: Context) -> np.ndarray:
    return _neuron_maps(ctx, "neuron_integrated_gradients", progress=False)


def layer_integrated_gradients(ctx: Context) -> np.ndarray:
    return _layer_maps(ctx, "layer_integrated_gradients", target=ctx.y, steps=16, progress=False)


def deeplift(ctx: Context) -> np.ndarray:
    ig = ins.explain("integrated_gradients", ctx.torch, ctx.x, target=ctx.y, progress=False)
    maps = [("integrated_gradients", ig.values[..., 0], True)]
    for baseline in (0.0, "blur"):
        ex = ins.explain("deeplift", ctx.torch, ctx.x, target=ctx.y, baseline=baseline)
        maps.append((f"baseline={baseline!r}", ex.values[..., 0], True))
    return columns(ctx.x, maps)


def deeplift_shap(ctx: Context) -> np.ndarray:
    lift = ins.explain("deeplift", ctx.torch, ctx.x, target=ctx.y)
    maps = [("deeplift: black", lift.values[..., 0], True)]
    for title, model in (("shap: 32 (torch)", ctx.torch), ("shap: 32 (keras)", ctx.keras)):
        base = ctx.data.x_train[:32]
        ex = ins.explain("deeplift_shap", model, ctx.x, target=ctx.y, baseline=base)
        maps.append((title, ex.values[..., 0], True))
    return columns(ctx.x, maps)


def lrp(ctx: Context) -> np.ndarray:
    maps = [
        (
            name,
            ins.explain(
                "lrp", ctx.torch, ctx.x, target=ctx.y, composite=name, low=0.0, high=1.0
            ).values,
            True,
        )
        for name in ("epsilon_plus", "epsilon_gamma_box", "epsilon_alpha2_beta1")
    ]
    return columns(ctx.x, maps)


PICTURES: dict[str, Callable[[Context], np.ndarray]] = {
    f.__name__: f
    for f in (
        activation_grid,
        saliency,
        guided_backprop,
        occlusion,
        smoothgrad,
        integrated_gradients,
        grad_cam,
        filter_maximization,
        class_maximization,
        embeddings,
        input_x_gradient,
        deconvolution,
        guided_grad_cam,
        noise_tunnel,
        gradient_shap,
        grad_cam_plus_plus,
        score_cam,
        layer_cam,
        eigen_cam,
        feature_ablation,
        kernel_shap,
        lime,
        layer_gradient_x_activation,
        layer_conductance,
        neuron_gradient,
        neuron_integrated_gradients,
        layer_integrated_gradients,
        deeplift,
        deeplift_shap,
        lrp,
    )
}


def main(prefixes: list[str]) -> None:
    OUT.mkdir(exist_ok=True)
    start = time.perf_counter()
    ctx = Context()
    for name, make in PICTURES.items():
        if prefixes and not any(name.startswith(p) for p in prefixes):
            continue
        t0 = time.perf_counter()
        image = make(ctx)
        save(name, image)
        size = (OUT / f"{name}.png").stat().st_size
        print(
            f"{name + '.png':28} {image.shape[1]:4}x{image.shape[0]:<4} {size / 1024:6.1f} KB "
            f"{time.perf_counter() - t0:5.1f} s"
        )
    print(f"total {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main(sys.argv[1:])

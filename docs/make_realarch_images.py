"""Regenerate the pictures of docs/real-architectures.md into docs/images/realarch_*.png.

    .venv/bin/python docs/make_realarch_images.py            # all pictures
    .venv/bin/python docs/make_realarch_images.py vit        # only realarch_vit*.png

The models are the small replicas of tests/realarch/replicas_torch.py (ResNet-18, MobileNetV3,
EfficientNet, ConvNeXt, ViT, Swin, RegNetX, DenseNet patterns) with seeded RANDOM weights: the
pictures show which layer innersight picks and how tensors are read, not what a trained network
has learned. The input is a synthetic picture (a disc and a bar on a gradient), the same every
run. torch only; a few seconds on two CPU cores.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.realarch holds the replicas

from tests.realarch.replicas_torch import build  # noqa: E402

import innersight as ins  # noqa: E402
from innersight.core.render import colorize, normalise, png_bytes, to_uint8, upscale  # noqa: E402
from innersight.plugins.renderers import display_inputs, titled  # noqa: E402

OUT = ROOT / "docs" / "images"
SIDE = 128  # pixels per panel

torch.set_num_threads(1)


def scene(size: int) -> np.ndarray:
    """(1, size, size, 3) in 0..1: a red disc upper left, a blue bar lower right, on a
    grey-green gradient."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.stack([0.3 + 0.2 * xx, 0.4 + 0.2 * yy, 0.35 + 0.0 * xx], axis=-1)
    disc = (yy - 0.3) ** 2 + (xx - 0.3) ** 2 < 0.04
    img[disc] = (0.9, 0.2, 0.15)
    bar = (yy > 0.65) & (yy < 0.8) & (xx > 0.45) & (xx < 0.9)
    img[bar] = (0.15, 0.25, 0.85)
    return img[None].astype(np.float32)


def heat(map2d: np.ndarray, *, signed: bool = False) -> np.ndarray:
    """One (h, w) map -> a coloured uint8 panel, SIDE pixels or more."""
    policy = "symmetric" if signed else "per_map"
    colours = to_uint8(colorize(normalise(map2d[None], policy), signed=signed))[0]
    return upscale(colours, SIDE)


def row(panels: list[tuple[str, np.ndarray]], gap: int = 6) -> np.ndarray:
    """Titled panels left to right, top-aligned, on white."""
    shown = [titled(img, title) for title, img in panels]
    height = max(p.shape[0] for p in shown)
    width = sum(p.shape[1] for p in shown) + gap * (len(shown) - 1)
    out = np.full((height, width, 3), 255, np.uint8)
    x = 0
    for p in shown:
        out[: p.shape[0], x : x + p.shape[1]] = p
        x += p.shape[1] + gap
    return out


def the_input(x: np.ndarray) -> np.ndarray:
    return upscale(display_inputs(x)[0], SIDE)


# -- one function per picture ---------------------------------------------------------------
def realarch_grad_cam_defaults() -> np.ndarray:
    """Grad-CAM with no layer= on eight replicas: the layer it picked, the map at input size."""
    names = ["resnet18_tv", "mobilenetv3_small", "efficientnet_b0", "regnetx_002"]
    names += ["convnext", "densenet121", "vit_tiny", "swin_like"]
    rows = []
    for half in (names[:4], names[4:]):
        panels = []
        for name in half:
            model = build(name)
            x = scene(64 if name not in ("vit_tiny", "swin_like", "efficientnet_b0") else 32)
            ex = ins.explain("grad_cam", model, x, target=0, relu=False)
            panels.append((f"{name}: {ex.meta['layer']}", heat(ex.values[0], signed=True)))
        rows.append(row(panels))
    return vstack([row([("input", the_input(scene(64)))]), *rows])


def realarch_resnet_zero_gamma() -> np.ndarray:
    """ResNet-18 replica: the last conv of the last block (gamma of its BN is zero) vs layer4."""
    model, x = build("resnet18_tv"), scene(64)
    panels = [("input", the_input(x))]
    for layer in ("layer4.1.conv2", "layer4"):
        ex = ins.explain("grad_cam", model, x, target=0, layer=layer, relu=False)
        empty = " (all zero)" if not np.any(ex.values) else ""
        panels.append((f"layer={layer!r}{empty}", heat(ex.values[0], signed=True)))
    return row(panels)


def realarch_convnext_layouts() -> np.ndarray:
    """One channel of a Linear inside a ConvNeXt block (an (N, H, W, C) tensor): read as
    channels-last by innersight, equal to the 1x1-conv twin; read as NCHW, a wrong picture."""
    x, layer = scene(64), "stages.1.blocks.0.mlp.fc2"
    nhwc, nchw = build("convnext"), build("convnext_convmlp")
    a = ins.wrap(nhwc).forward(x, taps=[layer]).activations[layer][0]
    b = ins.wrap(nchw).forward(x, taps=[layer]).activations[layer][0]
    store: dict[str, torch.Tensor] = {}
    module = nhwc.get_submodule(layer)
    handle = module.register_forward_hook(lambda m, i, o: store.__setitem__("t", o.detach()))
    with torch.no_grad():
        nhwc(torch.from_numpy(x).permute(0, 3, 1, 2))
    handle.remove()
    wrong = store["t"][0].permute(1, 2, 0).numpy()  # (H, W, C) taken for (C, H, W)
    return row(
        [
            ("input", the_input(x)),
            ("conv_mlp=False, channel 0", heat(a[..., 0], signed=True)),
            ("conv_mlp=True, channel 0", heat(b[..., 0], signed=True)),
            (f"NHWC read as NCHW {wrong.shape[:2]}", heat(wrong[..., 0], signed=True)),
        ]
    )


def realarch_vit_tokens() -> np.ndarray:
    """ViT replica: 64 patch tokens + a class token at blocks.1.norm1 -> an 8x8 Grad-CAM grid."""
    model, x = build("vit_tiny"), scene(32)
    ex = ins.explain("grad_cam", model, x, target=0, relu=False)
    cam = np.asarray(ex.meta["cam"])[0]
    return row(
        [
            ("input (32x32, 4x4 patches)", the_input(x)),
            (f"{ex.meta['layer']}: {cam.shape[0]}x{cam.shape[1]}", heat(cam, signed=True)),
            ("upsampled to the input", heat(ex.values[0], signed=True)),
        ]
    )


def vstack(rows: list[np.ndarray], gap: int = 10) -> np.ndarray:
    """Rows top to bottom, left-aligned, padded with white to the widest."""
    width = max(r.shape[1] for r in rows)
    out = [
        np.pad(r, ((0, gap), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows
    ]
    return np.concatenate(out, axis=0)[:-gap]


PICTURES: dict[str, Callable[[], np.ndarray]] = {
    f.__name__: f
    for f in (
        realarch_grad_cam_defaults,
        realarch_resnet_zero_gamma,
        realarch_convnext_layouts,
        realarch_vit_tokens,
    )
}


def main(prefixes: list[str]) -> None:
    for name, make in PICTURES.items():
        if prefixes and not any(name.removeprefix("realarch_").startswith(p) for p in prefixes):
            continue
        (OUT / f"{name}.png").write_bytes(png_bytes(make()))
        print(f"docs/images/{name}.png")


if __name__ == "__main__":
    main(sys.argv[1:])

"""Small, faithful torch replicas of the architectures people explain (timm and torchvision
cannot be imported here), and hand-written Grad-CAM with plain autograd / GradientTape.

Each replica keeps the pattern that matters to a technique's defaults: a ResNet's residual
blocks with the last BN gamma of each block zero-initialised (as timm and torchvision's
``zero_init_residual`` do), a MobileNetV3 whose ``conv_head`` runs after global pooling, a ViT
with a class token, a ConvNeXt stem and downsampling layers that normalise over channels.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: one ReLU module used twice, the skip-add is functional."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        nn.init.zeros_(self.bn2.weight)  # zero_init_residual: the block starts as identity
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """conv1/bn1/relu/maxpool, layer1..layer4 (one block each), avgpool, fc."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(2)
        self.layer1 = nn.Sequential(BasicBlock(8, 8, 1))
        self.layer2 = nn.Sequential(BasicBlock(8, 12, 2))
        self.layer3 = nn.Sequential(BasicBlock(12, 16, 1))
        self.layer4 = nn.Sequential(BasicBlock(16, 16, 1))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class ConvBnAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.Hardswish(),
        )


class SelectAdaptivePool2d(nn.Module):
    """timm's pooling container: a pool, then a flatten that is an Identity (flatten=False)."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.flatten(self.pool(x))


class MobileNetV3(nn.Module):
    """timm's MobileNetV3 layout: blocks, global_pool, then a 1x1 conv_head on the pooled map."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.conv_stem = nn.Conv2d(3, 8, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.act1 = nn.Hardswish()
        self.blocks = nn.Sequential(
            nn.Sequential(ConvBnAct(8, 8, 3, groups=8), ConvBnAct(8, 12, 1)),
            nn.Sequential(ConvBnAct(12, 12, 3, 2, groups=12), ConvBnAct(12, 16, 1)),
            nn.Sequential(ConvBnAct(16, 24, 1)),
        )
        self.global_pool = SelectAdaptivePool2d()
        self.conv_head = nn.Conv2d(24, 32, 1)
        self.act2 = nn.Hardswish()
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.act1(self.bn1(self.conv_stem(x))))
        x = self.act2(self.conv_head(self.global_pool(x)))
        return self.classifier(self.flatten(x))


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        qkv = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(n, t, d))


class Block(nn.Module):
    """A ViT block: pre-norm attention and MLP, each with a residual add."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.drop_path = nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ViT(nn.Module):
    """patch_embed (4x4 patches), a class token (and ``extra`` more tokens), blocks, norm, and a
    head on the class token: 16x16 inputs give 16 patch tokens + 1."""

    def __init__(self, classes: int = 5, dim: int = 16, depth: int = 2, extra: int = 0) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, 4, 4)
        self.cls_token = nn.Parameter(torch.randn(1, 1 + extra, dim) * 0.5)
        self.pos_embed = nn.Parameter(torch.randn(1, 16 + 1 + extra, dim) * 0.5)
        self.blocks = nn.Sequential(*[Block(dim, 2) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(len(x), -1, -1), tokens], dim=1)
        x = self.norm(self.blocks(tokens + self.pos_embed))
        return self.head(x[:, 0])


class LayerNorm2d(nn.LayerNorm):
    """timm's LayerNorm2d: LayerNorm over the channels of an NCHW map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ConvNeXtish(nn.Module):
    """ConvNeXt's main path: a 4x4 stem + LayerNorm2d, downsamplings (LayerNorm2d + 2x2 conv),
    and timm's head (global pool, LayerNorm, fc); conv biases start at zero (timm's init). A
    black input gives every LayerNorm an exact zero vector, where its gradient is
    1/sqrt(eps) = 1e3: five of them in a row."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        widths = (8, 12, 16, 24)
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 4, 4), LayerNorm2d(widths[0]))
        stages = []
        for cin, cout in itertools.pairwise(widths):
            stages.append(nn.Sequential(LayerNorm2d(cin), nn.Conv2d(cin, cout, 2, 2)))
        self.stages = nn.Sequential(*stages)
        self.head_norm = nn.LayerNorm(widths[-1])
        self.head = nn.Linear(widths[-1], classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.head(self.head_norm(x.mean((2, 3))))


def seeded(cls: type[nn.Module], seed: int = 0, **kwargs: object) -> nn.Module:
    """An eval-mode instance with weights drawn from ``seed`` and BN running stats that are not
    the identity (so a BN layer changes the numbers)."""
    torch.manual_seed(seed)
    model = cls(**kwargs)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                if bool(torch.any(m.weight != 0)):
                    m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    return model.eval()


def torch_grad_cam(
    model: nn.Module,
    x: np.ndarray,
    module: nn.Module,
    targets: np.ndarray,
    reshape=None,
) -> np.ndarray:
    """Grad-CAM at ``module``'s output with a forward hook and ``torch.autograd.grad``:
    ``relu(sum_c mean_hw(dy/dA_c) A_c)`` at the layer's resolution, (N, h, w), float64.
    ``reshape`` turns token tensors (N, T, D) into (N, h, w, D) (channels last)."""
    seen: dict[str, torch.Tensor] = {}
    handle = module.register_forward_hook(lambda m, i, o: seen.update(a=o))
    try:
        out = model(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))))
        score = out[torch.arange(len(x)), torch.as_tensor(targets)].sum()
        (grad,) = torch.autograd.grad(score, [seen["a"]])
    finally:
        handle.remove()
    acts, grad = seen["a"].detach().double(), grad.double()
    if reshape is None:
        acts, grad = acts.permute(0, 2, 3, 1), grad.permute(0, 2, 3, 1)
    else:
        acts, grad = reshape(acts), reshape(grad)
    weights = grad.mean(dim=(1, 2), keepdim=True)
    return (weights * acts).sum(dim=-1).clamp(min=0).numpy()


def keras_grad_cam(
    model, x: np.ndarray, layer: str, targets: np.ndarray, relu: bool = True
) -> np.ndarray:
    """Grad-CAM at a Keras layer with tf.GradientTape on a model whose outputs are the logits
    (``relu=False``: the signed map)."""
    import keras
    import tensorflow as tf

    sub = keras.Model(model.inputs, [model.get_layer(layer).output, model.outputs[0]])
    with tf.GradientTape() as tape:
        acts, out = sub(tf.constant(x), training=False)
        score = tf.reduce_sum(tf.gather(out, tf.constant(targets), batch_dims=1))
    grad = tape.gradient(score, acts).numpy().astype(np.float64)
    acts = acts.numpy().astype(np.float64)
    cam = np.einsum("nhwc,nc->nhw", acts, grad.mean(axis=(1, 2)))
    return np.maximum(cam, 0) if relu else cam

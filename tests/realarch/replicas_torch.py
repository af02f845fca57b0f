"""Small torch replicas of the patterns in torchvision/timm models and in users' own code.

Each builder returns an ``nn.Module`` in eval mode with seeded random weights, at a size that runs
in milliseconds. The *structure* is what matters: module names, which modules run, shared and
functional activations, in-place ops, ``.view()`` flattening, zero-initialised last BN gammas,
channels-last tensors inside the model, token sequences. Every builder's docstring names the real
model and the pattern it reproduces; the module attribute names follow the original code, so the
Grad-CAM layers in :data:`CONVENTIONAL_LAYERS` read as they do on the real models.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CONVENTIONAL_LAYERS", "REPLICAS", "TorchReplica", "build"]


# --------------------------------------------------------------------------------------------
# shared pieces (timm layers)


class DropPath(nn.Module):
    """timm ``DropPath``: a module that IS called in ``forward`` and returns ``x`` unchanged
    when not training (stochastic depth)."""

    def __init__(self, p: float = 0.1) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class BatchNormAct2d(nn.BatchNorm2d):
    """timm ``BatchNormAct2d``: a BatchNorm2d subclass whose forward also runs ``self.act``
    (a child module), so the BN module's output is its activation's output."""

    def __init__(self, num_features: int, act: type[nn.Module] = nn.ReLU) -> None:
        super().__init__(num_features)
        self.drop = nn.Identity()
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, self.training,
            self.momentum, self.eps,
        )  # fmt: skip
        return self.act(self.drop(x))


class LayerNorm2d(nn.LayerNorm):
    """timm ``LayerNorm2d``: LayerNorm over the channels of an NCHW tensor (permutes inside)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class SqueezeExcite(nn.Module):
    """timm ``SqueezeExcite``: mean-pool (functional), 1x1 reduce, act, 1x1 expand, gate."""

    def __init__(self, channels: int, reduced: int, act: type[nn.Module], gate: type[nn.Module]):
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, reduced, 1)
        self.act1 = act()
        self.conv_expand = nn.Conv2d(reduced, channels, 1)
        self.gate = gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_se = x.mean((2, 3), keepdim=True)
        x_se = self.conv_expand(self.act1(self.conv_reduce(x_se)))
        return x * self.gate(x_se)


def _init(model: nn.Module, seed: int) -> nn.Module:
    """Seeded random weights; BN running stats randomised so that BN is not the identity."""
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.uniform_(m.bias, -0.1, 0.1)
        elif isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


def _zero_last_gammas(model: nn.Module, attr: str) -> None:
    """timm's ``zero_init_last`` / torchvision's ``zero_init_residual``: every residual branch's
    last BN starts with gamma = 0, so each block begins as the identity (plus its shortcut)."""
    for m in model.modules():
        bn = getattr(m, attr, None) if hasattr(m, "downsample") else None
        if isinstance(bn, nn.BatchNorm2d):
            nn.init.zeros_(bn.weight)


# --------------------------------------------------------------------------------------------
# ResNet-18


class TvBasicBlock(nn.Module):
    """torchvision ``BasicBlock``: ONE ``self.relu`` (in-place) used twice per block."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class TorchvisionResNet18(nn.Module):
    """torchvision ``resnet18(zero_init_residual=True)``: stem conv/bn/relu/maxpool, stages
    ``layer1..layer4`` of two BasicBlocks (shared in-place ReLU, last BN gamma zero),
    ``avgpool``, ``torch.flatten``, ``fc``."""

    def __init__(self, widths: tuple[int, ...] = (8, 16, 24, 32), classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = widths[0]
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            setattr(
                self,
                f"layer{i + 1}",
                nn.Sequential(TvBasicBlock(cin, w, stride), TvBasicBlock(w, w, 1)),
            )
            cin = w
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class TimmBasicBlock(nn.Module):
    """timm ``BasicBlock``: ``act1``/``act2`` modules, ``drop_block``/``aa`` Identities that run,
    ``drop_path`` None, ``x += shortcut`` then ``act2``."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.drop_block = nn.Identity()
        self.act1 = nn.ReLU(inplace=True)
        self.aa = nn.Identity()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act2 = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.aa(self.act1(self.drop_block(self.bn1(self.conv1(x)))))
        x = self.bn2(self.conv2(x))
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        x += shortcut
        return self.act2(x)


class TimmResNet18(nn.Module):
    """timm ``resnet18`` (``zero_init_last=True``) with the head written as older user code
    does: ``global_pool`` then ``x.view(x.size(0), -1)`` then ``fc``."""

    def __init__(self, widths: tuple[int, ...] = (8, 16, 24, 32), classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = widths[0]
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            blocks = nn.Sequential(TimmBasicBlock(cin, w, stride), TimmBasicBlock(w, w, 1))
            setattr(self, f"layer{i + 1}", blocks)
            cin = w
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
        x = self.global_pool(x)
        return self.fc(x.view(x.size(0), -1))


# --------------------------------------------------------------------------------------------
# MobileNetV3-small and EfficientNet-B0 (timm's efficientnet builder)


class DepthwiseSeparableConv(nn.Module):
    """timm ``DepthwiseSeparableConv``: dw conv, bn+act, SE, pw conv, bn; ``drop_path`` is an
    Identity placeholder that forward() only calls when the block has a skip (here: never)."""

    def __init__(self, cin: int, cout: int, stride: int, act: type[nn.Module], se: bool) -> None:
        super().__init__()
        self.has_skip = stride == 1 and cin == cout
        self.conv_dw = nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False)
        self.bn1 = BatchNormAct2d(cin, act)
        gate = nn.Hardsigmoid if act is nn.Hardswish else nn.Sigmoid
        self.se = SqueezeExcite(cin, max(cin // 4, 2), nn.ReLU, gate) if se else nn.Identity()
        self.conv_pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn2 = BatchNormAct2d(cout, nn.Identity)
        self.drop_path = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.bn2(self.conv_pw(self.se(self.bn1(self.conv_dw(x)))))
        if self.has_skip:
            x = self.drop_path(x) + shortcut
        return x


class InvertedResidual(nn.Module):
    """timm ``InvertedResidual`` (MBConv): pw expand, dw conv, SE, pw linear; a ``DropPath``
    that runs (and does nothing in eval) on the skip."""

    def __init__(
        self, cin: int, cout: int, stride: int, act: type[nn.Module], se: bool, k: int = 3
    ) -> None:
        super().__init__()
        mid = cin * 3
        self.has_skip = stride == 1 and cin == cout
        self.conv_pw = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = BatchNormAct2d(mid, act)
        self.conv_dw = nn.Conv2d(mid, mid, k, stride, k // 2, groups=mid, bias=False)
        self.bn2 = BatchNormAct2d(mid, act)
        gate = nn.Hardsigmoid if act is nn.Hardswish else nn.Sigmoid
        se_act = nn.ReLU if act is nn.Hardswish else act
        self.se = SqueezeExcite(mid, max(mid // 4, 2), se_act, gate) if se else nn.Identity()
        self.conv_pwl = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn3 = BatchNormAct2d(cout, nn.Identity)
        self.drop_path = DropPath(0.1) if self.has_skip else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))
        x = self.bn3(self.conv_pwl(self.se(x)))
        if self.has_skip:
            x = self.drop_path(x) + shortcut
        return x


class ConvBnAct(nn.Module):
    """timm ``ConvBnAct``: the 1x1 conv + bn + act closing MobileNetV3's blocks."""

    def __init__(self, cin: int, cout: int, act: type[nn.Module]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn1 = BatchNormAct2d(cout, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn1(self.conv(x))


class MobileNetV3Small(nn.Module):
    """timm ``mobilenetv3_small_100``: Hardswish/ReLU, depthwise convs, squeeze-excite with
    hard-sigmoid gates, ``blocks`` of stages ending in a ConvBnAct; the head pools FIRST
    (``global_pool``), then ``conv_head`` (a 1x1 conv on a 1x1 map), ``act2`` (Hardswish),
    ``flatten``, ``classifier``."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        hs, relu = nn.Hardswish, nn.ReLU
        self.conv_stem = nn.Conv2d(3, 8, 3, 2, 1, bias=False)
        self.bn1 = BatchNormAct2d(8, hs)
        self.blocks = nn.Sequential(
            nn.Sequential(DepthwiseSeparableConv(8, 8, 2, relu, se=True)),
            nn.Sequential(
                InvertedResidual(8, 12, 2, relu, se=False),
                InvertedResidual(12, 12, 1, relu, se=False),
            ),
            nn.Sequential(
                InvertedResidual(12, 16, 2, hs, se=True, k=5),
                InvertedResidual(16, 16, 1, hs, se=True, k=5),
            ),
            nn.Sequential(ConvBnAct(16, 48, hs)),
        )  # fmt: skip
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_head = nn.Conv2d(48, 64, 1)
        self.norm_head = nn.Identity()
        self.act2 = nn.Hardswish()
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.bn1(self.conv_stem(x)))
        x = self.act2(self.norm_head(self.conv_head(self.global_pool(x))))
        return self.classifier(self.flatten(x))


class EfficientNetB0(nn.Module):
    """timm ``efficientnet_b0``: SiLU everywhere, MBConv with SE (sigmoid gate), ``DropPath``
    modules that run and do nothing in eval, an Identity ``drop_path`` that never runs, the top
    ``conv_head`` + ``bn2`` (BatchNormAct2d: its SiLU is ``bn2.act``), ``global_pool``,
    ``classifier``."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        silu = nn.SiLU
        self.conv_stem = nn.Conv2d(3, 8, 3, 2, 1, bias=False)
        self.bn1 = BatchNormAct2d(8, silu)
        self.blocks = nn.Sequential(
            nn.Sequential(DepthwiseSeparableConv(8, 6, 1, silu, se=True)),
            nn.Sequential(
                InvertedResidual(6, 12, 2, silu, se=True),
                InvertedResidual(12, 12, 1, silu, se=True),
            ),
            nn.Sequential(
                InvertedResidual(12, 16, 2, silu, se=True, k=5),
                InvertedResidual(16, 16, 1, silu, se=True, k=5),
            ),
        )  # fmt: skip
        self.conv_head = nn.Conv2d(16, 48, 1, bias=False)
        self.bn2 = BatchNormAct2d(48, silu)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Linear(48, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.bn1(self.conv_stem(x)))
        x = self.bn2(self.conv_head(x))
        return self.classifier(self.flatten(self.global_pool(x)))


# --------------------------------------------------------------------------------------------
# ConvNeXt (timm convnext_atto, both block variants)


class Mlp(nn.Module):
    """timm ``Mlp``: Linear, GELU, Dropout, Identity norm, Linear, Dropout (on the last axis)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(0.0)
        self.norm = nn.Identity()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop2 = nn.Dropout(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.norm(self.drop1(self.act(self.fc1(x))))))


class ConvMlp(nn.Module):
    """timm ``ConvMlp``: the same MLP as 1x1 convolutions on NCHW tensors."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.norm = nn.Identity()
        self.act = nn.GELU()
        self.drop = nn.Dropout(0.0)
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.act(self.norm(self.fc1(x)))))


class ConvNeXtBlock(nn.Module):
    """timm ``ConvNeXtBlock``. ``conv_mlp=False``: depthwise 7x7 conv, permute to NHWC,
    ``LayerNorm(C)``, ``Mlp`` (Linear on the last axis), permute back, ``gamma`` (layer scale),
    ``drop_path`` + ``shortcut``. ``conv_mlp=True``: ``LayerNorm2d`` and ``ConvMlp`` on NCHW."""

    def __init__(self, dim: int, conv_mlp: bool) -> None:
        super().__init__()
        self.use_conv_mlp = conv_mlp
        self.conv_dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = LayerNorm2d(dim) if conv_mlp else nn.LayerNorm(dim)
        self.mlp = ConvMlp(dim, 4 * dim) if conv_mlp else Mlp(dim, 4 * dim)
        self.gamma = nn.Parameter(torch.full((dim,), 0.5))
        self.shortcut = nn.Identity()
        self.drop_path = DropPath(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv_dw(x)
        if self.use_conv_mlp:
            x = self.mlp(self.norm(x))
        else:
            x = x.permute(0, 2, 3, 1)
            x = self.mlp(self.norm(x))
            x = x.permute(0, 3, 1, 2)
        x = x.mul(self.gamma.reshape(1, -1, 1, 1))
        return self.drop_path(x) + self.shortcut(shortcut)


class ConvNeXtStage(nn.Module):
    """timm ``ConvNeXtStage``: ``downsample`` (LayerNorm2d + 2x2 stride-2 conv, or Identity),
    then ``blocks``."""

    def __init__(self, cin: int, dim: int, depth: int, conv_mlp: bool, down: bool) -> None:
        super().__init__()
        self.downsample: nn.Module = (
            nn.Sequential(LayerNorm2d(cin), nn.Conv2d(cin, dim, 2, 2)) if down else nn.Identity()
        )
        self.blocks = nn.Sequential(*[ConvNeXtBlock(dim, conv_mlp) for _ in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class NormMlpClassifierHead(nn.Module):
    """timm ``NormMlpClassifierHead``: ``global_pool``, ``norm`` (LayerNorm2d on N,C,1,1),
    ``flatten``, ``pre_logits`` Identity, ``drop``, ``fc``."""

    def __init__(self, dim: int, classes: int) -> None:
        super().__init__()
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.norm = LayerNorm2d(dim)
        self.flatten = nn.Flatten(1)
        self.pre_logits = nn.Identity()
        self.drop = nn.Dropout(0.0)
        self.fc = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(self.norm(self.global_pool(x)))
        return self.fc(self.drop(self.pre_logits(x)))


class ConvNeXt(nn.Module):
    """timm ``convnext_atto`` (``conv_mlp`` False or True): ``stem`` (4x4 stride-4 conv +
    LayerNorm2d), four ``stages``, ``norm_pre = nn.Identity()`` (runs), the pool-norm-fc
    ``head``. Layer scale ``gamma`` is 0.5 instead of timm's 1e-6 so random blocks matter."""

    def __init__(
        self, conv_mlp: bool = False, dims: tuple[int, ...] = (8, 16, 24, 32), classes: int = 10
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dims[0], 4, 4), LayerNorm2d(dims[0]))
        depths = (1, 1, 2, 1)
        stages, cin = [], dims[0]
        for i, (dim, depth) in enumerate(zip(dims, depths, strict=True)):
            stages.append(ConvNeXtStage(cin, dim, depth, conv_mlp, down=i > 0))
            cin = dim
        self.stages = nn.Sequential(*stages)
        self.norm_pre = nn.Identity()
        self.head = NormMlpClassifierHead(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm_pre(self.stages(self.stem(x))))


# --------------------------------------------------------------------------------------------
# ViT-tiny and a Swin-like model (tokens; channels-last 4-D tensors)


class Attention(nn.Module):
    """timm ``Attention`` with fused attention: ``qkv`` Linear, Identity ``q_norm``/``k_norm``,
    ``F.scaled_dot_product_attention`` (so ``attn_drop``, a Dropout(0), NEVER runs), ``proj``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.q_norm = nn.Identity()
        self.k_norm = nn.Identity()
        self.attn_drop = nn.Dropout(0.0)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape  # (B, N, C) or (B, h, w, C): attention over all but the batch axis
        b, c = shape[0], shape[-1]
        x = x.reshape(b, -1, c)
        qkv = self.qkv(x).reshape(b, x.shape[1], 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(self.q_norm(q), self.k_norm(k), v)
        x = x.transpose(1, 2).reshape(b, -1, c)
        return self.proj_drop(self.proj(x)).reshape(shape)


class VitBlock(nn.Module):
    """timm ViT ``Block``: pre-norm attention and MLP, Identity layer scales and drop paths."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.ls1 = nn.Identity()
        self.drop_path1 = nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 2 * dim)
        self.ls2 = nn.Identity()
        self.drop_path2 = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x))))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class PatchEmbed(nn.Module):
    """timm ``PatchEmbed``: ``proj`` conv (kernel = stride = patch), flatten to tokens (NLC)."""

    def __init__(self, patch: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, patch)
        self.norm = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class VisionTransformer(nn.Module):
    """timm ``vit_tiny_patch16_224`` at 32x32 with 4x4 patches: ``patch_embed``, ``cls_token``,
    ``pos_embed``, ``pos_drop``, ``blocks``, final ``norm``, ``head`` on the class token."""

    def __init__(self, dim: int = 32, depth: int = 2, heads: int = 2, classes: int = 10) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(4, dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, 65, dim) * 0.02)
        self.pos_drop = nn.Dropout(0.0)
        self.norm_pre = nn.Identity()
        self.blocks = nn.Sequential(*[VitBlock(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.fc_norm = nn.Identity()
        self.head_drop = nn.Dropout(0.0)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.norm_pre(self.pos_drop(x + self.pos_embed))
        x = self.norm(self.blocks(x))
        return self.head(self.head_drop(self.fc_norm(x[:, 0])))


class PatchMerging(nn.Module):
    """timm Swin ``PatchMerging`` on (N, H, W, C): 2x2 neighbours concatenated, norm, Linear."""

    def __init__(self, dim: int, out: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        x = x.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).flatten(3)
        return self.reduction(self.norm(x))


class SwinBlock(nn.Module):
    """timm ``SwinTransformerBlock`` (v0.9+): keeps (N, H, W, C) tensors; window attention over
    ``window`` x ``window`` windows, cyclic shift (``torch.roll``) on odd blocks."""

    def __init__(self, dim: int, heads: int, window: int, shift: int) -> None:
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.drop_path1 = nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 2 * dim)
        self.drop_path2 = nn.Identity()

    def _attn(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        s, ws = self.shift, self.window
        x = torch.roll(x, (-s, -s), (1, 2)) if s else x
        win = x.reshape(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
        win = self.attn(win.reshape(-1, ws, ws, c))
        x = win.reshape(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
        x = x.reshape(b, h, w, c)
        return torch.roll(x, (s, s), (1, 2)) if s else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self._attn(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class SwinStage(nn.Module):
    """timm ``SwinTransformerStage``: optional ``downsample`` (PatchMerging), ``blocks``."""

    def __init__(self, cin: int, dim: int, depth: int, down: bool) -> None:
        super().__init__()
        self.downsample = PatchMerging(cin, dim) if down else nn.Identity()
        self.blocks = nn.Sequential(
            *[SwinBlock(dim, 2, 4, shift=2 if i % 2 else 0) for i in range(depth)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class SwinLike(nn.Module):
    """timm ``swin_tiny`` (v0.9+ layout): ``patch_embed`` conv, permuted to NHWC and normed;
    ``layers`` of NHWC stages; final ``norm`` (LayerNorm on NHWC); head pooling over (H, W)."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, 16, 4, 4)
        self.patch_norm = nn.LayerNorm(16)
        self.layers = nn.Sequential(SwinStage(16, 16, 2, down=False), SwinStage(16, 32, 1, True))
        self.norm = nn.LayerNorm(32)
        self.head = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_norm(self.patch_embed(x).permute(0, 2, 3, 1))
        x = self.norm(self.layers(x))
        return self.head(x.mean((1, 2)))


# --------------------------------------------------------------------------------------------
# RegNetX and DenseNet


class ConvNormAct(nn.Module):
    """timm ``ConvNormAct``: ``conv`` then ``bn`` (a BatchNormAct2d; no activation when
    ``act`` is False)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act=True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
        self.bn = BatchNormAct2d(cout, nn.ReLU if act else nn.Identity)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class RegBottleneck(nn.Module):
    """timm RegNet ``Bottleneck``: 1x1, 3x3 GROUP conv, Identity ``se``, 1x1 without act (its BN
    gamma zero: ``zero_init_last``), ``drop_path`` Identity, ``downsample``, ``act3``."""

    def __init__(self, cin: int, cout: int, stride: int, group_width: int = 8) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(cin, cout, 1)
        self.conv2 = ConvNormAct(cout, cout, 3, stride, groups=cout // group_width)
        self.se = nn.Identity()
        self.conv3 = ConvNormAct(cout, cout, 1, act=False)
        nn.init.zeros_(self.conv3.bn.weight)
        self.drop_path = nn.Identity()
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )
        self.act3 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv3(self.se(self.conv2(self.conv1(x))))
        x = self.drop_path(x) + self.downsample(shortcut)
        return self.act3(x)


class RegStage(nn.Module):
    """timm ``RegStage``: blocks as attributes ``b1``, ``b2``, ... called in a loop."""

    def __init__(self, cin: int, cout: int, depth: int) -> None:
        super().__init__()
        for i in range(depth):
            self.add_module(
                f"b{i + 1}", RegBottleneck(cin if i == 0 else cout, cout, 2 if i == 0 else 1)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.children():
            x = block(x)
        return x


class RegNetX(nn.Module):
    """timm ``regnetx_002``: ``stem``, stages ``s1..s4`` called one by one in
    ``forward_features``, ``final_conv = nn.Identity()`` (runs), ``head`` (pool, flatten, fc)."""

    def __init__(self, widths: tuple[int, ...] = (8, 16, 24, 32), classes: int = 10) -> None:
        super().__init__()
        self.stem = ConvNormAct(3, 8, 3, 2)
        cin = 8
        for i, (w, depth) in enumerate(zip(widths, (1, 1, 2, 2), strict=True)):
            self.add_module(f"s{i + 1}", RegStage(cin, w, depth))
            cin = w
        self.final_conv = nn.Identity()
        self.head = nn.Sequential(
            OrderedDict(
                global_pool=nn.AdaptiveAvgPool2d(1),
                flatten=nn.Flatten(1),
                fc=nn.Linear(cin, classes),
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.s4(self.s3(self.s2(self.s1(x))))
        return self.head(self.final_conv(x))


class DenseLayer(nn.Module):
    """torchvision ``_DenseLayer``: takes the LIST of earlier features, concatenates them, then
    norm1/relu1/conv1 (bottleneck) and norm2/relu2/conv2 (growth)."""

    def __init__(self, cin: int, growth: int, bn_size: int = 2) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, 1, 1, bias=False)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = self.conv1(self.relu1(self.norm1(torch.cat(features, 1))))
        return self.conv2(self.relu2(self.norm2(x)))


class DenseBlock(nn.ModuleDict):
    """torchvision ``_DenseBlock``: a ModuleDict of dense layers; returns the concatenation."""

    def __init__(self, layers: int, cin: int, growth: int) -> None:
        super().__init__()
        for i in range(layers):
            self.add_module(f"denselayer{i + 1}", DenseLayer(cin + i * growth, growth))

    def forward(self, init: torch.Tensor) -> torch.Tensor:
        features = [init]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class DenseNet121(nn.Module):
    """torchvision ``densenet121``: ``features`` (conv0/norm0/relu0/pool0, dense blocks with
    transitions, ``norm5``), then in forward(): ``F.relu`` (functional, in place),
    ``F.adaptive_avg_pool2d``, ``torch.flatten``, ``classifier``."""

    def __init__(self, growth: int = 4, block_layers: tuple[int, ...] = (2, 2, 2, 2), classes=10):
        super().__init__()
        c = 2 * growth
        parts: list[tuple[str, nn.Module]] = [
            ("conv0", nn.Conv2d(3, c, 7, 2, 3, bias=False)),
            ("norm0", nn.BatchNorm2d(c)),
            ("relu0", nn.ReLU(inplace=True)),
            ("pool0", nn.MaxPool2d(3, 2, 1)),
        ]
        for i, n in enumerate(block_layers):
            parts.append((f"denseblock{i + 1}", DenseBlock(n, c, growth)))
            c += n * growth
            if i + 1 < len(block_layers):
                transition = nn.Sequential(
                    OrderedDict(
                        norm=nn.BatchNorm2d(c), relu=nn.ReLU(inplace=True),
                        conv=nn.Conv2d(c, c // 2, 1, bias=False), pool=nn.AvgPool2d(2, 2),
                    )
                )  # fmt: skip
                parts.append((f"transition{i + 1}", transition))
                c //= 2
        parts.append(("norm5", nn.BatchNorm2d(c)))
        self.features = nn.Sequential(OrderedDict(parts))
        self.classifier = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.features(x), inplace=True)
        out = torch.flatten(F.adaptive_avg_pool2d(out, (1, 1)), 1)
        return self.classifier(out)


# --------------------------------------------------------------------------------------------
# users' own code


class CaptumCifarNet(nn.Module):
    """Captum's CIFAR tutorial net (and its conv test models): ``x.view(-1, 16 * 5 * 5)`` on a
    conv activation, separate ReLU modules, max pools."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2, 2)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(120, 84)
        self.relu4 = nn.ReLU()
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = x.view(-1, 16 * 5 * 5)
        x = self.relu4(self.fc2(self.relu3(self.fc1(x))))
        return self.fc3(x)


class FunctionalReluNet(nn.Module):
    """A user net with no activation modules: ``F.relu``, ``F.max_pool2d``, functional pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.relu(self.conv2(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class SharedReluNet(nn.Module):
    """A user net with ONE ``nn.ReLU`` module called after every conv and the hidden Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.conv3 = nn.Conv2d(16, 16, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(16 * 8 * 8, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.conv1(x)))
        x = self.pool(self.relu(self.conv2(x)))
        x = self.relu(self.conv3(x))
        return self.fc2(self.relu(self.fc1(torch.flatten(x, 1))))


class SoftmaxHeadNet(nn.Module):
    """A user net whose last module is ``nn.Softmax(dim=1)`` (probabilities out)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(16, 10)
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu2(self.conv2(self.pool(self.relu1(self.conv1(x)))))
        return self.softmax(self.fc(self.flatten(self.gap(x))))


# --------------------------------------------------------------------------------------------
# the registry


@dataclass(frozen=True)
class TorchReplica:
    """One replica: how to build it, its input size (H = W), its conventional Grad-CAM layers
    (every name in the set is the very same tensor, or an equally conventional choice) and a
    spatial layer for filter maximization (default: the first conventional name)."""

    name: str
    make: Callable[[], nn.Module]
    size: int
    conventional: frozenset[str]
    filter_layer: str = ""
    seed: int = 0

    def build(self) -> nn.Module:
        model = _init(self.make(), self.seed)
        if self.name.startswith("resnet18"):
            _zero_last_gammas(model, "bn2")
        return model.eval()


def _set(*names: str) -> frozenset[str]:
    return frozenset(names)


REPLICAS: dict[str, TorchReplica] = {
    r.name: r
    for r in [
        TorchReplica(
            "resnet18_tv", TorchvisionResNet18, 64, _set("layer4", "layer4.1", "layer4.1.relu")
        ),
        TorchReplica(
            "resnet18_timm", TimmResNet18, 64, _set("layer4", "layer4.1", "layer4.1.act2")
        ),
        TorchReplica(
            "mobilenetv3_small", MobileNetV3Small, 64,
            _set("blocks", "blocks.3", "blocks.3.0", "blocks.3.0.bn1", "blocks.3.0.bn1.act"),
        ),
        TorchReplica("efficientnet_b0", EfficientNetB0, 32, _set("bn2", "bn2.act")),
        TorchReplica(
            "convnext", ConvNeXt, 64,
            _set("stages", "stages.3", "stages.3.blocks", "stages.3.blocks.0", "norm_pre"),
        ),
        TorchReplica(
            "convnext_convmlp", lambda: ConvNeXt(conv_mlp=True), 64,
            _set("stages", "stages.3", "stages.3.blocks", "stages.3.blocks.0", "norm_pre"),
        ),
        TorchReplica("vit_tiny", VisionTransformer, 32, _set("blocks.1.norm1"), "patch_embed.proj"),
        TorchReplica("swin_like", SwinLike, 32, _set("norm")),
        TorchReplica(
            "regnetx_002", RegNetX, 64, _set("s4", "s4.b2", "s4.b2.act3", "final_conv")
        ),
        TorchReplica("densenet121", DenseNet121, 64, _set("features", "features.norm5")),
        # The last conv's activation, or the max pool after it (the last spatial tensor).
        TorchReplica("captum_cifar", CaptumCifarNet, 32, _set("relu2", "pool2")),
        TorchReplica("functional_relu", FunctionalReluNet, 32, _set("conv2")),
        # `relu` shows its LAST call (after fc1, a vector): relu(conv3) has no name of its own.
        TorchReplica("shared_relu", SharedReluNet, 32, _set("conv3")),
        TorchReplica("softmax_head", SoftmaxHeadNet, 32, _set("relu2")),
    ]
}  # fmt: skip

#: The conventional Grad-CAM layer(s) per torch replica (issue 10, item 3).
CONVENTIONAL_LAYERS: dict[str, frozenset[str]] = {n: r.conventional for n, r in REPLICAS.items()}


def build(name: str) -> nn.Module:
    """The replica called ``name``, in eval mode, with its seeded random weights."""
    return REPLICAS[name].build()

"""The layers of a torch model as the adapter reports them, and the errors about layers.

Before any pass, ``layers()`` lists every leaf module in definition order with unknown shapes.
Once a pass has run (:mod:`.probe`), it lists only the leaves that ran, in the order their LAST
call completed (execution order), each with its channels-last output shape and its aliases:
the containers that return that very output tensor, innermost first. Containers whose output
is a new tensor made by a functional op after their last child (a residual block's add) are
listed too, at their completion: they are the only names of that tensor. Modules that never run
(timm's ``drop_path`` placeholders, Dropouts a forward() skips) are left out, and tapping one
is an error that says so. TorchScript submodules take no hooks: they are listed after the
others, in definition order, with unknown shapes.
"""

from __future__ import annotations

import torch
from torch import nn

from innersight.core.adapter import LayerInfo
from innersight.core.errors import InputError, LayerNotFoundError

from .layout import channels_last_shape
from .probe import Probe

__all__ = ["is_leaf", "layer_info", "listed", "never_runs", "unknown_layout"]


def is_leaf(module: nn.Module) -> bool:
    return next(module.children(), None) is None


def _scripted(module: nn.Module) -> bool:
    return isinstance(module, torch.jit.ScriptModule)


def listed(model: nn.Module, probe: Probe | None) -> list[tuple[str, nn.Module]]:
    """(name, module) of the layers ``layers()`` reports, in its order."""
    leaves = [(n, m) for n, m in model.named_modules() if n and is_leaf(m)]
    if probe is None:
        return leaves
    fresh = [(n, m) for n, m in model.named_modules() if n and id(m) in probe.fresh]
    ran = [nm for nm in leaves if probe.ran(nm[1])] + fresh
    ran.sort(key=lambda nm: probe.order_of(nm[1]))
    return ran + [nm for nm in leaves if _scripted(nm[1]) and not probe.ran(nm[1])]


def output_shape(module: nn.Module, probe: Probe | None) -> tuple[int, ...]:
    """Channels-last output shape without batch; () when unknown (no pass yet, no tensor, or a
    rank-4 tensor of unknown layout)."""
    rec = probe.records.get(id(module)) if probe is not None else None
    if probe is None or rec is None or rec.out_shape is None:
        return ()
    if len(rec.out_shape) == 4:
        layout = probe.layouts.outputs.get(id(module)) if probe.layouts is not None else "NCHW"
        return channels_last_shape(rec.out_shape, layout)[1:] if layout else ()
    return rec.out_shape[1:]


def layer_info(
    name: str, module: nn.Module, kind: str, probe: Probe | None, names: dict[int, str]
) -> LayerInfo:
    aliases: tuple[str, ...] = ()
    if probe is not None:
        aliases = tuple(names[k] for k in probe.aliases.get(id(module), ()) if k in names)
    return LayerInfo(
        name=name,
        kind=kind,
        output_shape=output_shape(module, probe),
        num_params=sum(p.numel() for p in module.parameters(recurse=False)),
        aliases=aliases,
    )


def never_runs(name: str, model: nn.Module, model_name: str, probe: Probe) -> LayerNotFoundError:
    """The error for a tap of ``name``, a module that exists but no pass has called."""
    named = [(n, m) for n, m in model.named_modules() if n]
    at = next((i for i, (n, _) in enumerate(named) if n == name), 0)
    ran = [(i, n) for i, (n, m) in enumerate(named) if is_leaf(m) and probe.ran(m)]
    before = [n for i, n in ran if i < at][-2:]
    after = [n for i, n in ran if i > at][:2]
    near = ", ".join(repr(n) for n in before + after) or "none"
    module = dict(named).get(name)
    if isinstance(module, (nn.ModuleList, nn.ModuleDict)):
        items = [f"{name}.{n}" for n, _ in module.named_children()][:2]
        return LayerNotFoundError(
            f"layer {name!r} of torch model {model_name} is an nn.{type(module).__name__}, a "
            "container without a forward() of its own, so it has no output: tap one of its "
            f"items ({', '.join(map(repr, items)) or 'none'}, ...) or the module that runs them"
        )
    return LayerNotFoundError(
        f"layer {name!r} never runs in forward() of torch model {model_name}: the module "
        "exists, but the model's forward() does not call it (a placeholder, or a Dropout/"
        f"drop_path that is skipped), so it has no activation; layers that run nearby: {near}. "
        "Pick one of those (innersight.layers(model) lists every layer that runs)"
    )


def unknown_layout(name: str, model_name: str, shape: tuple[int, ...], what: str) -> InputError:
    """The error for a tap of a rank-4 tensor whose layout :mod:`.detect` cannot tell."""
    return InputError(
        f"layer {name!r} of torch model {model_name} {what} a rank-4 tensor of shape {shape}, "
        "and innersight cannot tell whether it is (N, C, H, W) or (N, H, W, C): it comes from a "
        "functional op such as a permute, and neither the module type nor the shapes of "
        "neighbouring layers decide it. Say which when wrapping: innersight.wrap(model, "
        f"layer_layouts={{{name!r}: 'NCHW'}}) (or 'NHWC' for a channels-last tensor)"
    )

"""TorchAdapter: a torch ``nn.Module`` seen through innersight's numpy, channels-last boundary.

    >>> adapter = innersight.wrap(model)                   # NCHW model, numpy (N, H, W, C) in
    >>> fr = adapter.forward(x, taps=["features.0"])       # one pass, activations channels-last
    >>> values, grads = adapter.value_and_grad(x, objectives.Channel("features.3", 7))

Every call leaves the model as it found it (see :mod:`.hooks`): modules are switched to eval
mode for the call and back, hooks are removed in ``finally``, parameters and buffers are never
written, ``.grad`` is never touched (gradients come from ``torch.autograd.grad``).

Semantics worth knowing:

* A module that runs several times in one pass (a shared ``self.relu``) is read at its LAST call,
  by taps and by objectives alike.
* Channel/Neuron gradients stop the forward pass right after the objective's layer (its last
  call): filter maximization of an early layer never runs the rest of the network. Stopping needs
  each module's call count, learnt by the dry run of a declared ``input_shape`` or by the
  adapter's first pass (which therefore runs to the end); see :mod:`.probe`.
* ``forward().outputs`` are what the model returns (probabilities for a model ending in Softmax);
  Logit objectives read the pre-activation score when ``logits="auto"`` finds a final activation.
* Rank-4 activations are taken as NCHW and returned as NHWC, also for ``input_layout="NHWC"``.
* ``input_shape`` is the declared option only (None otherwise), so fully-convolutional models
  keep accepting any image size. Wrapping runs the model only to dry-run a declared
  ``input_shape``; ``layers()`` never runs it and reports ``output_shape == ()`` until a pass
  has shown the shapes.
* Threads: one adapter may be shared by several threads (``innersight.explain`` on the same
  model shares its cached adapter). Every pass (``forward``, ``predict_classes``,
  ``value_and_grad``, ``layer_value_and_grad``) runs under a per-adapter re-entrant lock, held
  while hooks are registered and training flags switched, so concurrent calls are serialised.
  Two *different* adapters of one module (e.g. wrapped with different options) do not share
  the lock: do not run them on the same module from two threads at once.
* Forward passes run under ``torch.no_grad()``, not ``inference_mode``: a model that caches
  tensors during its forward (rotary-embedding tables, lazy modules) must not keep inference
  tensors that would break its later training.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from innersight.core.adapter import BaseAdapter, Capability, ForwardResult, LayerInfo
from innersight.core.errors import (
    InputError,
    LayerNotFoundError,
    did_you_mean,
    summarize_names,
)
from innersight.core.objectives import Logit, Objective

from .capture import Capture, leaf_hook, logits_hook, objective_hook, tap_hook
from .hooks import Hook, StopForward, call_model, channels_first_hint, eval_mode, hooked
from .layout import grad_to_numpy, to_numpy, to_tensor
from .options import parse_options
from .probe import Probe, make_probe
from .relu import relu_override
from .targets import check_objective, logit_values

__all__ = ["TorchAdapter"]


def _is_leaf(module: nn.Module) -> bool:
    return next(module.children(), None) is None


class TorchAdapter(BaseAdapter):
    """ModelAdapter for a torch ``nn.Module``.

    Args:
        model: the module; never modified.
        **options: ``input_layout`` ("NCHW" | "NHWC"), ``input_shape`` (channels-last, no batch
            axis), ``logits`` ("auto" | True | False), ``device``; see :mod:`.options`.

    Raises:
        InputError: unknown or invalid options, or an ``input_shape`` the model rejects.
    """

    backend = "torch"
    capabilities = frozenset(
        {
            Capability.FORWARD,
            Capability.LAYER_TAPS,
            Capability.INPUT_GRADIENTS,
            Capability.LAYER_GRADIENTS,
            Capability.RELU_OVERRIDE,
        }
    )

    def __init__(self, model: nn.Module, **options: Any) -> None:
        if not isinstance(model, nn.Module):
            raise InputError(f"TorchAdapter needs a torch nn.Module, got {type(model).__name__}")
        self.model = model
        self.options = parse_options(model, options)
        self._modules = {n: m for n, m in model.named_modules(remove_duplicate=False) if n}
        self._probe: Probe | None = None
        self._lock = threading.RLock()
        if self.options.input_shape is not None:
            self._dry_run(self.options.input_shape)

    def __repr__(self) -> str:
        o = self.options
        return f"<TorchAdapter {self.name} ({o.input_layout}, {o.device}, {o.dtype})>"

    @property
    def name(self) -> str:
        return module_kind(self.model)

    @property
    def input_shape(self) -> tuple[int | None, ...] | None:
        return self.options.input_shape

    # -- layers ------------------------------------------------------------------------------
    def layers(self) -> list[LayerInfo]:
        """Leaf modules in ``named_modules`` order. Never runs the model: output shapes are
        known after the dry run of a declared ``input_shape`` or after the first call, ``()``
        before."""
        return [
            self._info(name, m, self._probe)
            for name, m in self.model.named_modules()
            if name and _is_leaf(m)
        ]

    def layer_info(self, name: str) -> LayerInfo:
        """Any named module, containers included; LayerNotFoundError with suggestions otherwise."""
        return self._info(name, self._module(name), self._probe)

    def check_taps(self, taps: Iterable[str]) -> tuple[str, ...]:
        if isinstance(taps, str):
            taps = (taps,)
        taps = tuple(dict.fromkeys(taps))
        for name in taps:
            self._module(name)
        return taps

    @staticmethod
    def _info(name: str, m: nn.Module, probe: Probe | None) -> LayerInfo:
        shape = probe.shape_of(m) if probe is not None else ()
        params = sum(p.numel() for p in m.parameters(recurse=False))
        return LayerInfo(name=name, kind=module_kind(m), output_shape=shape, num_params=params)

    def _module(self, name: Any) -> nn.Module:
        if isinstance(name, str) and name in self._modules:
            return self._modules[name]
        leaves = [n for n, m in self.model.named_modules() if n and _is_leaf(m)]
        raise LayerNotFoundError(
            f"layer {name!r} not found in torch model {self.name}; {summarize_names(leaves)} "
            "(names are named_modules() paths; containers can be tapped too)"
            f"{did_you_mean(str(name), self._modules)}"
        )

    # -- forward -----------------------------------------------------------------------------
    def forward(self, x: np.ndarray, *, taps: Iterable[str] = ()) -> ForwardResult:
        """Outputs and the activations of ``taps`` (channels-last numpy) from ONE pass."""
        taps = self.check_taps(taps)
        x_np = self._prepare(x)
        acts: dict[str, torch.Tensor] = {}
        probe, hooks = self._recorders(x_np)
        hooks += [Hook(self._modules[t], tap_hook(acts, t)) for t in taps]
        with self._lock, eval_mode(self.model), torch.no_grad(), hooked(hooks):
            out = self._call(self._tensor(x_np), x_np.shape)
            self._probe = self._probe or probe
        outputs = to_numpy(self._output_tensor(out))
        missing = [t for t in taps if t not in acts]
        if missing:
            raise InputError(
                f"layer(s) {', '.join(map(repr, missing))} did not run in the forward pass of "
                f"{self.name}; tap layers that the model's forward() calls"
            )
        return ForwardResult(outputs=outputs, activations={t: to_numpy(acts[t]) for t in taps})

    def _output_tensor(self, out: Any) -> torch.Tensor:
        if not isinstance(out, torch.Tensor):
            raise InputError(
                f"torch model {self.name} returned {type(out).__name__}, not a tensor; innersight "
                "needs a forward() that returns one tensor of outputs: wrap the model in a module "
                "that picks it (e.g. the logits of a tuple or dict)"
            )
        return out

    # -- gradients ---------------------------------------------------------------------------
    def value_and_grad(
        self, x: np.ndarray, objective: Objective, *, relu: str = "plain"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-sample values ``(N,)`` and d(sum of values)/d(x), channels-last like ``x``."""
        values, _, grads = self._gradient(x, objective, relu, layer=None)
        return values, grads

    def layer_value_and_grad(
        self, x: np.ndarray, objective: Objective, layer: str, *, relu: str = "plain"
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Values ``(N,)``, the activations of ``layer`` and d(sum of values)/d(activations).

        Activations and gradients are channels-last, (N, H, W, C) or (N, D) (Grad-CAM).
        """
        values, acts, grads = self._gradient(x, objective, relu, layer=layer)
        return values, cast(np.ndarray, acts), grads

    def _gradient(
        self, x: np.ndarray, objective: Objective, relu: str, layer: str | None
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        objective = check_objective(objective)
        self.check_relu(relu)
        wrt_module = None if layer is None else self._module(layer)
        if not isinstance(objective, Logit):
            self._module(objective.layer)
        x_np = self._prepare(x)
        cap = Capture()
        probe, hooks = self._recorders(x_np)
        if wrt_module is not None and layer is not None:
            hooks.append(Hook(wrt_module, leaf_hook(cap, layer)))
        hooks += self._objective_hooks(objective, cap)
        with self._lock, eval_mode(self.model), torch.inference_mode(False), torch.enable_grad():
            x_leaf = self._tensor(x_np).detach().requires_grad_(layer is None)
            if self._run_for_value(x_leaf, x_np.shape, objective, cap, hooks, relu):
                self._probe = self._probe or probe  # only a complete pass saw every module
            values, wrt = cap.result(objective, layer, x_leaf, self.name)
            total = values.sum()
            grad = None
            if total.requires_grad:
                (grad,) = torch.autograd.grad(total, [wrt], allow_unused=True)
        out_values = values.detach().float().cpu().numpy().astype(np.float32)
        if layer is None:
            return out_values, None, grad_to_numpy(grad, x_leaf, self.options.input_layout)
        g = torch.zeros_like(wrt) if grad is None else grad
        return out_values, to_numpy(wrt), to_numpy(g)

    def _run_for_value(
        self,
        x_leaf: torch.Tensor,
        shape: tuple[int, ...],
        objective: Objective,
        cap: Capture,
        hooks: list[Hook],
        relu: str,
    ) -> bool:
        """Run the pass; True when it ran to the end (not stopped early)."""
        # A clone as model input: a model normalising its input in place must not hit the leaf.
        x_in = x_leaf.clone() if x_leaf.requires_grad else x_leaf
        with relu_override(relu, self.name), hooked(hooks):
            try:
                out = self._call(x_in, shape)
            except StopForward:
                return False
            if isinstance(objective, Logit) and cap.value is None:
                cap.set_value(logit_values(objective, self._output_tensor(out)))
        return True

    def _objective_hooks(self, objective: Objective, cap: Capture) -> list[Hook]:
        if isinstance(objective, Logit):
            final = self.options.logits_from
            if final is None:
                return []
            return [Hook(self._modules[final], logits_hook(cap, objective, final), pre=True)]
        module = self._modules[objective.layer]
        # Without call counts yet (first pass of this adapter) the pass runs to the end, records
        # them, and the objective reads the last call; every later pass stops early.
        last_call = self._probe.calls_of(module) if self._probe is not None else sys.maxsize
        return [Hook(module, objective_hook(cap, objective, last_call))]

    # -- plumbing ----------------------------------------------------------------------------
    def _prepare(self, x: Any) -> np.ndarray:
        try:
            # On a GPU the tensor is a copy anyway: skip the host-side one (~1/3 of occlusion's
            # time on an H200). On the CPU torch.from_numpy shares memory, so copy there.
            x_np = self.check_input(x, copy=self.options.device.type == "cpu")
        except InputError as err:
            hint = channels_first_hint(getattr(x, "shape", ()), self.options.input_shape, str(err))
            raise InputError(f"{err}{hint}") from None
        return x_np

    def _tensor(self, x_np: np.ndarray) -> torch.Tensor:
        o = self.options
        return to_tensor(x_np, o.input_layout, o.device, o.dtype)

    def _call(self, t: torch.Tensor, numpy_shape: tuple[int, ...]) -> Any:
        return call_model(self.model, t, layout=self.options.input_layout, numpy_shape=numpy_shape)

    def _recorders(self, x_np: np.ndarray) -> tuple[Probe | None, list[Hook]]:
        """Shape/call-count recorders for the first pass (none once the probe is known)."""
        if self._probe is not None:
            return None, []
        return make_probe(self.model, tuple(x_np.shape[1:]))

    def _dry_run(self, shape: tuple[int, ...]) -> None:
        """One no-grad pass on zeros of the declared ``input_shape``: shapes up front.

        An InputError (the model rejects ``input_shape``) is raised at wrap time. Any other
        failure is left for the first real call to surface (wrapping must not fail because,
        say, a debugging hook raises); that call then records the shapes itself.
        """
        try:
            self.forward(np.zeros((1, *shape), dtype=np.float32))
        except InputError:
            raise
        except Exception:
            self._probe = None


def module_kind(module: Any) -> str:
    """The class name, or the original one for TorchScript modules (RecursiveScriptModule)."""
    return str(getattr(module, "original_name", None) or type(module).__name__)

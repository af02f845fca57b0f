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
* Rank-4 activations are returned channels-last: NCHW tensors are transposed, tensors a model
  keeps channels-last inside (timm ConvNeXt's permute -> LayerNorm -> Linear, Swin) are
  detected and returned as they are (:mod:`.detect`; ``layer_layouts=`` where it cannot tell).
* Once a pass has run, ``layers()`` lists the leaf modules that ran, in execution order, with
  their container aliases; modules that never run are left out and refused as taps
  (:mod:`.catalog`). Besides layer names, ``forward`` serves the special taps
  :data:`~innersight.core.LOGITS` and :func:`~innersight.core.input_tap`.
* NCHW models get a channels_last view of the input (fast convolutions); a model whose own
  ``x.view(...)`` needs contiguous NCHW memory makes the adapter fall back, once and for good,
  to a contiguous input and re-run the pass (:mod:`.layout`).
* After a gradient call with ``relu="guided"``/``"deconv"``, ``last_relu_report`` counts the
  ReLU calls overridden and the other activations left plain (:mod:`.relu`); None otherwise.
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
* Several inputs, extra forward arguments, token ids: :meth:`TorchAdapter.with_inputs` derives
  an adapter for an :class:`~innersight.core.inputspec.InputSpec` (:mod:`.packing`). It shares
  the model, options and lock, and what passes learn (shapes, call counts, layouts) with every
  adapter derived for the same ``spec.structure()``: deriving one for new extra arguments runs
  nothing. Integer inputs get no gradient: input gradients of a model whose inputs are all
  token ids are a CapabilityError naming the embedding layer to explain instead; the integer
  parts of mixed inputs get zero gradient.
* A model returning several outputs (tuple, dict, ``ModelOutput``) is explained through the
  ``output=`` option; without it, it is refused with the list of its outputs.
* :meth:`TorchAdapter.from_native` / :meth:`TorchAdapter.to_native` take torch tensors in and
  give maps back as tensors (:mod:`.native`).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from innersight.core.adapter import (
    LOGITS,
    BaseAdapter,
    Capability,
    ForwardResult,
    LayerInfo,
    is_input_tap,
)
from innersight.core.errors import (
    InputError,
    LayerNotFoundError,
    did_you_mean,
    summarize_names,
)
from innersight.core.inputspec import InputSpec

from .capture import input_tap_hook, tap_hook
from .catalog import layer_info, listed, never_runs, unknown_layout
from .deeplift import DeepLiftMixin
from .detect import resolve
from .gradients import GradientPasses
from .hooks import (
    Hook,
    call_model,
    channels_first_hint,
    eval_mode,
    hooked,
    is_stride_error,
)
from .layout import to_numpy, to_tensor
from .lrp import LrpMixin
from .native import from_native, to_native
from .options import parse_options
from .override import LayerOverrideMixin
from .packing import Feed, PassState, check_ids, ids_out_of_range, no_token_gradient
from .probe import Probe, make_probe
from .relu import ReluReport
from .targets import select_output

__all__ = ["TorchAdapter"]

_T = TypeVar("_T")


class TorchAdapter(LayerOverrideMixin, DeepLiftMixin, LrpMixin, GradientPasses, BaseAdapter):
    """ModelAdapter for a torch ``nn.Module``.

    Args:
        model: the module; never modified.
        **options: ``input_layout`` ("NCHW" | "NHWC" | "NCL" | "NLC"), ``input_shape``
            (channels-last, no batch axis), ``logits`` ("auto" | True | False), ``device``,
            ``layer_layouts`` ({name: "NCHW" | "NHWC"}), ``output`` (index or name of the
            output explained); see :mod:`.options`.

    Attributes:
        last_relu_report: after ``value_and_grad``/``layer_value_and_grad`` with
            ``relu="guided"``/``"deconv"``: ``{"overridden": n, "not_overridden": {kind: n}}``
            for that pass; None after a plain one.

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
            Capability.CROPPED_FORWARD,
            Capability.SEVERAL_INPUTS,
        }
    ) | (LayerOverrideMixin.provides | DeepLiftMixin.provides | LrpMixin.provides)

    def __init__(self, model: nn.Module, **options: Any) -> None:
        if not isinstance(model, nn.Module):
            raise InputError(f"TorchAdapter needs a torch nn.Module, got {type(model).__name__}")
        self.model = model
        self.options = parse_options(model, options)
        self._modules = {n: m for n, m in model.named_modules(remove_duplicate=False) if n}
        self._names: dict[int, str] = {}
        for n, m in model.named_modules():
            if n:
                self._names.setdefault(id(m), n)
        self._state = PassState()  # probe, contiguous fallback; shared by same-structure adapters
        self._family: dict[Any, PassState] = {}  # per spec.structure(), for derived adapters
        self._spec: InputSpec | None = None  # None: the plain adapter, one float batch
        self._feed: Feed | None = None
        self._lock = threading.RLock()
        self.last_relu_report: ReluReport | None = None
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
        """The declared option; for a derived adapter, one sample of the batch it takes."""
        return self.options.input_shape if self._feed is None else self._feed.sample_shape

    @property
    def _probe(self) -> Probe | None:
        return self._state.probe

    @_probe.setter
    def _probe(self, probe: Probe | None) -> None:
        self._state.probe = probe

    @property
    def _contiguous(self) -> bool:
        """True once the model failed on the channels_last view (see :mod:`.layout`)."""
        return self._state.contiguous

    @_contiguous.setter
    def _contiguous(self, value: bool) -> None:
        self._state.contiguous = value

    # -- several inputs, extra arguments, tensors ----------------------------------------------
    def with_inputs(self, spec: InputSpec) -> TorchAdapter:
        """An adapter for the same model and options that takes the batch ``spec`` describes
        (packed rows, or one input of its own shape and dtype) and calls the model with the
        inputs followed by ``spec.extra_args``; see :mod:`.packing`. Cheap: nothing runs, and
        what passes learn is shared by every adapter derived for ``spec.structure()``."""
        feed = Feed(spec, self.options)
        derived = copy.copy(self)
        derived._spec, derived._feed = spec, feed
        with self._lock:
            derived._state = self._family.setdefault(spec.structure(), PassState())
        derived.last_relu_report = None
        derived.capabilities = self.capabilities - {Capability.CROPPED_FORWARD}
        return derived

    def from_native(self, x: Any) -> np.ndarray | None:
        """A torch tensor as channels-last numpy (a copy; the tensor is not touched), or None
        for anything else (:mod:`.native`)."""
        return from_native(x, self.options.input_layout)

    def to_native(self, values: np.ndarray, like: Any) -> torch.Tensor:
        """A map as a tensor on ``like``'s device, channels where ``like`` has them."""
        return to_native(values, like, self.options.input_layout)

    # -- layers ------------------------------------------------------------------------------
    def layers(self) -> list[LayerInfo]:
        """Leaf modules. Never runs the model: before any pass, every leaf in definition order
        with unknown shapes ``()``; once a pass has run (the dry run of a declared
        ``input_shape``, or the first call), only the leaves that ran, in the order their last
        call completed, with output shapes and container aliases."""
        probe = self._shown_probe()
        return [self._info(name, m) for name, m in listed(self.model, probe)]

    def layer_info(self, name: str) -> LayerInfo:
        """Any named module, containers included; LayerNotFoundError with suggestions for an
        unknown name, or for a module that never runs."""
        module = self._module(name)
        self._check_ran(name, module)
        return self._info(name, module)

    def check_taps(self, taps: Iterable[str]) -> tuple[str, ...]:
        """Validate layer names, :data:`LOGITS` and :func:`input_tap` names, in request order."""
        if isinstance(taps, str):
            taps = (taps,)
        taps = tuple(dict.fromkeys(taps))
        for tap in taps:
            if tap != LOGITS:
                self._check_layer(is_input_tap(tap) or tap, tap)
        return taps

    def _info(self, name: str, m: nn.Module) -> LayerInfo:
        return layer_info(name, m, module_kind(m), self._shown_probe(), self._names)

    def _shown_probe(self) -> Probe | None:
        """The probe whose shapes ``layers()`` shows: this adapter's, or for the plain adapter
        of a model only its derived adapters can run (several inputs, token ids), theirs."""
        if self._probe is not None or self._spec is not None:
            return self._probe
        return next((s.probe for s in self._family.values() if s.probe is not None), None)

    def _module(self, name: Any) -> nn.Module:
        if isinstance(name, str) and name in self._modules:
            return self._modules[name]
        leaves = [n for n, m in listed(self.model, self._probe)]
        raise LayerNotFoundError(
            f"layer {name!r} not found in torch model {self.name}; {summarize_names(leaves)} "
            "(names are named_modules() paths; containers can be tapped too)"
            f"{did_you_mean(str(name), self._modules)}"
        )

    def _check_layer(self, name: str, tap: str | None = None) -> None:
        """Exists; once the probe knows: runs, and its tensor has a known layout."""
        module = self._module(name)
        if self._probe is not None:
            self._check_ran(name, module)
            self._layout(tap or name)

    def _check_ran(self, name: str, module: nn.Module) -> None:
        probe = self._probe
        scripted = isinstance(module, torch.jit.ScriptModule)
        if probe is not None and not scripted and not probe.ran(module):
            raise never_runs(name, self.model, self.name, probe)

    def _layout(self, tap: str) -> str:
        """The layout of the rank-4 tensor ``tap`` gives ("NCHW" for other ranks and before
        the probe); InputError naming ``layer_layouts`` where it cannot be known."""
        probe = self._probe
        layer = is_input_tap(tap)
        module = self._modules.get(layer or tap) if tap != LOGITS else None
        rec = probe.records.get(id(module)) if probe is not None and module is not None else None
        if probe is None or probe.layouts is None or rec is None:
            return "NCHW"
        shape = rec.in_shape if layer else rec.out_shape
        if shape is None or len(shape) != 4:
            return "NCHW"
        table = probe.layouts.inputs if layer else probe.layouts.outputs
        layout = table.get(id(module))
        if layout is None:
            raise unknown_layout(tap, self.name, shape, "receives" if layer else "returns")
        return layout

    # -- forward -----------------------------------------------------------------------------
    def forward(self, x: np.ndarray, *, taps: Iterable[str] = ()) -> ForwardResult:
        """Outputs and the activations of ``taps`` (channels-last numpy) from ONE pass.

        ``taps`` may hold layer names, :data:`~innersight.core.LOGITS` (the scores Logit
        objectives read) and :func:`~innersight.core.input_tap` names (what a layer receives).
        """
        taps = self.check_taps(taps)
        x_np = self._prepare(x)
        with self._lock:
            out, acts = self._retrying(x_np, lambda: self._forward_pass(x_np, taps))
            outputs = self._output_tensor(out)
            if LOGITS in taps and LOGITS not in acts:
                acts[LOGITS] = outputs
            self._check_missing([t for t in taps if t not in acts])
            activations = {t: to_numpy(acts[t], self._layout(t)) for t in taps}
        return ForwardResult(outputs=to_numpy(outputs), activations=activations)

    def _forward_pass(
        self, x_np: np.ndarray, taps: tuple[str, ...]
    ) -> tuple[Any, dict[str, torch.Tensor]]:
        acts: dict[str, torch.Tensor] = {}
        probe, recorders = self._recorders(x_np)
        hooks = [h for t in taps for h in self._tap_hooks(t, acts)] + recorders
        with eval_mode(self.model), torch.no_grad(), hooked(hooks):
            out = self._call(self._tensor(x_np), x_np.shape)
        self._adopt(probe)
        return out, acts

    def _tap_hooks(self, tap: str, acts: dict[str, torch.Tensor]) -> list[Hook]:
        if tap == LOGITS:
            final = self.options.logits_from
            if final is None:
                return []  # the outputs themselves
            return [Hook(self._modules[final], input_tap_hook(acts, LOGITS), pre=True)]
        layer = is_input_tap(tap)
        if layer is not None:
            return [Hook(self._modules[layer], input_tap_hook(acts, tap), pre=True)]
        return [Hook(self._modules[tap], tap_hook(acts, tap))]

    def _check_missing(self, missing: list[str]) -> None:
        for tap in missing:
            self._check_ran(tap, self._modules[is_input_tap(tap) or tap])
        if missing:
            raise InputError(
                f"layer(s) {', '.join(map(repr, missing))} did not run in this forward pass of "
                f"{self.name} (they ran in an earlier one: the model's forward() depends on "
                "its input); tap layers that run for every input"
            )

    def _output_tensor(self, out: Any) -> torch.Tensor:
        """The tensor explained among what the model returned (the ``output`` option)."""
        return select_output(out, self.options.output, self.name)

    # -- cropped forwards (exact incremental occlusion, see :mod:`.incremental`) -------------
    def crop_graph(self, input_shape: tuple[int, ...]) -> dict[str, Any]:
        """The layers that can be recomputed on a crop, for channels-last ``input_shape``."""
        if self._spec is not None:
            why = "an adapter derived for an InputSpec (several inputs, extra args) is not cropped"
            return {"nodes": [], "stop": why, "tail_macs": 0.0, "cache_bytes": 0, "tail_bytes": 0}
        from . import incremental  # torch.fx, only when asked

        return incremental.crop_graph(self, input_shape)

    def crop_session(
        self, x: np.ndarray, sizes: Any, *, tap: str | None = None
    ) -> Callable[..., np.ndarray]:
        """Cache the activations of ``x``; return the cropped run (:mod:`.incremental_run`)."""
        from . import incremental

        return incremental.crop_session(self, x, sizes, tap)

    # -- plumbing ----------------------------------------------------------------------------
    def _prepare(self, x: Any) -> np.ndarray:
        """The validated numpy batch (a copy the adapter owns)."""
        feed = self._feed
        if feed is not None and not feed.spec.packed and feed.integer[0]:
            return check_ids(x, feed.spec)
        try:
            # On a GPU the tensor is a copy anyway: skip the host-side one (~1/3 of occlusion's
            # time on an H200). On the CPU torch.from_numpy shares memory, so copy there.
            x_np = self.check_input(x, copy=self.options.device.type == "cpu")
        except InputError as err:
            hint = channels_first_hint(getattr(x, "shape", ()), self.options.input_shape, str(err))
            raise InputError(f"{err}{hint}") from None
        return x_np

    def _tensor(self, x_np: np.ndarray) -> torch.Tensor:
        """The batch as the one tensor gradients are taken by (packed rows stay packed)."""
        o = self.options
        if self._feed is not None:
            return self._feed.tensor(x_np, self._contiguous)
        return to_tensor(x_np, o.input_layout, o.device, o.dtype, contiguous=self._contiguous)

    def _call(self, t: torch.Tensor, numpy_shape: tuple[int, ...]) -> Any:
        """The model on the batch tensor ``t`` (split into its inputs, extras appended)."""
        layout = self.options.input_layout
        if self._feed is None:
            return call_model(self.model, t, layout=layout, numpy_shape=numpy_shape)
        first, *more = self._feed.arguments(t, self._contiguous)
        return call_model(self.model, first, layout=layout, numpy_shape=numpy_shape, more=more)

    def _check_input_gradients(self) -> None:
        """CapabilityError when there is no input to differentiate by (token ids only)."""
        if self._feed is not None and self._feed.all_integer:
            raise no_token_gradient(self.model, self.name)

    def _retrying(self, x_np: np.ndarray, run: Callable[[], _T]) -> _T:
        """``run()`` (one whole pass); when the model's own code fails on the channels_last
        view (``x.view`` after a conv), once more on a contiguous NCHW input, which this
        adapter then keeps using. Call with the lock held."""
        try:
            return run()
        except IndexError as err:
            if self._feed is not None and any(self._feed.integer) and "out of range" in str(err):
                raise ids_out_of_range(self.model, x_np) from err
            raise
        except RuntimeError as err:
            if self._feed is not None:
                nchw_view = self._feed.has_nchw_view()
            else:
                nchw_view = self.options.input_layout == "NCHW" and x_np.ndim == 4
            if self._contiguous or not nchw_view or not is_stride_error(err):
                raise
        self._contiguous = True
        return run()

    def _recorders(self, x_np: np.ndarray) -> tuple[Probe | None, list[Hook]]:
        """Recorders for the first pass (none once the probe is known)."""
        if self._probe is not None:
            return None, []
        sample = self._feed.probe_shape if self._feed is not None else tuple(x_np.shape[1:])
        return make_probe(self.model, sample)

    def _adopt(self, probe: Probe | None) -> None:
        """Keep the probe of a complete pass, with the layouts it implies."""
        if self._probe is not None or probe is None:
            return
        outputs: dict[int, str] = {}
        inputs: dict[int, str] = {}
        for name, layout in self.options.layer_layouts:
            layer = is_input_tap(name)
            (inputs if layer else outputs)[id(self._modules[layer or name])] = layout
        modules = {id(m): m for m in self.model.modules()}
        probe.layouts = resolve(probe, modules, self.options.input_layout, outputs, inputs)
        self._probe = probe

    def _dry_run(self, shape: tuple[int, ...]) -> None:
        """One no-grad pass on zeros of the declared ``input_shape``: shapes up front.

        An InputError (the model rejects ``input_shape``) is raised at wrap time. Any other
        failure is left for the first real call to surface (wrapping must not fail because,
        say, a debugging hook raises); that call then records the shapes itself.
        """
        try:
            self.forward(np.zeros((1, *shape), dtype=np.float32))
        except InputError as err:
            if not isinstance(err.__cause__, TypeError):  # forward() wants more arguments:
                raise  # a several-input model, whose derived adapters learn the shapes
            self._probe = None
        except Exception:
            self._probe = None


def module_kind(module: Any) -> str:
    """The class name, or the original one for TorchScript modules (RecursiveScriptModule)."""
    return str(getattr(module, "original_name", None) or type(module).__name__)

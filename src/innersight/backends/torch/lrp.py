"""torch adapter method ``lrp_relevance``: layer-wise relevance propagation through hooks.

How (the gradient-modification formulation zennit uses): one forward pass with a forward hook
on every leaf module. The hook of a layer with a rule replaces the layer's output by the output
of a custom autograd Function whose forward is the layer's own output and whose backward maps
the relevance of the outputs to the relevance of the inputs with the rule
(:func:`innersight.core.lrp.propagate`). Differentiating the objective (whose gradient at the
scores is multiplied by the scores: ``R = onehot * z``) then carries relevance, not gradients,
down to the input. Modified weights (``W+``, ``W + gamma W+``, ...) are computed in the backward
pass from the module's live parameters; the module is never changed (no weight edits, no
``load_state_dict``) and every hook is removed when the call ends.

Layers, by module type (leaf modules; what a layer computes in its own ``forward``):

* dense (``nn.Linear``), conv (``nn.Conv1d/2d/3d``): the composite's rule.
* batchnorm (``nn.BatchNorm1d/2d/3d``, inference statistics): with ``merge_batchnorm`` and
  right after a dense/conv layer whose output only it reads, folded into that layer (zennit's
  ``SequentialMergeBatchNorm``); otherwise its own layer, the affine map
  ``x * gamma / sqrt(var + eps) + (beta - mean * gamma / sqrt(var + eps))``, with the
  composite's ``batchnorm`` rule (Pass by default).
* avgpool (``nn.AvgPool*``, ``nn.AdaptiveAvgPool*``): Epsilon (zennit's Norm) or Pass.
* maxpool (``nn.MaxPool*``, ``nn.AdaptiveMaxPool*``): the plain gradient (winner takes all).
* activation (ReLU family, tanh, sigmoid, softplus, ...): Pass (``R_in = R``).
* reshape (``nn.Flatten``, ``nn.Unflatten``, ``nn.Dropout*``, ``nn.Identity``): the gradient.
* a leaf module that returns its input itself (timm's ``DropPath`` in eval): passed.
* a final ``nn.Softmax`` / ``nn.LogSoftmax`` (or ``F.softmax``) whose output the model returns:
  left out, LRP starts at its input (the pre-softmax scores, as Captum and zennit do); the
  ``logits`` option's final activation of an ``nn.Sequential`` is left out the same way.
* any other leaf module (LayerNorm, MultiheadAttention, GELU, SiLU, Hardswish, Embedding, a
  softmax that is not the output, ...): a CapabilityError naming them.

Operations a ``forward()`` calls outside leaf modules (:mod:`.lrp_functional`): a residual
sum ``x + y`` / ``x += y`` of same-shaped tensors takes zennit's Norm rule (the composite's
``sum`` rule); ``x.mean(dims)`` and ``F.adaptive_avg_pool2d`` the ``avgpool`` rule;
``F.batch_norm`` with running statistics the ``batchnorm`` rule (merged like the module);
reshapes, ``torch.cat``, ``F.relu`` and ``F.max_pool2d`` keep their plain gradient, which is
their rule. Functional gated activations, products of activations, LayerNorm, attention and
functional linear layers are refused, named.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from innersight.core.adapter import Capability
from innersight.core.errors import InputError
from innersight.core.lrp import (
    Composite,
    Epsilon,
    Gradient,
    Pass,
    Rule,
    check_request,
    no_rule_error,
    propagate,
)
from innersight.core.objectives import Custom, Logit, Objective

from .hooks import Hook, StopForward, eval_mode, hooked
from .layout import grad_to_numpy
from .lrp_functional import Ops, SumFunction, Watch, batchnorm_args
from .targets import check_objective, score_values

if TYPE_CHECKING:
    from .options import TorchOptions

__all__ = ["LrpMixin", "module_kind"]

_KINDS: tuple[tuple[str, tuple[type[nn.Module], ...]], ...] = (
    ("dense", (nn.Linear,)),
    ("conv", (nn.Conv1d, nn.Conv2d, nn.Conv3d)),
    ("batchnorm", (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)),
    (
        "avgpool",
        (
            nn.AvgPool1d,
            nn.AvgPool2d,
            nn.AvgPool3d,
            nn.AdaptiveAvgPool1d,
            nn.AdaptiveAvgPool2d,
            nn.AdaptiveAvgPool3d,
        ),
    ),
    (
        "maxpool",
        (
            nn.MaxPool1d,
            nn.MaxPool2d,
            nn.MaxPool3d,
            nn.AdaptiveMaxPool1d,
            nn.AdaptiveMaxPool2d,
            nn.AdaptiveMaxPool3d,
        ),
    ),
    (
        "activation",
        (
            nn.ReLU,
            nn.ReLU6,
            nn.LeakyReLU,
            nn.PReLU,
            nn.RReLU,
            nn.ELU,
            nn.SELU,
            nn.CELU,
            nn.Hardtanh,
            nn.Tanh,
            nn.Sigmoid,
            nn.Hardsigmoid,
            nn.LogSigmoid,
            nn.Softplus,
            nn.Softsign,
            nn.Threshold,
            nn.Hardshrink,
            nn.Softshrink,
            nn.Tanhshrink,
        ),
    ),
    (
        "reshape",
        (
            nn.Flatten,
            nn.Unflatten,
            nn.Identity,
            nn.Dropout,
            nn.Dropout1d,
            nn.Dropout2d,
            nn.Dropout3d,
            nn.AlphaDropout,
        ),
    ),
)


def module_kind(module: nn.Module) -> str | None:
    """The LRP kind of a leaf module (see :data:`innersight.core.lrp.KINDS`), or None."""
    for kind, types in _KINDS:
        if type(module) in types:
            return kind
    return None


# -- one layer as the rule algebra sees it ----------------------------------------------------


class _Layer(Ops):
    """:class:`innersight.core.lrp.LayerMath` for one call of a layer ``fn(x, weight, bias)``
    (a torch module, or an operation its parent's ``forward()`` calls)."""

    def __init__(self, fn: Callable[..., torch.Tensor], params: Any, x: torch.Tensor) -> None:
        self.fn, self.shape = fn, x.shape
        self.weight, self.bias = params
        self.to_bounds: Any = None  # set by the pass: ZBox bounds shaped like an input
        self.z: torch.Tensor | None = None  # the output after a merged batch norm

    @classmethod
    def of_module(cls, module: nn.Module, kind: str, x: torch.Tensor) -> _Layer:
        return cls(_affine(module, kind), _params(module, kind), x)

    def merge(self, scale: torch.Tensor, shift: torch.Tensor, z: torch.Tensor) -> None:
        """Fold a following batch norm ``y * scale + shift`` into this layer."""
        if self.weight is None:  # pragma: no cover - only dense/conv layers are merged
            return
        shape = (-1,) + (1,) * (self.weight.ndim - 1)
        self.weight = self.weight * scale.view(shape)
        self.bias = shift if self.bias is None else self.bias * scale + shift
        self.z = z.detach()

    def output(self, x: torch.Tensor, weight: Any, bias: Any) -> torch.Tensor:
        w = None if self.weight is None else weight(self.weight)
        b = None if bias is None or self.bias is None else bias(self.bias)
        return self.fn(x, w, b)

    def backward(self, weight: Any, v: torch.Tensor) -> torch.Tensor:
        probe = torch.zeros(self.shape, dtype=v.dtype, device=v.device, requires_grad=True)
        with torch.enable_grad():
            out = self.fn(probe, None if self.weight is None else weight(self.weight), None)
            (g,) = torch.autograd.grad(out, probe, grad_outputs=v)
        return g

    def bounds(self, value: Any, like: torch.Tensor) -> torch.Tensor:
        return self.to_bounds(value, like)


def _params(module: nn.Module, kind: str) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(weight, bias) as the affine map sees them, detached (batch norm: folded statistics)."""
    if kind == "batchnorm":
        with torch.no_grad():
            return _batchnorm_params(module)
    weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
    return (
        None if weight is None else weight.detach(),
        None if bias is None else bias.detach(),
    )


def _batchnorm_params(bn: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch norm in inference as ``x * scale + shift``."""
    if bn.running_mean is None or bn.running_var is None:
        raise InputError(
            f"{type(bn).__name__} without running statistics (track_running_stats=False) "
            "normalises each batch with its own statistics: lrp needs inference statistics; "
            "use input_x_gradient or integrated_gradients for this model"
        )
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale.detach(), shift.detach()


def _affine(module: nn.Module, kind: str) -> Callable[..., torch.Tensor]:
    """``(x, weight, bias) -> output`` of the module with the given parameters."""
    if kind == "dense":
        return lambda x, w, b: F.linear(x, w, b)
    if kind == "conv":
        conv: Any = module
        return lambda x, w, b: conv._conv_forward(x, w, b)
    if kind == "batchnorm":
        return _channel_affine
    return lambda x, w, b: module.forward(x)  # pooling: no parameters, and no hooks re-run


def _channel_affine(x: torch.Tensor, w: Any, b: Any) -> torch.Tensor:
    """Batch norm in inference: ``x * w + b`` per channel (axis 1)."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    out = x * w.view(shape)
    return out if b is None else out + b.view(shape)


# -- the autograd Functions -------------------------------------------------------------------


class _RuleFunction(torch.autograd.Function):
    """Forward: the layer's output; backward: the rule's relevance of the input."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, out: torch.Tensor, rule: Any, layer: Any) -> Any:
        ctx.save_for_backward(x, out)
        ctx.rule, ctx.layer = rule, layer
        return out.clone()

    @staticmethod
    def backward(ctx: Any, r: torch.Tensor) -> tuple[Any, None, None, None]:
        x, out = ctx.saved_tensors
        z = out if ctx.layer.z is None else ctx.layer.z
        return propagate(ctx.rule, ctx.layer, x.detach(), r, z), None, None, None


class _PassFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, out: torch.Tensor) -> Any:
        return out.clone()

    @staticmethod
    def backward(ctx: Any, r: torch.Tensor) -> tuple[torch.Tensor, None]:
        return r, None


class _TimesScores(torch.autograd.Function):
    """Identity forward; backward ``grad * scores``: the relevance at the scores."""

    @staticmethod
    def forward(ctx: Any, scores: torch.Tensor) -> Any:
        ctx.save_for_backward(scores)
        return scores.clone()

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        (scores,) = ctx.saved_tensors
        return g * scores


def _apply(fn: type[torch.autograd.Function], *args: Any) -> Any:
    return cast(Any, fn).apply(*args)


# -- one pass ---------------------------------------------------------------------------------

_PROBABILITY_MODULES = (nn.Softmax, nn.LogSoftmax)


class _Pass:
    """The hooks of one LRP pass and what they learn (unknown layers, the logits)."""

    def __init__(self, rules: Composite, names: dict[int, str], bounds: Any) -> None:
        self.rules, self.names, self.bounds = rules, names, bounds
        self.first_seen = False
        self.unknown: dict[str, str] = {}
        self.logits: torch.Tensor | None = None
        self.saved: dict[int, torch.Tensor] = {}
        self.depth = 0  # > 0 inside a leaf module's call
        self.flagged: dict[str, int] = {}  # operations outside leaf modules without a rule
        self.produced: dict[int, tuple[torch.Tensor, _Layer]] = {}  # dense/conv outputs
        # softmax outputs -> (output, input, where, what): left out if it is the model's output
        self.probabilities: dict[int, tuple[torch.Tensor, torch.Tensor, str, str]] = {}

    def problems(self) -> list[tuple[str, str]]:
        """(where, what) of every layer and functional operation without a rule."""
        found = list(self.unknown.items())
        for what, count in self.flagged.items():
            found.append(("forward()", f"{what}, {count} call{'s' if count > 1 else ''}"))
        for _, _, where, what in self.probabilities.values():
            found.append((where, f"{what} before the output"))
        return found

    def start(self, scores: torch.Tensor) -> torch.Tensor:
        """The tensor LRP starts from: the input of a softmax that computes ``scores``."""
        found = self.probabilities.pop(id(scores), None)
        return found[1] if found is not None and found[0] is scores else scores

    def rule(self, kind: str, name: str) -> Rule:
        first = kind in self.rules.first_kinds and not self.first_seen
        self.first_seen = self.first_seen or kind in self.rules.first_kinds
        return self.rules.rule_for(kind, name, first)

    def pre_hook(self, module: nn.Module, args: Any) -> Any:
        """Element-wise layers may work in place: they get a copy, the original is kept."""
        self.depth += 1
        if module_kind(module) != "activation" or not args:
            return None
        self.saved[id(module)] = args[0]
        return (args[0].clone(), *args[1:])

    def hook(self, module: nn.Module, args: Any, out: Any) -> Any:
        try:
            return self._replace(module, args, out)
        finally:
            self.depth -= 1

    def _replace(self, module: nn.Module, args: Any, out: Any) -> Any:
        kind = module_kind(module)
        x = self.saved.pop(id(module), args[0] if args else None)
        if kind is None:
            return self._unknown(module, x, out)
        rule = self.rule(kind, self.names.get(id(module), ""))
        if not isinstance(x, torch.Tensor):
            return None
        if kind == "batchnorm" and self.rules.merge_batchnorm:
            rule = self.merged(lambda: _batchnorm_params(module), x, out) or rule
        return self.apply(kind, rule, x, out, lambda: _Layer.of_module(module, kind, x))

    def _unknown(self, module: nn.Module, x: Any, out: Any) -> None:
        """A module of no known kind: an identity in eval (DropPath), a softmax (left out if
        it computes the model's output), or a layer without a rule."""
        if out is x:
            return
        name = self.names.get(id(module), "?")
        if isinstance(module, _PROBABILITY_MODULES) and isinstance(out, torch.Tensor):
            self.probabilities[id(out)] = (out, x, name, type(module).__name__)
            return
        self.unknown.setdefault(name, type(module).__name__)

    def apply(
        self, kind: str, rule: Rule, x: torch.Tensor, out: torch.Tensor, layer: Any
    ) -> torch.Tensor | None:
        """``out`` replaced by the output of the rule's autograd Function (None: kept)."""
        if isinstance(rule, Gradient):
            return None
        if isinstance(rule, Pass):
            return _apply(_PassFunction, x, out.detach()) if x.shape == out.shape else None
        made: _Layer = layer()
        made.to_bounds = self.bounds
        y = _apply(_RuleFunction, x, out.detach(), rule, made)
        if kind in ("dense", "conv"):
            self.produced[id(y)] = (y, made)
        return cast(torch.Tensor, y)

    def merged(self, params: Callable[[], Any], x: torch.Tensor, out: Any) -> Rule | None:
        """Fold the batch norm ``x * scale + shift`` (``(scale, shift) = params()``) into the
        dense/conv layer whose output ``x`` is: Pass for the batch norm then, else None."""
        found = self.produced.pop(id(x), None)
        if found is None or found[0] is not x:
            return None
        with torch.no_grad():
            scale, shift = params()
        found[1].merge(scale, shift, out)
        return Pass()

    def functional(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], found: Any
    ) -> Any:
        """An operation ``forward()`` calls outside leaf modules (see :mod:`.lrp_functional`)."""
        kind, what = found
        if kind == "sum":
            rule = self.rules.rule_for("sum", "", False)
            if isinstance(rule, Epsilon):
                return _apply(SumFunction, func, rule, *args)
        out = func(*args, **kwargs)
        if kind is None:
            self.flagged[what] = self.flagged.get(what, 0) + 1
        elif kind == "probability":
            self.probabilities[id(out)] = (out, args[0], "forward()", what)
        elif kind in ("avgpool", "batchnorm"):
            return self._functional_layer(kind, func, args, kwargs, out)
        return out

    def _functional_layer(
        self, kind: str, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any
    ) -> Any:
        """Average pooling (a mean) or an inference batch norm called functionally."""
        x, rest = args[0], args[1:]
        if kind == "avgpool":
            replaced = self.apply(
                kind,
                self.rule(kind, ""),
                x,
                out,
                lambda: _Layer(_pool(func, rest, kwargs), (None, None), x),
            )
            return out if replaced is None else replaced
        params = batchnorm_args(args, kwargs)
        assert params is not None  # classify() checked it
        merged = self.merged(lambda: params, x, out) if self.rules.merge_batchnorm else None
        rule = merged or self.rule(kind, "")
        replaced = self.apply(kind, rule, x, out, lambda: _Layer(_channel_affine, params, x))
        return out if replaced is None else replaced

    def logits_hook(self, module: nn.Module, args: Any) -> None:
        self.logits = args[0] if args else None
        raise StopForward


def _pool(func: Any, rest: tuple[Any, ...], kwargs: dict[str, Any]) -> Callable[..., Any]:
    """``(x, weight, bias) -> func(x, *rest, **kwargs)``: a pooling without parameters."""
    return lambda x, w, b: func(x, *rest, **kwargs)


class LrpMixin:
    """Mixed into :class:`~.adapter.TorchAdapter`: ``lrp_relevance`` (see the module doc)."""

    provides: frozenset[Capability] = frozenset({Capability.LRP})

    if TYPE_CHECKING:
        model: nn.Module
        options: TorchOptions
        _modules: dict[str, nn.Module]
        _lock: Any

        @property
        def name(self) -> str: ...

        def _prepare(self, x: Any) -> np.ndarray: ...
        def _tensor(self, x_np: np.ndarray) -> torch.Tensor: ...
        def _call(self, t: torch.Tensor, numpy_shape: tuple[int, ...]) -> Any: ...
        def _output_tensor(self, out: Any) -> torch.Tensor: ...

    def lrp_relevance(
        self, x: np.ndarray, objective: Objective, rules: Composite
    ) -> tuple[np.ndarray, np.ndarray]:
        """Values ``(N,)`` of the output objective and the relevance of ``x`` (channels-last,
        float32) under the composite ``rules`` (see :class:`innersight.core.lrp.LrpAdapter`)."""
        objective = check_request(check_objective(objective), rules)
        x_np = self._prepare(x)
        with self._lock:
            return self._lrp_pass(x_np, objective, rules)

    def _lrp_pass(
        self, x_np: np.ndarray, objective: Logit | Custom, rules: Composite
    ) -> tuple[np.ndarray, np.ndarray]:
        names = {id(m): n for n, m in reversed(list(self.model.named_modules()))}
        state = _Pass(rules, names, lambda v, like: self._bounds(v, like))
        with eval_mode(self.model), torch.inference_mode(False), torch.enable_grad():
            x_leaf = self._tensor(x_np).detach().requires_grad_(True)
            with hooked(self._lrp_hooks(state)), Watch(state):
                scores = state.start(self._lrp_scores(x_leaf.clone(), x_np.shape, state))
            if state.problems():
                raise no_rule_error(f"torch model {self.name}", state.problems())
            values = score_values(objective, _apply(_TimesScores, scores))
            (grad,) = torch.autograd.grad(values.sum(), [x_leaf], allow_unused=True)
        out_values = values.detach().float().cpu().numpy().astype(np.float32)
        return out_values, grad_to_numpy(grad, x_leaf, self.options.input_layout)

    def _lrp_hooks(self, state: _Pass) -> list[Hook]:
        final = self.options.logits_from
        hooks: list[Hook] = []
        for name, module in self.model.named_modules():
            if name == final:
                hooks.append(Hook(module, state.logits_hook, pre=True))
            elif not any(True for _ in module.children()):
                hooks += [Hook(module, state.pre_hook, pre=True), Hook(module, state.hook)]
        return hooks

    def _lrp_scores(self, x_in: torch.Tensor, shape: tuple[int, ...], state: _Pass) -> Any:
        try:
            out = self._call(x_in, shape)
        except StopForward:
            return state.logits
        return self._output_tensor(out)

    def _bounds(self, value: Any, like: torch.Tensor) -> torch.Tensor:
        """A ZBox bound (channels-last numpy, broadcastable to one input) shaped like ``like``."""
        nchw = like.ndim == 4 and self.options.input_layout == "NCHW"
        shape = (like.shape[0], *like.shape[2:], like.shape[1]) if nchw else tuple(like.shape)
        try:
            arr = np.broadcast_to(np.asarray(value, dtype=np.float32), shape)
        except ValueError:
            raise InputError(
                f"the ZBox bound of shape {np.shape(value)} does not broadcast to the inputs of "
                f"the first layer, {shape[1:]} channels-last; pass a float or one value per "
                "channel"
            ) from None
        t = torch.as_tensor(np.ascontiguousarray(arr), device=like.device, dtype=like.dtype)
        return t.permute(0, 3, 1, 2) if nchw else t

"""What the first pass learns about every module: how often it runs, in what order, what it
reads and returns, and which containers merely hand on a leaf's output.

The adapter never runs the model just to look at it, except for one no-grad pass on zeros at
wrap time when ``input_shape`` is declared. Otherwise the recorders of :func:`make_probe` ride
along on the first pass the adapter makes anyway (a forward, or a gradient pass that runs to
the end), so ``layers()`` reports shapes from then on; before, ``output_shape`` is ``()``.

The call counts make early stopping exact for modules that run several times per forward pass
(a shared ``self.relu`` in a ResNet block): an objective on such a module reads its LAST call,
the same call a forward tap records, and the pass stops right after that call. A gradient pass
made before the counts are known runs to the end (and records them). Call counts are assumed
not to depend on the input (true without data-dependent control flow; with fewer calls than
recorded, the pass runs to the end and the last call seen counts).

Tensor identity: every module output (and the model input) is remembered by a weak reference,
so the recorders know which module produced the tensor a module reads (its *source*) and which
containers return a leaf's output object unchanged (the leaf's *aliases*, innermost first).
A container that returns a NEW tensor, made by a functional op after its last child (a
ConvNeXt or ViT block's residual add, a squeeze-excite product), owns that tensor like a leaf:
it is listed by ``layers()`` (in :attr:`Probe.fresh`) and the containers handing its output on
are its aliases.
Only weak references are kept: the probe holds no activation alive. :mod:`.detect` turns these
records into a layout per module.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .hooks import Hook

if TYPE_CHECKING:
    from .detect import Layouts

__all__ = ["INPUT", "Probe", "Record", "make_probe"]

#: The source key of the model's own input tensor.
INPUT = -1
Source = int | None  # a module's id, INPUT, or None (made by a functional op)


@dataclass
class Record:
    """One module's LAST call: raw (torch-layout) shapes with batch, sources, completion step."""

    calls: int = 0
    order: int = 0
    out_shape: tuple[int, ...] | None = None  # None: the module did not return a tensor
    in_shape: tuple[int, ...] | None = None
    in_source: Source = None  # who produced the first positional argument
    out_source: Source = None  # who produced the returned object before this module did


@dataclass
class Probe:
    """Per module (keyed by ``id``): its :class:`Record`; per leaf: its container aliases."""

    input_shape: tuple[int, ...]
    records: dict[int, Record] = field(default_factory=dict)
    aliases: dict[int, list[int]] = field(default_factory=dict)
    fresh: set[int] = field(default_factory=set)  # containers whose output no child returned
    layouts: Layouts | None = None  # resolved after the pass, by :func:`.detect.resolve`

    def ran(self, module: nn.Module) -> bool:
        return id(module) in self.records

    def calls_of(self, module: nn.Module) -> int:
        """How many times ``module`` runs in one forward pass (at least 1)."""
        rec = self.records.get(id(module))
        return max(1, rec.calls) if rec is not None else 1

    def order_of(self, module: nn.Module) -> int:
        rec = self.records.get(id(module))
        return rec.order if rec is not None else -1


class _Tracker:
    """Maps live tensors to the key of the module that (last) returned them."""

    def __init__(self) -> None:
        self._by_id: dict[int, tuple[weakref.ref[torch.Tensor], int]] = {}

    def put(self, t: Any, key: int) -> None:
        if isinstance(t, torch.Tensor):
            self._by_id[id(t)] = (weakref.ref(t), key)

    def get(self, t: Any) -> Source:
        entry = self._by_id.get(id(t)) if isinstance(t, torch.Tensor) else None
        if entry is None or entry[0]() is not t:  # a dead tensor whose id was reused
            return None
        return entry[1]


class _Recorder:
    """The pre- and forward hooks that fill a :class:`Probe` during one pass."""

    def __init__(self, probe: Probe, leaves: set[int]) -> None:
        self.probe, self.leaves = probe, leaves
        self.made_by = _Tracker()  # tensor -> latest module that returned it
        self.leaf_out: dict[int, weakref.ref[torch.Tensor]] = {}  # leaf -> its last output
        self.alias_of: dict[int, int] = {}  # container -> the leaf whose output it returned
        self.pending: dict[int, list[Source]] = {}  # in_source per open call (a stack)
        self.step = 0

    def root_pre(self, module: nn.Module, args: Any) -> None:
        for arg in args:  # every input of a several-input model is in the input layout
            self.made_by.put(arg, INPUT)

    def pre(self, module: nn.Module, args: Any) -> None:
        self.pending.setdefault(id(module), []).append(self.made_by.get(args[0]) if args else None)

    def post(self, module: nn.Module, args: Any, out: Any) -> None:
        key = id(module)
        stack = self.pending.get(key)
        rec = self.probe.records.setdefault(key, Record())
        self.step += 1
        rec.calls += 1
        rec.order = self.step
        rec.in_source = stack.pop() if stack else None
        rec.in_shape = _shape(args[0]) if args else None
        rec.out_shape = _shape(out)
        rec.out_source = self.made_by.get(out)
        self._alias(key, out)
        self.made_by.put(out, key)

    def _alias(self, key: int, out: Any) -> None:
        aliases = self.probe.aliases
        if key in self.leaves:
            aliases[key] = []
            if isinstance(out, torch.Tensor):
                self.leaf_out[key] = weakref.ref(out)
            return
        old = self.alias_of.pop(key, None)
        if old is not None and key in aliases.get(old, []):
            aliases[old].remove(key)
        self.probe.fresh.discard(key)
        leaf = source = self.made_by.get(out)
        while leaf is not None and leaf not in self.leaves and leaf not in self.probe.fresh:
            leaf = self.alias_of.get(leaf)  # an inner container that returned a leaf's output
        ref = self.leaf_out.get(leaf) if leaf is not None else None
        if leaf is not None and ref is not None and ref() is out:
            aliases[leaf].append(key)
            self.alias_of[key] = leaf
        elif isinstance(out, torch.Tensor) and source != INPUT:
            # A new tensor made after the last child (e.g. a residual add): owned like a leaf.
            self.probe.fresh.add(key)
            aliases[key] = []
            self.leaf_out[key] = weakref.ref(out)


def _shape(t: Any) -> tuple[int, ...] | None:
    return tuple(int(s) for s in t.shape) if isinstance(t, torch.Tensor) else None


def _hookable(m: nn.Module) -> bool:
    return not isinstance(m, torch.jit.ScriptModule)  # TorchScript modules take no hooks


def make_probe(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[Probe, list[Hook]]:
    """An empty Probe and the hooks that fill it during a pass.

    Register the returned hooks AFTER any hook that replaces a module's output, so that the
    recorders see the tensor the next module really receives.
    """
    probe = Probe(tuple(input_shape))
    named = [(n, m) for n, m in model.named_modules() if n and _hookable(m)]
    leaves = {id(m) for _, m in named if next(m.children(), None) is None}
    rec = _Recorder(probe, leaves)
    hooks = [Hook(model, rec.root_pre, pre=True)] if _hookable(model) else []
    hooks += [Hook(m, rec.pre, pre=True) for _, m in named]
    hooks += [Hook(m, rec.post) for _, m in named]
    return probe, hooks

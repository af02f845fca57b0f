"""The checks on a real framework: a minimal torch adapter written here (as a third-party
backend would be), first correct, then broken in the ways real adapters break."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest

from innersight import testing
from innersight.core.adapter import BaseAdapter, Capability, ForwardResult, LayerInfo
from innersight.core.objectives import Channel, Logit, Neuron, evaluate, layer_of
from innersight.testing import ConformanceError
from innersight.testing.checks import tile_objective
from tests import models

torch = pytest.importorskip("torch")


def to_nhwc(t):
    t = t.detach().numpy()
    return np.ascontiguousarray(t.transpose(0, 2, 3, 1)) if t.ndim == 4 else t


class MiniTorchAdapter(BaseAdapter):
    """Channels-last boundary over an NCHW ``nn.Sequential``; taps via forward hooks."""

    backend = "torch-mini"
    capabilities = frozenset(
        {Capability.FORWARD, Capability.LAYER_TAPS, Capability.INPUT_GRADIENTS}
    )

    def __init__(self, model, input_shape=(12, 12, 3)):
        self.model = model
        self._input_shape = input_shape
        with torch.no_grad():
            _, acts = self._run(torch.zeros(1, 3, 12, 12), [n for n, _ in model.named_children()])
        self._infos = [
            LayerInfo(
                n,
                type(m).__name__,
                tuple(to_nhwc(acts[n]).shape[1:]),
                sum(p.numel() for p in m.parameters()),
            )
            for n, m in model.named_children()
        ]

    @property
    def input_shape(self):
        return self._input_shape

    def layers(self):
        return list(self._infos)

    @contextmanager
    def _taps(self, taps, store):
        handles = [
            self.model.get_submodule(n).register_forward_hook(
                lambda m, a, o, n=n: store.__setitem__(n, o)
            )
            for n in taps
        ]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def _run(self, t, taps):
        store = {}
        with self._taps(taps, store):
            out = self.model(t)
        return out, store

    def forward(self, x, *, taps=()):
        x, taps = self.check_input(x), self.check_taps(taps)
        with torch.no_grad():
            out, acts = self._run(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), taps)
        return ForwardResult(out.numpy(), {n: to_nhwc(a) for n, a in acts.items()})

    def value_and_grad(self, x, objective, *, relu="plain"):
        self.check_relu(relu)
        x = self.check_input(x)
        layer = layer_of(objective)
        if layer is not None:
            self.layer_info(layer)
        t = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_(True)
        out, acts = self._run(t, [layer] if layer else [])
        act = acts[layer] if layer else out
        if act.ndim == 4:
            act = act.permute(0, 2, 3, 1)
        values = self._objective(objective, out, act)
        (grad,) = torch.autograd.grad(values.sum(), t)
        return values.detach().numpy(), to_nhwc(grad)

    @staticmethod
    def _objective(objective, out, act):
        # The numpy spec gives the selection; torch applies it so gradients flow.
        n = act.shape[0]
        rows = torch.arange(n)
        if isinstance(objective, Logit):
            idx = torch.from_numpy(np.broadcast_to(np.asarray(objective.index), (n,)).copy())
            return out.reshape(n, -1)[rows, idx]
        probe = np.zeros(tuple(act.shape), np.float64)
        weights = torch.from_numpy(_selection(objective, probe)).to(act.dtype)
        return (act * weights).reshape(n, -1).sum(1)


def _selection(objective, probe):
    """Weights w with sum(w * act) == the objective (it is linear), found through the numpy spec."""
    n, k = probe.shape[0], probe[0].size
    eye = np.repeat(np.eye(k), n, axis=0).reshape(k * n, *probe.shape[1:])  # row j*n+i: unit j
    values = evaluate(tile_objective(objective, k), eye, {objective.layer: eye})
    return values.reshape(k, n).T.reshape(probe.shape)


@pytest.fixture
def net(small_weights):
    return models.torch_small(small_weights)


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(8).random((3, 12, 12, 3), dtype=np.float32)


def test_a_correct_torch_adapter_passes_every_check(net, x, small_weights):
    reference = testing.ReferenceAdapter.from_weights(small_weights)
    layer_map = {n: n for n in ("conv1", "relu1", "pool1", "conv2", "relu2", "fc1", "relu3", "fc2")}
    testing.check_adapter(MiniTorchAdapter(net), x, reference=reference, layer_map=layer_map)
    testing.check_gradients(
        MiniTorchAdapter(net), x, [Channel("relu1", [0, 1, 3], crop=2), Neuron("pool1", 3)]
    )


class LeavesHook(MiniTorchAdapter):
    @contextmanager
    def _taps(self, taps, store):
        for n in taps:
            self.model.get_submodule(n).register_forward_hook(
                lambda m, a, o, n=n: store.__setitem__(n, o)
            )
        yield


class NoFinally(MiniTorchAdapter):
    def _run(self, t, taps):
        store = {}
        handles = [
            self.model.get_submodule(n).register_forward_hook(
                lambda m, a, o, n=n: store.__setitem__(n, o)
            )
            for n in taps
        ]
        out = self.model(t)
        for h in handles:  # skipped when the forward raises
            h.remove()
        return out, store


class SwitchesToTrain(MiniTorchAdapter):
    def forward(self, x, *, taps=()):
        self.model.train()  # and forgets to switch back
        return super().forward(x, taps=taps)


class AccumulatesGrad(MiniTorchAdapter):
    def value_and_grad(self, x, objective, *, relu="plain"):
        t = torch.from_numpy(self.check_input(x).transpose(0, 3, 1, 2).copy()).requires_grad_(True)
        values = self.model(t)[:, 0]
        values.sum().backward()  # fills .grad of every parameter
        return values.detach().numpy(), to_nhwc(t.grad)


class CatchesEverything(MiniTorchAdapter):
    def forward(self, x, *, taps=()):
        try:
            return super().forward(x, taps=taps)
        except BaseException as err:
            raise ValueError(f"forward failed: {err}") from err


class FreezesParams(MiniTorchAdapter):
    def value_and_grad(self, x, objective, *, relu="plain"):
        for p in self.model.parameters():
            p.requires_grad_(False)  # faster input gradients, but never restored
        return super().value_and_grad(x, objective, relu=relu)


BUGS = {
    "hook left behind": (
        LeavesHook,
        r"forward with taps left the torch model changed:\n"
        r"  module 'conv1': _forward_hooks: 1 \[\d+\] -> 2",
    ),
    "hook left on error": (
        NoFinally,
        r"(?s)after an injected RuntimeError inside its forward pass:.*_forward_hooks: 0 \[\] -> 1",
    ),
    "training mode": (
        SwitchesToTrain,
        r"forward left the torch model changed:\n  module '<root>'.training: False -> True",
    ),
    "param .grad": (
        AccumulatesGrad,
        r"value_and_grad\(relu='plain'\) left the torch model changed:\n"
        r"  param 'conv1.weight': .grad: None ->",
    ),
    "KeyboardInterrupt swallowed": (
        CatchesEverything,
        "turned an injected KeyboardInterrupt into ValueError",
    ),
    "requires_grad": (FreezesParams, r"param 'conv1.weight': requires_grad: True -> False"),
}


@pytest.mark.parametrize("bug", BUGS)
def test_state_bugs_are_caught(net, x, bug):
    cls, message = BUGS[bug]
    with pytest.raises(ConformanceError, match=message):
        testing.check_state_preserved(net, cls(net), x, make_adapter=lambda: cls(net))


def test_check_adapter_reports_a_leaked_hook(net, x):
    with pytest.raises(
        ConformanceError, match="fails 1 of 7 conformance checks:\n- check_state_preserved: "
    ):
        testing.check_adapter(LeavesHook(net), x, inject=False)


def test_the_default_torch_injector_reaches_the_adapter(net, x):
    seen = []

    class Records(MiniTorchAdapter):
        def forward(self, x, *, taps=()):
            try:
                return super().forward(x, taps=taps)
            except BaseException as err:
                seen.append(type(err).__name__)
                raise

    testing.check_state_preserved(net, Records(net), x, make_adapter=lambda: Records(net))
    assert seen == ["RuntimeError", "RuntimeError", "KeyboardInterrupt", "KeyboardInterrupt"]

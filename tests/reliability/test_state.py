"""Looking never changes the model: weights, hooks, training flags, requires_grad, Keras
activations and trainable flags, attributes, on success and when a run is interrupted
(an error or a KeyboardInterrupt raised inside the forward pass, or between two passes of a
multi-pass technique). Models in training mode (BatchNorm + Dropout) are explained as in
inference mode and stay in training mode with their running statistics untouched
(:func:`innersight.testing.check_train_mode_preserved`).
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from typing import Any

import keras
import numpy as np
import pytest
import torch
from torch import nn

import innersight as ins
from innersight import testing
from innersight.core.manager import get_plugin_manager
from innersight.testing import ConformanceError, diff, snapshot
from innersight.testing.checks_state import keras_injector, torch_injector
from tests import models
from tests.reliability._common import (
    MIN_BATCH,
    NOT_PER_SAMPLE,
    batch,
    minimal_params,
    technique_names,
)

TECHNIQUES = technique_names()  # maximizations too: they get inputs for their image shape
SCENARIOS = ("success", "RuntimeError", "KeyboardInterrupt", "KeyboardInterrupt_mid_run")
#: Techniques that always run more than one pass (target=None resolves by a forward first,
#: perturbation/path methods run many): an interruption after the first pass must reach them.
MULTI_PASS = ("saliency", "guided_backprop", "occlusion", "smoothgrad", "integrated_gradients")


@pytest.fixture(scope="module")
def mixed(small_weights):
    """Fresh models (not the shared fixtures) with mixed flags, so that "restored" means
    restored to each one's own value, not reset to a default."""
    tm = models.torch_small(small_weights)
    tm.train()
    tm.conv2.eval()
    tm.fc1.weight.requires_grad_(False)
    km = models.keras_small(small_weights)
    km.get_layer("conv2").trainable = False
    return {"torch": tm, "keras": km}


class _FailingAdapter:
    """Delegates to ``adapter``; the ``after + 1``-th model call raises ``error`` (an interruption
    between two passes, as a Ctrl-C during a long technique)."""

    def __init__(self, adapter: Any, error: type[BaseException], after: int) -> None:
        self._adapter, self._error, self._left = adapter, error, after

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._adapter, name)
        if name not in ("forward", "predict_classes", "value_and_grad", "layer_value_and_grad"):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            if self._left == 0:
                raise self._error("injected between two passes")
            self._left -= 1
            return attr(*args, **kwargs)

        return call


def _interrupt(backend: str, model: Any, technique: str, x: np.ndarray, scenario: str) -> bool:
    """Run ``technique`` with the scenario's failure; True when the failure surfaced."""
    params = minimal_params(technique)
    error = KeyboardInterrupt if scenario.startswith("KeyboardInterrupt") else RuntimeError
    mid_run = scenario.endswith("mid_run")
    try:
        if backend == "torch":
            with torch_injector(model, error, after=1 if mid_run else 0):
                ins.explain(technique, model, x, **params)
        elif mid_run:
            ins.explain(technique, _FailingAdapter(ins.wrap(model), error, 1), x, **params)
        else:
            with keras_injector(model, error):
                # A fresh adapter, so that its functions are traced under the injector.
                ins.explain(technique, get_plugin_manager().wrap(model, {}), x, **params)
    except error as err:
        assert "inject" in str(err)
        return True
    return False


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("technique", TECHNIQUES)
@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_model_is_unchanged(mixed, backend, technique, scenario):
    model = mixed[backend]
    x = batch(MIN_BATCH.get(technique, 2))
    expected = ins.explain(technique, model, x, **minimal_params(technique))
    before = snapshot(model)
    if scenario == "success":
        ins.explain(technique, model, x, **minimal_params(technique))
    else:
        raised = _interrupt(backend, model, technique, x, scenario)
        assert raised or (scenario.endswith("mid_run") and technique not in MULTI_PASS)
    changes = diff(before, snapshot(model))
    assert changes == [], f"{technique} ({scenario}) changed the model:\n" + "\n".join(changes)
    # ... and nothing half-done is left in the adapter: the next run gives the same result.
    again = ins.explain(technique, model, x, **minimal_params(technique))
    for a, b in zip(_arrays(expected.values), _arrays(again.values), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)


def _arrays(values: Any) -> list[np.ndarray]:
    return [np.asarray(v) for v in (values.values() if isinstance(values, dict) else [values])]


def test_mixed_flags_are_what_the_checks_restore(mixed):
    # The fixtures really are mixed (else "restored" above could mean "reset to the default").
    tm, km = mixed["torch"], mixed["keras"]
    assert tm.training and not tm.conv2.training and tm.conv1.training
    assert not tm.fc1.weight.requires_grad and tm.fc1.bias.requires_grad
    assert not km.get_layer("conv2").trainable and km.get_layer("conv1").trainable


# -- training mode: BatchNorm + Dropout ---------------------------------------------------------
def torch_bn_dropout() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(3, 4, 3),
            bn=nn.BatchNorm2d(4),
            relu=nn.ReLU(),
            drop=nn.Dropout(0.5),
            pool=nn.MaxPool2d(2),
            flatten=nn.Flatten(),
            fc=nn.Linear(4 * 5 * 5, 3),
        )
    )
    with torch.no_grad():  # trained-looking statistics, far from the batch's own
        net.bn.running_mean.uniform_(-1, 1)
        net.bn.running_var.uniform_(0.5, 2)
        net.bn.num_batches_tracked.fill_(100)
    return net.train()


def keras_bn_dropout() -> Any:
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            keras.layers.Conv2D(4, 3, name="conv1"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.ReLU(name="relu"),
            keras.layers.Dropout(0.5, name="drop"),
            keras.layers.MaxPooling2D(2, name="pool"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(3, name="fc"),
        ],
        name="bn_dropout",
    )
    bn = model.get_layer("bn")
    rng = np.random.default_rng(0)
    bn.moving_mean.assign(rng.uniform(-1, 1, 4).astype("float32"))
    bn.moving_variance.assign(rng.uniform(0.5, 2, 4).astype("float32"))
    return model


@pytest.fixture(scope="module")
def training_models():
    return {"torch": torch_bn_dropout(), "keras": keras_bn_dropout()}


@pytest.mark.parametrize("technique", TECHNIQUES)
@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_train_mode_is_preserved(training_models, backend, technique):
    model = training_models[backend]
    x = batch(max(3, MIN_BATCH.get(technique, 3)), seed=4)
    testing.check_train_mode_preserved(
        model,
        x,
        technique=technique,
        independent_samples=technique not in NOT_PER_SAMPLE,
        **minimal_params(technique),
    )
    if backend == "torch":
        assert all(m.training for m in model.modules())


def test_torch_bn_statistics_are_bit_identical_after_explaining(training_models):
    bn = training_models["torch"].bn
    stats = [t.clone() for t in (bn.running_mean, bn.running_var, bn.num_batches_tracked)]
    ins.explain("saliency", training_models["torch"], batch(4))
    for old, new in zip(
        stats, (bn.running_mean, bn.running_var, bn.num_batches_tracked), strict=True
    ):
        assert torch.equal(old, new)


def test_keras_bn_statistics_are_bit_identical_after_explaining(training_models):
    bn = training_models["keras"].get_layer("bn")
    stats = [np.array(v.numpy()) for v in (bn.moving_mean, bn.moving_variance)]
    ins.explain("saliency", training_models["keras"], batch(4))
    for old, new in zip(stats, (bn.moving_mean, bn.moving_variance), strict=True):
        np.testing.assert_array_equal(old, new.numpy())


# -- the check has teeth ----------------------------------------------------------------------
class _CountsCalls(nn.Module):
    """Updates a buffer on every forward, even in eval mode (a BN written without the check)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(12 * 12 * 3, 3)
        self.register_buffer("seen", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += 1
        return self.fc(x.flatten(1))


class _AlwaysDropout(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(12 * 12 * 3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(nn.functional.dropout(x.flatten(1), 0.5, training=True))


class _BatchStatistics(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(12 * 12 * 3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        return self.fc(h - h.mean(dim=0, keepdim=True))


@pytest.mark.parametrize(
    ("module", "match"),
    [
        (_CountsCalls, r"(?s)left the torch model changed:.*buffer 'seen'"),
        (_AlwaysDropout, r"second identical run \(Dropout left on\?\)"),
        (_BatchStatistics, r"sample 0 explained alone vs\. in a batch of 3"),
    ],
)
def test_check_train_mode_preserved_catches_violations(module, match):
    torch.manual_seed(0)
    net = module().train()
    with pytest.raises(ConformanceError, match=match):
        testing.check_train_mode_preserved(net, batch(3), technique="saliency", target=0)


def test_check_train_mode_preserved_warns_for_a_model_in_eval_mode(small_weights):
    net = models.torch_small(small_weights).eval()
    with pytest.warns(testing.ConformanceWarning, match=r"no module .* is in training mode"):
        testing.check_train_mode_preserved(net, batch(2), technique="saliency")


def test_check_train_mode_preserved_needs_two_samples(training_models):
    with pytest.raises(ConformanceError, match=r"at least 2 samples, got shape \(1, 12, 12, 3\)"):
        testing.check_train_mode_preserved(training_models["torch"], batch(1))


def test_torch_injector_after_lets_passes_through(small_weights):
    net = models.torch_small(small_weights)
    x = torch.zeros(1, 3, 12, 12)
    with functools.partial(torch_injector, after=2)(net, RuntimeError):
        net(x)
        net(x)
        with pytest.raises(RuntimeError, match=r"module 'fc2' \(pass 3\)"):
            net(x)
    net(x)

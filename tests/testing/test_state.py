"""Snapshots see every kind of change an adapter could leave behind, and nothing else."""

from __future__ import annotations

import numpy as np
import pytest

from innersight.testing import ReferenceAdapter, diff, reference_model, snapshot
from innersight.testing.checks_state import keras_injector, reference_injector, torch_injector
from tests import models


def changed(model, action) -> list[str]:
    before = snapshot(model)
    action()
    return diff(before, snapshot(model))


# -- torch ------------------------------------------------------------------------------------
@pytest.fixture
def tnet(small_weights):
    pytest.importorskip("torch")
    return models.torch_small(small_weights)


def test_torch_snapshot_is_stable_under_plain_inference(tnet):
    import torch

    def infer():
        with torch.no_grad():
            tnet(torch.zeros(2, 3, 12, 12))
        x = torch.zeros(1, 3, 12, 12, requires_grad=True)
        torch.autograd.grad(tnet(x).sum(), x)

    assert snapshot(tnet).kind == "torch"
    assert changed(tnet, infer) == []


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        (
            lambda m: m.fc2.register_forward_hook(lambda *a: None),
            "module 'fc2': _forward_hooks: 0 [] -> 1",
        ),
        (
            lambda m: m.conv1.register_forward_pre_hook(lambda *a: None),
            "module 'conv1': _forward_pre_hooks",
        ),
        (
            lambda m: m.relu2.register_full_backward_hook(lambda *a: None),
            "module 'relu2': _backward_hooks",
        ),
        (
            lambda m: m.register_state_dict_pre_hook(lambda *a: None),
            "module '<root>': _state_dict_pre_hooks",
        ),
        (lambda m: m.fc1.weight.register_hook(lambda g: g), "param 'fc1.weight': _backward_hooks"),
        (lambda m: m.fc1.train(), "module 'fc1'.training: False -> True"),
        (
            lambda m: m.conv2.bias.requires_grad_(False),
            "param 'conv2.bias': requires_grad: True -> False",
        ),
        (lambda m: setattr(m.relu1, "inplace", True), "module 'relu1'.inplace: False -> True"),
        (
            lambda m: setattr(m.relu1, "_saved", 1),
            "module 'relu1': __dict__ keys: added ['_saved']",
        ),
        (lambda m: m.fc2.weight.data.mul_(1.0001), "param 'fc2.weight': float32[3, 8]@cpu sha256:"),
        (lambda m: m.register_buffer("extra", None), "module '<root>': _buffers:  -> extra"),
        (lambda m: setattr(m, "relu3", type(m.relu3)()), "named_modules"),
        (
            lambda m: m(__import__("torch").ones(1, 3, 12, 12)).sum().backward(),
            "param 'conv1.weight': .grad: None",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_torch_snapshot_sees_each_change(tnet, action, expected):
    d = changed(tnet, lambda: action(tnet))
    assert any(expected in line for line in d), d


def test_torch_global_hooks_are_recorded(tnet):
    import torch

    handle = None

    def add():
        nonlocal handle
        handle = torch.nn.modules.module.register_module_forward_hook(lambda *a: None)

    try:
        d = changed(tnet, add)
    finally:
        handle.remove()
    assert any("_global_forward_hooks: 0 [] -> 1" in line for line in d), d


def test_torch_grad_mode_is_recorded(tnet):
    import torch

    try:
        d = changed(tnet, lambda: torch.set_grad_enabled(False))
    finally:
        torch.set_grad_enabled(True)
    assert d == ["torch grad enabled: True -> False"]


def test_torch_injector_raises_and_cleans_up(tnet):
    import torch

    before = snapshot(tnet)
    with (
        torch_injector(tnet, KeyboardInterrupt),
        pytest.raises(KeyboardInterrupt, match="module 'fc2'"),
    ):
        tnet(torch.zeros(1, 3, 12, 12))
    assert diff(before, snapshot(tnet)) == []
    tnet(torch.zeros(1, 3, 12, 12))


# -- Keras ------------------------------------------------------------------------------------
@pytest.fixture
def knet(small_weights):
    pytest.importorskip("keras")
    return models.keras_small(small_weights)


def test_keras_snapshot_ignores_keras_own_churn(knet):
    import keras
    import tensorflow as tf

    x = np.zeros((2, 12, 12, 3), np.float32)

    def infer():
        knet(x)
        tf.function(lambda t: knet(t, training=False))(tf.constant(x))
        sub = keras.Model(knet.inputs[0], knet.get_layer("conv2").output)
        sub(x)
        knet.predict(x, verbose=0)

    assert snapshot(knet).kind == "keras"
    assert changed(knet, infer) == []


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        (
            lambda m: setattr(m.get_layer("fc1"), "trainable", False),
            "layer 'fc1': trainable: True -> False",
        ),
        (
            lambda m: setattr(
                m.get_layer("conv1"), "activation", __import__("keras").activations.linear
            ),
            "layer 'conv1': activation: relu",
        ),
        (
            lambda m: m.get_layer("fc2").kernel.assign(m.get_layer("fc2").kernel * 2),
            # the model's name is uniquified (small_net_3) when other tests built one before
            "weight '",
        ),
        (
            lambda m: setattr(m.get_layer("pool1"), "_probe", 1),
            "layer 'pool1': __dict__ keys: added ['_probe']",
        ),
        (lambda m: m.pop(), "layers: "),
    ],
    ids=["trainable", "activation", "weights", "attribute", "layer list"],
)
def test_keras_snapshot_sees_each_change(knet, action, expected):
    d = changed(knet, lambda: action(knet))
    assert any(line.startswith(expected) for line in d), d
    if expected == "weight '":
        assert any("/fc2/kernel'" in line for line in d), d


def test_keras_injector_patches_one_layer_only(knet):
    import tensorflow as tf

    x = np.random.default_rng(0).random((2, 12, 12, 3), dtype=np.float32)
    expected = np.asarray(knet(x))
    before = snapshot(knet)
    with keras_injector(knet, RuntimeError):
        with pytest.raises(RuntimeError, match="Keras layer 'conv1'"):
            knet(x)
        with pytest.raises(RuntimeError, match="Keras layer 'conv1'"):
            tf.function(lambda t: knet(t, training=False))(tf.constant(x))
        conv2 = knet.get_layer("conv2")  # another Conv2D: must still run
        assert conv2(np.zeros((1, 5, 5, 4), np.float32)).shape == (1, 3, 3, 6)
    np.testing.assert_array_equal(np.asarray(knet(x)), expected)
    assert diff(before, snapshot(knet)) == []


# -- reference and generic ------------------------------------------------------------------
def test_reference_snapshot_covers_weights_and_layers():
    ref = reference_model()
    assert snapshot(ref).entries == snapshot(ref.network).entries
    layer = ref.network.layers[0]
    d = changed(ref, lambda: setattr(layer, "kernel", layer.kernel * 1.5))
    assert any("layer 'conv1' kernel: float64[3, 3, 3, 4]" in line for line in d), d
    d = changed(ref, lambda: setattr(ref.network, "layers", ref.network.layers[:-1]))
    assert any(line.startswith("layers: ") for line in d) and any(
        "'fc2'" in line and "gone" in line for line in d
    )
    with reference_injector(ref, RuntimeError):
        during = snapshot(ref)
        with pytest.raises(RuntimeError, match="reference layer 'relu3'"):
            ref.forward(np.zeros((1, 12, 12, 3), np.float32))
        assert "forward" in during.entries["layer 'relu3': __dict__ keys"]
    assert "forward" not in snapshot(ref).entries["layer 'relu3': __dict__ keys"]


def test_unknown_models_get_a_generic_snapshot():
    class Thing:
        def __init__(self):
            self.w = np.ones(3)
            self.flag = True

    thing = Thing()
    snap = snapshot(thing)
    assert snap.kind == "generic" and "only its type" in snap.notes[0]
    d = changed(thing, lambda: thing.w.__setitem__(0, 2.0))
    assert d and d[0].startswith("model.w: float64[3] sha256:")
    assert changed(thing, lambda: setattr(thing, "flag", False)) == ["model.flag: True -> False"]
    assert snapshot(3).kind == "generic"  # objects without __dict__ are fine too


def test_diff_of_different_kinds():
    assert diff(snapshot(reference_model()), snapshot(object())) == [
        "snapshot kinds differ: reference vs generic"
    ]


def test_snapshot_does_not_import_frameworks():
    import subprocess
    import sys

    code = (
        "import sys; from innersight.testing import snapshot, reference_model\n"
        "snapshot(reference_model()); snapshot(object())\n"
        "print(*(name in sys.modules for name in ('torch', 'tensorflow', 'keras')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False"]


def test_reference_adapter_from_weights_shares_no_state(small_weights):
    a, b = (
        ReferenceAdapter.from_weights(small_weights),
        ReferenceAdapter.from_weights(small_weights),
    )
    ea, eb = snapshot(a).entries, snapshot(b).entries
    weights = [k for k in ea if k.endswith(" kernel") or k.endswith(" bias")]
    assert weights and all(ea[k] == eb[k] for k in weights)  # same numbers, same hashes


KERAS_ON_TORCH = """
import torch, keras, innersight
from innersight.testing import snapshot
from innersight.testing.checks_state import default_injector, keras_injector
from innersight.testing.train_mode import training_flags

model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="dense")])
print(isinstance(model, torch.nn.Module), training_flags(model), snapshot(model).kind,
      default_injector(model) is keras_injector, innersight.wrap(model).backend)
"""


def test_keras_on_torch_models_are_keras_models_for_the_state_checks():
    """A Keras 3 model on the torch backend is an ``nn.Module`` too; the snapshot, the injector,
    the training flags (Keras has no mode to record) and the adapter all treat it as Keras."""
    import os
    import subprocess
    import sys

    pytest.importorskip("torch")
    pytest.importorskip("keras")
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    out = subprocess.run(
        [sys.executable, "-c", KERAS_ON_TORCH],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["True", "{}", "keras", "True", "keras"]

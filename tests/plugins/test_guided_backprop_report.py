"""Guided backpropagation says when it was not guided: a model without ReLUs (EfficientNet,
ConvNeXt, ViT: SiLU, GELU, Hardswish) gives exactly the plain gradient."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import innersight as ins
from innersight.core import InnersightWarning
from innersight.testing import reference_model

torch = pytest.importorskip("torch")
nn = torch.nn


def net(*acts: nn.Module) -> nn.Module:
    """conv -> act -> conv -> act -> global average pool -> linear, fixed weights."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3),
        acts[0],
        nn.Conv2d(6, 8, 3),
        acts[1],
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    ).eval()


def x(n: int = 3) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, 12, 12, 3)).astype(np.float32)


def test_model_without_relu_warns_and_is_the_plain_gradient():
    model = net(nn.SiLU(), nn.SiLU())
    with pytest.warns(
        InnersightWarning,
        match=r"guided_backprop: none of the activations in torch model Sequential were guided: "
        r"SiLU \(2 calls\) keep their plain gradient .*exactly the plain input gradient; use "
        r"saliency",
    ):
        ex = ins.explain("guided_backprop", model, x(), target=[0, 1, 2])
    assert ex.meta["relu_report"] == {"overridden": 0, "not_overridden": {"SiLU": 2}}
    _, plain = ins.wrap(model).value_and_grad(x(), ins.objectives.Logit([0, 1, 2]))
    np.testing.assert_array_equal(ex.values, plain)  # the warning's claim, bit for bit
    assert np.abs(plain).max() > 1e-3


def test_partly_guided_model_names_what_was_not():
    model = net(nn.ReLU(), nn.GELU())
    with pytest.warns(
        InnersightWarning,
        match=r"only the 1 ReLU call in torch model Sequential was guided; GELU \(1 call\) "
        r"kept their plain gradient, so the map mixes guided and plain",
    ):
        ex = ins.explain("guided_backprop", model, x(), target=1)
    assert ex.meta["relu_report"] == {"overridden": 1, "not_overridden": {"GELU": 1}}
    _, plain = ins.wrap(model).value_and_grad(x(), ins.objectives.Logit(1))
    assert not np.allclose(ex.values, plain)  # the ReLU was guided


def test_relu_model_is_silent_and_reports_its_relus():
    model = net(nn.ReLU(), nn.ReLU())
    with warnings.catch_warnings():
        warnings.simplefilter("error", InnersightWarning)
        ex = ins.explain("guided_backprop", model, x(), target=1)
    assert ex.meta["relu_report"] == {"overridden": 2, "not_overridden": {}}


def test_keras_model_without_relu_warns():
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            keras.layers.Conv2D(6, 3, activation="silu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(4),
        ],
        name="silu_net",
    )
    with pytest.warns(InnersightWarning, match=r"none of the activations in keras model silu_net"):
        ex = ins.explain("guided_backprop", model, x(), target=0)
    assert ex.meta["relu_report"]["overridden"] == 0
    assert sum(ex.meta["relu_report"]["not_overridden"].values()) >= 1


def test_reference_adapter_reports_and_linear_model_has_no_relu():
    conv = reference_model("conv")
    with warnings.catch_warnings():
        warnings.simplefilter("error", InnersightWarning)
        ex = ins.explain("guided_backprop", conv, x(2), target=0)
    assert ex.meta["relu_report"] == {"overridden": 3, "not_overridden": {}}
    with pytest.warns(InnersightWarning, match=r"no ReLU ran in numpy model reference_linear"):
        ins.explain("guided_backprop", reference_model("linear"), x(2), target=0)

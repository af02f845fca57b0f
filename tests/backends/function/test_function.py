"""The function backend: a plain Python callable from a numpy batch to numpy scores, as a model
with the forward capability only; found through the manager after every other backend."""

from __future__ import annotations

import functools
import re

import numpy as np
import pytest

import innersight as ins
import innersight.backends.function as function_backend
from innersight.backends.function import FunctionModel
from innersight.core import LOGITS, Capability, LayerInfo
from innersight.core.errors import (
    BackendNotFoundError,
    CapabilityError,
    InputError,
    LayerNotFoundError,
)
from innersight.testing import check_adapter

NAME = "innersight.backends.function"
W = np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32)


def scores(x: np.ndarray) -> np.ndarray:
    return x @ W


def affine(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return x @ weights


@pytest.fixture
def manager():
    """The process-wide manager with the function backend (registered here until it is listed
    among the built-ins)."""
    manager = ins.get_plugin_manager()
    added = manager.pm.get_plugin(NAME) is None
    if added:
        manager.register(function_backend, NAME)
    yield manager
    ins.clear_cache()
    if added:
        manager.unregister(NAME)


@pytest.fixture
def x():
    return np.random.default_rng(1).random((5, 6), dtype=np.float32)


def test_wrap_serves_a_plain_function(manager, x):
    model = ins.wrap(scores, input_shape=(6,))
    assert isinstance(model, FunctionModel) and isinstance(model, ins.ModelAdapter)
    assert model.backend == "function" and model.capabilities == {Capability.FORWARD}
    assert model.name == "scores" and model.input_shape == (6,) and model.model is scores
    np.testing.assert_array_equal(model.forward(x).outputs, x @ W)
    assert ins.wrap(model) is model
    np.testing.assert_array_equal(model.predict_classes(x), (x @ W).argmax(1))


def test_other_callables_are_functions_too(manager, x):
    class Scorer:
        def __call__(self, batch):
            return batch @ W

        def method(self, batch):
            return batch @ W

    for fn in (Scorer(), Scorer().method, functools.partial(affine, weights=W), lambda b: b @ W):
        np.testing.assert_allclose(ins.wrap(fn).forward(x).outputs, x @ W, rtol=1e-6)


def test_torch_and_keras_models_keep_their_own_backends(manager, torch_small, keras_small):
    from innersight.backends.keras.adapter import KerasAdapter
    from innersight.backends.torch.adapter import TorchAdapter

    assert isinstance(ins.wrap(torch_small), TorchAdapter)
    assert isinstance(ins.wrap(keras_small), KerasAdapter)
    for model in (torch_small, keras_small):  # callable, but never served as a function
        assert function_backend.innersight_wrap_model(model=model, options={}) is None


def test_the_function_gets_its_own_copy(manager, x):
    def destructive(batch):
        batch *= 0.0  # a function may change what it receives
        return batch.sum(axis=1)

    before = x.copy()
    out = ins.wrap(destructive).forward(x).outputs
    np.testing.assert_array_equal(x, before)
    assert out.shape == (5, 1)  # (N,) scores are served as one column


def test_a_class_is_refused_and_an_instance_works(manager, x):
    class Scorer:
        def __call__(self, batch):
            return batch @ W

    with pytest.raises(InputError, match=re.escape("got the class")) as err:
        ins.wrap(Scorer)
    assert "pass an instance" in str(err.value)
    np.testing.assert_allclose(ins.wrap(Scorer()).forward(x).outputs, x @ W, rtol=1e-6)


def test_unknown_options_name_the_valid_ones(manager, x):
    with pytest.raises(InputError, match=re.escape("valid options: input_shape, name, max_batch")):
        ins.wrap(scores, input_layout="NHWC")
    with pytest.raises(InputError, match=re.escape("did you mean 'input_shape'?")):
        ins.wrap(scores, input_shap=(6,))
    assert ins.wrap(scores, input_shape=(6,)).input_shape == (6,)


def test_non_callables_find_no_backend(manager):
    with pytest.raises(BackendNotFoundError, match="no backend accepts a model of type"):
        ins.wrap(object())


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (lambda b: b[:2] @ W, "returned 2 rows (shape (2, 3)) for a batch of 5 inputs"),
        (lambda b: (b @ W)[:, :, None], "return one score per class (N, K)"),
        (lambda b: np.full((len(b), 3), np.nan), "returned 15 NaN or Inf score(s)"),
        (lambda b: np.array(["a"] * len(b)), "return real numbers"),
        (lambda b: 1.0, "returned a scalar for a batch of 5 inputs"),
    ],
)
def test_bad_returns_say_what_is_expected(manager, x, fn, message):
    with pytest.raises(InputError, match=re.escape(message)):
        FunctionModel(fn).forward(x)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"input_shape": "28x28"}, "input_shape='28x28' is not a shape"),
        ({"input_shape": (0, 3)}, "pass positive ints without the batch axis"),
        ({"max_batch": 0}, "max_batch must be a positive int"),
        ({"name": ""}, "name must be a non-empty str"),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(InputError, match=re.escape(message)):
        FunctionModel(scores, **options)


def test_inputs_are_checked_against_the_input_shape():
    model = FunctionModel(lambda b: b.reshape(len(b), -1), input_shape=(8, 8, 3))
    with pytest.raises(InputError, match="looks channels-first"):
        model.forward(np.zeros((2, 3, 8, 8), np.float32))


def test_max_batch_splits_the_calls(x):
    calls = []

    def counted(batch):
        calls.append(len(batch))
        return batch @ W

    out = FunctionModel(counted, max_batch=2).forward(x).outputs
    assert calls == [2, 2, 1]
    np.testing.assert_allclose(out, x @ W, rtol=1e-6)


def test_taps_serve_the_scores_and_nothing_else(x):
    model = FunctionModel(scores, input_shape=(6,))
    assert model.layers() == [LayerInfo("output", "function", ())]
    result = model.forward(x, taps=[LOGITS, "output"])
    for tap in (LOGITS, "output"):
        np.testing.assert_array_equal(result.activations[tap], result.outputs)
    assert model.layers() == [LayerInfo("output", "function", (3,))]
    with pytest.raises(LayerNotFoundError, match="a function has no layers to tap"):
        model.forward(x, taps=["dense"])


def test_gradients_are_refused_with_what_to_use_instead(manager, x):
    model = ins.wrap(scores, input_shape=(6,))
    with pytest.raises(CapabilityError, match="use a technique that needs only forward"):
        model.value_and_grad(x, ins.objectives.Logit(0))
    with pytest.raises(CapabilityError, match="needs input_gradients"):
        ins.explain("saliency", model, x)


def test_tensor_results_are_converted(x):
    torch = pytest.importorskip("torch")
    weight = torch.from_numpy(W).requires_grad_(True)
    model = FunctionModel(lambda b: torch.from_numpy(b) @ weight)
    np.testing.assert_allclose(model.forward(x).outputs, x @ W, rtol=1e-6)


def test_passes_the_conformance_suite(x):
    check_adapter(FunctionModel(scores, input_shape=(6,)), x, inject=False)


def test_occlusion_matches_the_torch_adapter(manager, torch_small, images):
    """A torch model behind a numpy function gives the torch adapter's numbers."""
    import torch

    def numpy_net(batch):
        with torch.no_grad():
            return torch_small(torch.from_numpy(batch).permute(0, 3, 1, 2)).numpy()

    params = {"target": [0, 1, 2, 1], "window": 4, "stride": 4, "progress": False}
    direct = ins.explain("occlusion", torch_small, images, **params)
    served = ins.explain("occlusion", numpy_net, images, **params)
    assert served.meta["backend"] == "function" and direct.meta["backend"] == "torch"
    np.testing.assert_allclose(
        served.values, direct.values, atol=1e-5 * np.abs(direct.values).max()
    )
    assert np.abs(direct.values).max() > 1e-3

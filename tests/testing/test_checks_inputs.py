"""The input conformance checks on the reference adapter, and that they catch broken ones."""

from __future__ import annotations

import numpy as np
import pytest

from innersight import testing
from innersight.testing import ConformanceError, reference_model
from innersight.testing.reference_inputs import DerivedReferenceAdapter, ReferenceTensor

SHAPES = ((3, 3, 2), (4,))


def parts(n=3, seed=0):
    rng = np.random.default_rng(seed)
    return tuple(rng.standard_normal((n, *s)).astype(np.float32) for s in SHAPES)


def test_with_inputs_check_passes_on_the_reference():
    model = reference_model("conv", seed=1)
    testing.check_with_inputs(model, np.random.default_rng(0).random((2, 12, 12, 3), np.float32))


def test_several_inputs_check_passes_and_uses_the_native_call():
    model = reference_model("mlp", input_shapes=SHAPES, seed=2)
    testing.check_several_inputs(model, parts(), model.network)
    testing.check_several_inputs(model, parts(), model.network, extra_args=(2.0,))


def test_several_inputs_check_catches_swapped_inputs():
    model = reference_model("mlp", input_shapes=((4,), (4,)), seed=3)
    a, b = np.random.default_rng(1).standard_normal((2, 2, 4)).astype(np.float32)
    with pytest.raises(ConformanceError, match="outputs of the packed batch differ"):
        testing.check_several_inputs(model, (a, b), lambda a, b: model.network(b, a))


class _LeakyReference(DerivedReferenceAdapter):
    """A broken derived adapter: its gradients are not packed like its inputs (reversed)."""

    def input_grads(self, grads, scale, shape):
        return super().input_grads(grads, scale, shape)[:, ::-1].copy()


def test_several_inputs_check_catches_wrong_packed_gradients(monkeypatch):
    model = reference_model("mlp", input_shapes=SHAPES, seed=4)
    monkeypatch.setattr(
        type(model), "with_inputs", lambda self, spec: _LeakyReference(self.network, spec)
    )
    with pytest.raises(ConformanceError, match="check_gradients"):
        testing.check_several_inputs(model, parts(), model.network)


def test_native_inputs_check_passes_and_catches_a_tensor_that_changes(monkeypatch):
    model = reference_model("conv", seed=5)
    tensor = ReferenceTensor(np.random.default_rng(2).random((2, 3, 12, 12)), requires_grad=True)
    testing.check_native_inputs(model, tensor)

    def sharing(x):  # returns the tensor's own memory: writing it changes the user's tensor
        return np.moveaxis(x.data, 1, -1)

    monkeypatch.setattr(model, "from_native", sharing)
    with pytest.raises(ConformanceError, match="the user's tensor changed"):
        testing.check_native_inputs(model, tensor)


@pytest.mark.parametrize("shape", [(6,), (5, 3)], ids=["tabular", "sequence"])
def test_the_adapter_suite_runs_on_non_image_inputs(shape):
    testing.check_adapter(reference_model("mlp", input_shape=shape, seed=7))


def test_with_inputs_is_part_of_the_adapter_suite():
    assert "check_with_inputs" in [c.name for c in testing.ADAPTER_CHECKS]
    testing.check_adapter(reference_model("conv", seed=6))

    class Unpacked(testing.ReferenceAdapter):  # a derived adapter that ignores the spec
        def with_inputs(self, spec):
            return testing.ReferenceAdapter(self.network)

    with pytest.raises(ConformanceError, match="check_with_inputs"):
        testing.check_adapter(Unpacked(reference_model("conv", seed=6).network))

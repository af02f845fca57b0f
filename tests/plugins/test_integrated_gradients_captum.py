"""Integrated gradients with Captum's names: ``method`` ("riemann_left", "riemann_right",
"riemann_middle", "riemann_trapezoid", "gausslegendre"), ``multiply_by_inputs`` and one baseline
per input, held to Captum's ``IntegratedGradients`` on the same torch model (1e-5 of the largest
value). Captum's "riemann_trapezoid" weighs its n points 1/n (halved at the ends), so its
weights add up to (n - 1)/n: ours, the trapezoid rule, is Captum's times n/(n - 1).
"""

from __future__ import annotations

import numpy as np
import pytest

import innersight as ins

torch = pytest.importorskip("torch")
captum_attr = pytest.importorskip("captum.attr")

STEPS = 7
TARGETS = [2, 0, 1]


def _model() -> torch.nn.Module:
    torch.manual_seed(3)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.Tanh(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 4 * 4, 8),
        torch.nn.GELU(),
        torch.nn.Linear(8, 3),
    ).eval()


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return _model()


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 6, 6, 3)).astype(np.float32)
    per_input = rng.normal(scale=0.3, size=(3, 6, 6, 3)).astype(np.float32)
    return x, per_input


def _nchw(a: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(a).permute(0, 3, 1, 2).contiguous()


def _captum(model, x, base, method: str, multiply: bool) -> np.ndarray:
    ig = captum_attr.IntegratedGradients(model, multiply_by_inputs=multiply)
    out = ig.attribute(
        _nchw(x), baselines=_nchw(base), target=TARGETS, n_steps=STEPS, method=method
    )
    return out.detach().permute(0, 2, 3, 1).numpy().astype(np.float64)


def _ours(model, x, base, method: str, multiply: bool) -> np.ndarray:
    ex = ins.explain(
        "integrated_gradients",
        model,
        x,
        target=TARGETS,
        baseline=base,
        method=method,
        steps=STEPS,
        multiply_by_inputs=multiply,
        progress=False,
    )
    return np.asarray(ex.values, np.float64)


@pytest.mark.parametrize("multiply", [True, False])
@pytest.mark.parametrize(
    "method", ["riemann_left", "riemann_right", "riemann_middle", "gausslegendre"]
)
def test_captum_names_give_captum_numbers_with_one_baseline_per_input(
    model, data, method, multiply
) -> None:
    x, base = data
    ours = _ours(model, x, base, method, multiply)
    theirs = _captum(model, x, base, method, multiply)
    assert np.abs(ours - theirs).max() <= 1e-5 * np.abs(theirs).max()


def test_captum_trapezoid_is_ours_times_n_minus_one_over_n(model, data) -> None:
    x, base = data
    ours = _ours(model, x, base, "riemann_trapezoid", True)
    theirs = _captum(model, x, base, "riemann_trapezoid", True)
    want = ours * (STEPS - 1) / STEPS
    assert np.abs(want - theirs).max() <= 1e-5 * np.abs(theirs).max()


def test_captum_names_are_aliases_of_our_own(model, data) -> None:
    x, base = data
    for captum_name, ours in (
        ("riemann_middle", "riemann_midpoint"),
        ("gausslegendre", "gauss_legendre"),
    ):
        a = _ours(model, x, base, captum_name, True)
        np.testing.assert_array_equal(a, _ours(model, x, base, ours, True))


def test_without_inputs_adaptive_is_the_integrated_gradient_alone(model, data) -> None:
    """multiply_by_inputs=False drops (x - b) on the adaptive rule too; completeness in meta
    still checks the attributions with it."""
    x, base = data
    run = {"target": TARGETS, "baseline": base, "progress": False}
    full = ins.explain("integrated_gradients", model, x, **run)
    alone = ins.explain("integrated_gradients", model, x, multiply_by_inputs=False, **run)
    delta = x.astype(np.float64) - base
    np.testing.assert_allclose(alone.values * delta, full.values, rtol=1e-4, atol=1e-6)
    assert alone.meta["completeness"] == full.meta["completeness"]
    assert alone.params["multiply_by_inputs"] is False


def test_multiply_by_inputs_must_be_a_bool(model, data) -> None:
    x, _ = data
    with pytest.raises(ins.InputError, match=r"multiply_by_inputs must be True or False, got 'no'"):
        ins.explain("integrated_gradients", model, x, multiply_by_inputs="no")

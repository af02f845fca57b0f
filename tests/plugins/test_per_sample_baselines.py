"""One baseline per input, shaped like the batch, in the perturbation techniques (feature
ablation, KernelSHAP, LIME) and integrated gradients: on a linear score ``w . x`` each group's
value is exactly ``sum over the group of w * (x - b_i)`` with input ``i``'s own baseline ``b_i``.
(GradientShap reads an array shaped like the batch as a distribution of baselines shared by
every input, as Captum's ``GradientShap`` does.)
"""

from __future__ import annotations

import numpy as np
import pytest

import innersight as ins

N, F, K = 3, 6, 2
GROUPS = np.array([0, 0, 1, 2, 2, 3])


@pytest.fixture(scope="module")
def problem() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    w = rng.standard_normal((F, K)).astype(np.float32)
    x = rng.standard_normal((N, F)).astype(np.float32)
    base = rng.standard_normal((N, F)).astype(np.float32)
    return w, x, base


def _expected(w, x, base, target: int) -> np.ndarray:
    """(N, F): each feature shows its group's sum of w * (x - b_i)."""
    contrib = (x.astype(np.float64) - base) * w[:, target]
    per_group = np.stack([np.bincount(GROUPS, weights=row) for row in contrib])
    return per_group[:, GROUPS]


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("feature_ablation", {}),
        ("kernel_shap", {}),
        ("lime", {"alpha": 0.0, "n_samples": 400}),
    ],
)
def test_each_input_is_perturbed_towards_its_own_baseline(problem, name, params) -> None:
    w, x, base = problem
    model = ins.wrap(lambda batch: batch @ w, input_shape=(F,))
    ex = ins.explain(
        name, model, x, target=1, feature_mask=GROUPS, baseline=base, progress=False, **params
    )
    np.testing.assert_allclose(ex.values, _expected(w, x, base, 1), rtol=1e-4, atol=1e-5)
    # one shared baseline gives other numbers: the per-input rows were really used
    shared = ins.explain(
        name, model, x, target=1, feature_mask=GROUPS, baseline=base[0], progress=False, **params
    )
    assert np.abs(shared.values[1:] - ex.values[1:]).max() > 1e-3


def test_integrated_gradients_per_input_baselines_on_a_linear_torch_model(problem) -> None:
    torch = pytest.importorskip("torch")
    w, x, base = problem
    net = torch.nn.Linear(F, K, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.from_numpy(w.T.copy()))
    ex = ins.explain("integrated_gradients", net.eval(), x, target=1, baseline=base, progress=False)
    want = (x.astype(np.float64) - base) * w[:, 1]
    np.testing.assert_allclose(ex.values, want, rtol=1e-5, atol=1e-6)

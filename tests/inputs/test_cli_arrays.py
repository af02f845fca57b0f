"""`innersight run` on .npy/.npz arrays that are not images: tabular rows, several inputs."""

from __future__ import annotations

import numpy as np
import pytest

import innersight as ins
from innersight.cli import main

torch = pytest.importorskip("torch")


class Pair(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fa, self.fb = torch.nn.Linear(5, 3), torch.nn.Linear(2, 3)

    def forward(self, a, b):
        return torch.tanh(self.fa(a) + self.fb(b))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("arrays")
    torch.manual_seed(0)
    rows = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))
    torch.jit.trace(rows.eval(), torch.zeros(1, 6)).save(str(d / "rows.pt"))
    torch.jit.trace(Pair().eval(), (torch.zeros(1, 5), torch.zeros(1, 2))).save(str(d / "pair.pt"))
    rng = np.random.default_rng(0)
    np.save(d / "rows.npy", rng.standard_normal((2, 6)).astype(np.float32))
    np.savez(d / "pair.npz", a=rng.standard_normal((2, 5)), b=rng.standard_normal((2, 2)))
    return d


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def test_tabular_rows_with_a_declared_input_shape(capsys, tmp_path, folder):
    out = run(
        capsys, "run", "input_x_gradient", folder / "rows.pt", folder / "rows.npy",
        "--input-shape", "6", "--target", "1", "-o", tmp_path / "o",
    )  # fmt: skip
    assert "rows_1:" in out
    model = torch.jit.load(str(folder / "rows.pt"))
    x = np.load(folder / "rows.npy")
    for i in range(2):
        got = ins.Explanation.load(tmp_path / "o" / f"rows_{i}_input_x_gradient.npz")
        want = ins.explain("input_x_gradient", model, x[i : i + 1], target=1)
        np.testing.assert_allclose(got.values, want.values, rtol=1e-5, atol=1e-7)


def test_an_npz_of_several_arrays_is_several_inputs(capsys, tmp_path, folder):
    run(
        capsys, "run", "saliency", folder / "pair.pt", folder / "pair.npz", "--target", "0",
        "-o", tmp_path / "o",
    )  # fmt: skip
    got = ins.Explanation.load(tmp_path / "o" / "pair_1_saliency.npz")
    model = torch.jit.load(str(folder / "pair.pt"))
    with np.load(folder / "pair.npz") as data:
        a, b = data["a"].astype(np.float32), data["b"].astype(np.float32)
    assert isinstance(got.values, tuple) and len(got.values) == 2
    torch_a = torch.as_tensor(a[1:2]).requires_grad_()
    torch_b = torch.as_tensor(b[1:2]).requires_grad_()
    model(torch_a, torch_b)[0, 0].backward()
    np.testing.assert_allclose(got.values[0], torch_a.grad.abs().numpy(), rtol=1e-5)
    np.testing.assert_allclose(got.values[1], torch_b.grad.abs().numpy(), rtol=1e-5)

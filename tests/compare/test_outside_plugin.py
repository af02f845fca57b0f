"""``compare --all`` treats an outside technique (tests/fixtures/outside_plugin.py, installed as an
entry point would be) exactly like a built-in: in section order, with its own ``"quick"``
preset, skipped with the capability sentence when a model cannot run it."""

from __future__ import annotations

import json

import numpy as np
import pytest

import innersight as ins
from innersight.compare import compare_all, save_all
from innersight.core import capability_message
from innersight.testing import reference_model
from tests.fixtures import outside_plugin
from tests.fixtures.outside_plugin import NAME, CellGradient, ForwardOnlyAdapter, cell_means

FAST = {
    "smoothgrad": {"samples": 2},
    "integrated_gradients": {"steps": 4},
    "filter_maximization": {"steps": 2},
    "class_maximization": {"steps": 2},
}


@pytest.fixture
def outside(monkeypatch):
    with outside_plugin.installed(monkeypatch):
        yield


@pytest.fixture
def x():
    return np.random.default_rng(6).random((3, 12, 12, 3), dtype=np.float32)


def _fast() -> dict[str, dict[str, int]]:
    return {k: v for k, v in FAST.items() if k in ins.techniques()}


def test_compare_all_runs_it_in_order_with_its_quick_preset(outside, x):
    pytest.importorskip("sklearn", reason="compare --all runs the embeddings (scikit-learn PCA)")
    net = reference_model("conv", seed=3)
    twin = reference_model("conv", seed=3)  # the same weights, another adapter
    found = compare_all(net, twin, x, params=_fast())
    names = [c.technique for c in found.comparisons]
    registry = ins.techniques()
    assert not found.skipped
    assert not found.failures, found.failures
    assert names == sorted(registry, key=lambda n: (registry[n].order, n))
    c = found.comparisons[names.index(NAME)]
    cell = 12 // outside_plugin.CELLS_PER_SIDE["quick"]
    assert c.a.params["cell"] == c.params_b["cell"] == cell == 6
    # a second computation: saliency's map (max |gradient| over channels) averaged per cell
    saliency = ins.explain("saliency", net, x, target=c.a.params["target"])
    np.testing.assert_allclose(c.a.values, cell_means(saliency.values, cell), rtol=1e-6)
    assert c.summary()["rel_l2"] == 0.0 and c.summary()["spearman"] == pytest.approx(1.0)


def test_compare_all_skips_it_with_the_capability_sentence(outside, x, tmp_path):
    net = reference_model("conv", seed=4)
    forward_only = ForwardOnlyAdapter(net.network)
    found = compare_all(net, forward_only, x, params=_fast())
    for name in (NAME, "saliency"):
        requires = ins.techniques()[name].requires
        expected = capability_message(f"technique {name!r}", requires, forward_only)
        assert found.skipped[name] == expected
    assert CellGradient.requires - forward_only.capabilities == {"input_gradients"}
    assert "activation_grid" in [c.technique for c in found.comparisons]
    page = save_all(found.comparisons, tmp_path, failures=found.failures, skipped=found.skipped)
    record = json.loads((tmp_path / "compare.json").read_text())
    assert record["skipped"][NAME] == found.skipped[NAME] and NAME not in record["techniques"]
    assert f"skipped: {found.skipped[NAME]}" in page.read_text(encoding="utf-8").replace(
        "&#x27;", "'"
    )


def test_the_compare_command_runs_it_like_a_built_in(outside, tmp_path, capsys):
    from innersight.cli import main

    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((4, 12, 12, 3), np.float32))
    spec = "tests.fixtures.outside_plugin:torch_net"
    out = tmp_path / "out"
    argv = ["-q", "compare", "--all", spec, spec, str(tmp_path / "x.npy"), "-o", str(out),
            "--input-shape", "12,12,3"]  # fmt: skip
    assert main([*argv, "-p", "stpes=2"]) == 1  # taken by no technique: refused before any work
    err = capsys.readouterr().err
    assert "--param stpes: no installed technique takes it" in err
    assert "did you mean 'steps'" in err
    assert not out.exists()
    assert main([*argv, "-p", "steps=2"]) == 0, capsys.readouterr().err  # class_maximization's
    record = json.loads((out / "compare.json").read_text())
    registry = ins.techniques()
    assert list(record["techniques"]) == sorted(registry, key=lambda n: (registry[n].order, n))
    assert record["techniques"]["class_maximization"]["params_b"]["steps"] == 2
    mine = record["techniques"][NAME]
    assert mine["params_b"]["cell"] == 6 and mine["summary"]["rel_l2"] == 0.0
    assert (out / f"{NAME}.png").is_file()
    assert f'id="compare-{NAME}"' in (out / "compare.html").read_text(encoding="utf-8")

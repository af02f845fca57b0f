"""``innersight evaluate`` without ``--techniques`` holds no list of names: it scores every
installed technique that explains a class score per input (it takes a ``target``), in section
order, outside plugins included, and notes those the model cannot run."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

import innersight as ins
from innersight.cli.evaluate_cmd import _runnable, _techniques
from innersight.core import capability_message
from innersight.testing import reference_model
from tests.fixtures import outside_plugin
from tests.fixtures.outside_plugin import NAME, ForwardOnlyAdapter


@pytest.fixture
def outside(monkeypatch):
    with outside_plugin.installed(monkeypatch):
        yield


def test_the_default_techniques_are_those_taking_a_target_in_section_order(outside):
    registry = ins.techniques()
    chosen = [t.name for t in _techniques(None)]
    expected = [
        n
        for n in sorted(registry, key=lambda n: (registry[n].order, n))
        if "target" in registry[n].parameters() and not registry[n].accepts_datasets
    ]
    assert chosen == expected and chosen[:3] == [NAME, "saliency", "occlusion"]
    assert "activation_grid" not in chosen and "class_maximization" not in chosen
    assert [t.name for t in _techniques("occlusion,saliency")] == ["occlusion", "saliency"]


def test_defaults_the_model_cannot_run_are_noted_and_left_out(outside, capsys):
    net = reference_model("conv", seed=0)
    forward_only = ForwardOnlyAdapter(net.network)
    chosen = _techniques(None)
    kept = _runnable(argparse.Namespace(quiet=False), chosen, forward_only)
    assert [t.name for t in kept] == ["occlusion"]  # the only one that needs no gradient
    err = capsys.readouterr().err
    sentence = capability_message(f"technique {NAME!r}", chosen[0].requires, forward_only)
    assert f"innersight: {NAME} skipped: {sentence}" in err


def test_the_command_scores_the_defaults(outside, tmp_path, capsys):
    from innersight.cli import main

    x = np.random.default_rng(0).random((2, 12, 12, 3), np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "eval"
    argv = ["-q", "evaluate", "tests.fixtures.outside_plugin:torch_net", str(tmp_path / "x.npy"),
            "--input-shape", "12,12,3", "--metrics", "deletion", "-p", "deletion.steps=4",
            "-p", "occlusion.window=4", "-p", "occlusion.stride=2", "-o", str(out)]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    record = json.loads((out / "evaluation.json").read_text())
    rows = [row[0] for row in record["rows"]]
    assert rows[:2] == ["saliency", "occlusion"]
    assert NAME in record["skipped"]  # its cell maps are not per-pixel heatmaps
    # the saliency score is the metric on saliency's own map of these inputs
    model = outside_plugin.torch_net()
    direct = ins.evaluate("deletion", model, ins.explain("saliency", model, x), steps=4)
    np.testing.assert_allclose(record["scores"]["saliency/deletion"], direct.scores, rtol=1e-5)

"""An outside technique (tests/fixtures/outside_plugin.py, installed as an entry point would be)
shows up in reports exactly like a built-in: its section in its order, run with its own
``"report"`` preset, drawn by its own renderer, and skipped with the capability sentence on a
model that cannot run it."""

from __future__ import annotations

import numpy as np
import pytest

import innersight as ins
from innersight.core import capability_message
from innersight.core.render import png_bytes
from innersight.report import build_report
from innersight.testing import reference_model
from tests.fixtures import outside_plugin
from tests.fixtures.outside_plugin import NAME, CellGradient, CellMapRenderer, ForwardOnlyAdapter
from tests.report import parse

#: Few steps for the slow built-ins, so a report of every technique takes seconds.
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
    return np.random.default_rng(5).random((2, 12, 12, 3), dtype=np.float32)


@pytest.fixture
def every_technique(outside, x):
    """Every installed technique on the reference conv net and a forward-only copy of it."""
    net = reference_model("conv", seed=1)
    models = {"numpy": net, "forward_only": ForwardOnlyAdapter(net.network)}
    params = {k: v for k, v in FAST.items() if k in ins.techniques()}
    return build_report(models, x, params=params, progress=False), models


def test_its_section_comes_in_its_order_among_the_built_ins(every_technique):
    report, _ = every_technique
    names = [s.technique for s in report.sections]
    registry = ins.techniques()
    assert names == sorted(registry, key=lambda n: (registry[n].order, n))
    assert names.index(NAME) == names.index("activation_grid") + 1  # order 15: 10 < 15 < 20
    ids = [a.get("id") for t, a in parse(report.to_html()).tags if t == "section"]
    assert ids.index(f"technique-{NAME}") == ids.index("technique-activation_grid") + 1
    section = report.section(NAME)
    assert section.summary == CellGradient.summary
    assert outside_plugin.DISTRIBUTION in section.provider


def test_it_runs_with_its_report_preset_and_its_own_renderer(every_technique):
    report, _ = every_technique
    run = report.run(NAME, "numpy")
    assert run.status == "ok", run.message
    cell = 12 // outside_plugin.CELLS_PER_SIDE["report"]
    assert run.params == {"target": run.explanation.params["target"], "cell": cell}
    assert run.explanation.params["cell"] == cell == 3
    assert run.explanation.values.shape == (2, 4, 4)
    assert run.figures[0].png == png_bytes(CellMapRenderer().render(run.explanation))


def test_it_is_skipped_with_the_capability_sentence_like_a_built_in(every_technique):
    report, models = every_technique
    forward_only = models["forward_only"]
    for name in (NAME, "saliency"):
        run = report.run(name, "forward_only")
        requires = ins.techniques()[name].requires
        expected = capability_message(f"technique {name!r}", requires, forward_only)
        assert run.status == "skipped" and run.message == f"skipped: {expected}"
        assert "needs input_gradients" in run.message
    assert report.run("activation_grid", "forward_only").status == "ok"  # forward is enough


def test_its_numbers_are_the_cell_means_of_the_linear_models_weights(outside, x):
    """A linear model's input gradient for class k is W[:, k]: the map is closed-form."""
    net = reference_model("linear", seed=2, input_shape=(12, 12, 3), num_classes=3)
    report = build_report({"linear": net}, x, techniques=[NAME], progress=False)
    run = report.run(NAME, "linear")
    kernel = net.network.layers[-1].kernel  # (432, 3)
    targets = np.argmax(x.reshape(2, -1) @ kernel + net.network.layers[-1].bias, axis=1)
    assert run.params["target"] == targets.tolist()
    for i, k in enumerate(targets):
        pixel = np.abs(kernel[:, k].reshape(12, 12, 3)).max(axis=-1)
        expected = pixel.reshape(4, 3, 4, 3).mean(axis=(1, 3))  # 3 x 3 cells
        np.testing.assert_allclose(run.explanation.values[i], expected, rtol=1e-6)


def test_the_report_command_runs_it_with_its_preset(outside, tmp_path, capsys):
    from innersight.cli import main

    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((2, 12, 12, 3), np.float32))
    out = tmp_path / "r.html"
    argv = ["-q", "report", "tests.fixtures.outside_plugin:torch_net", str(tmp_path / "x.npy"),
            "--input-shape", "12,12,3", "--techniques", f"saliency,{NAME}", "-o", str(out)]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    doc = out.read_text(encoding="utf-8")
    ids = [a.get("id") for t, a in parse(doc).tags if t == "section"]
    assert ids == ["models", "inputs", "technique-saliency", f"technique-{NAME}", "environment"]
    section = doc[doc.index(f'id="technique-{NAME}"') :].split("</section>")[0]
    assert "<th>cell</th><td>3</td>" in section and "skipped" not in section

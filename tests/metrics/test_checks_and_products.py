"""check_metric on the built-ins and on broken metrics; the report section; `innersight evaluate`."""

from __future__ import annotations

import json

import numpy as np
import pytest

import innersight as ins
from innersight import testing
from innersight.api import evaluate
from innersight.core.metric import Evaluation, Metric

PARAMS = {
    "agreement": {"other": "grad_cam"},
    "deletion": {"steps": 10},
    "insertion": {"steps": 10},
    "road": {"fractions": (0.3, 0.7)},
    "max_sensitivity": {"n_perturb_samples": 3},
    "infidelity": {"n_perturb_samples": 3},
}


@pytest.mark.parametrize("name", ["deletion", "insertion", "infidelity", "max_sensitivity",
                                  "completeness", "road", "agreement", "randomization"])  # fmt: skip
def test_built_in_metrics_pass_the_conformance_check_on_torch(name, digits_torch, digits):
    adapter = ins.wrap(digits_torch, input_shape=(32, 32, 1))
    testing.check_metric(name, adapter, digits.x_test[:2], **PARAMS.get(name, {}))


class _Mutating(Metric):
    name = "mutating"
    summary = "Scales the map in place (a bug)."

    def evaluate(self, model, explanation):
        explanation.values *= 2
        return Evaluation(self.name, np.zeros(len(explanation)))


class _Random(Metric):
    name = "random_scores"
    summary = "Unseeded noise (a bug)."

    def evaluate(self, model, explanation):
        return Evaluation(self.name, np.random.default_rng().random(len(explanation)))


class _Positional(Metric):
    name = "positional"
    summary = "Takes a parameter positionally."

    def evaluate(self, model, explanation, steps=3):
        return Evaluation(self.name, np.zeros(len(explanation)))


@pytest.mark.parametrize(
    ("metric", "message"),
    [
        (_Mutating(), "changed the explanation it scored"),
        (_Random(), "is not deterministic"),
        (_Positional(), r"takes \['steps'\] positionally; make them keyword-only"),
    ],
)
def test_the_conformance_check_catches_broken_metrics(metric, message):
    with pytest.raises(testing.ConformanceError, match=message):
        testing.check_metric(metric)


def test_the_report_section_holds_the_table_and_the_curves(digits_torch, digits):
    from innersight.report.scoring import TITLE, faithfulness_section

    x = digits.x_test[:3]
    explanations = {
        "saliency": ins.explain("saliency", digits_torch, x),
        "grad_cam": ins.explain("grad_cam", digits_torch, x),
        "activation_grid": ins.explain("activation_grid", digits_torch, x[:1]),
    }
    section = faithfulness_section(
        digits_torch, explanations, metrics=["deletion", "insertion"], max_inputs=2,
        progress=False,
    )  # fmt: skip
    assert section.title == TITLE
    assert section.techniques == ["saliency", "grad_cam"] and "activation_grid" in section.skipped
    sub = ins.explain("saliency", digits_torch, x[:2])
    direct = evaluate("deletion", digits_torch, sub, steps=25).summary()
    cell = section.cells[("saliency", "deletion")]
    # the same computation, but the batch planner may cut the two runs into other chunks,
    # and float32 scores of other batch sizes differ in the last bits
    assert cell.n == 2 and cell.mean == pytest.approx(direct["mean"], rel=1e-6)
    assert cell.std == pytest.approx(direct["std"], rel=1e-6)
    assert section.rows()[0][1] == f"{direct['mean']:.3g} ± {direct['std']:.2g}"
    assert section.header() == ["technique", "deletion ↓", "insertion ↑"]
    assert set(section.curves) == {"deletion", "insertion"}
    assert all(png.startswith(b"\x89PNG\r\n\x1a\n") for png in section.curves.values())
    json.dumps(section.to_dict())
    assert "RISE" in section.notes["deletion"]


def test_the_command_line_writes_the_table_curves_and_scores(tmp_path, capsys, digits):
    from innersight.cli import main

    out = tmp_path / "eval"
    code = main([
        "evaluate", "demo:torch", "-o", str(out), "--techniques", "saliency,grad_cam",
        "--metrics", "deletion,completeness", "-p", "deletion.steps=10", "--max-inputs", "2",
    ])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "deletion ↓" in printed and "completeness ↓" in printed
    record = json.loads((out / "evaluation.json").read_text())
    assert record["header"] == ["technique", "deletion ↓", "completeness ↓"]
    assert (out / "deletion.png").read_bytes().startswith(b"\x89PNG")
    loaded = Evaluation.load(out / "saliency_deletion.npz")
    np.testing.assert_allclose(record["scores"]["saliency/deletion"], loaded.scores)
    assert loaded.params["steps"] == 10
    assert "| saliency |" in (out / "evaluation.md").read_text()


def test_the_command_line_explains_a_bad_param(tmp_path, capsys):
    from innersight.cli import main

    code = main(["evaluate", "demo:torch", "-o", str(tmp_path / "o"), "-p", "steps=10"])
    assert code == 1
    assert "--param deletion.steps=50" in capsys.readouterr().err
    code = main(["evaluate", "demo:torch", "-o", str(tmp_path / "o"), "--techniques", "saliency",
                 "--metrics", "deletion", "-p", "deletion.steps=5", "--max-inputs", "1", "-q"])  # fmt: skip
    assert code == 0

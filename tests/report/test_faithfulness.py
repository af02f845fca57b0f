"""The report's section "How faithful is each technique on this model" (``evaluate=True``), the
report's input size for models with free input sides, and its Grad-CAM layer."""

from __future__ import annotations

import base64
import html
import io
import re

import numpy as np
import pytest

import innersight as ins
from innersight.core import hookimpl
from innersight.core.errors import InputError
from innersight.core.metric import Evaluation, Metric, attribution_maps
from innersight.report import build_report
from innersight.report.scoring import first_inputs
from tests.report import one_torch_thread, parse

Image = pytest.importorskip("PIL.Image")
EVIL = "<script>alert(1)</script>"
KEY = "Sequential"


@pytest.fixture(scope="module")
def digits():
    import torch  # noqa: F401  (before TensorFlow)

    from innersight.models import digits_cnn, digits_data

    data = digits_data()
    return digits_cnn("torch"), data.x_test[:5]


@pytest.fixture(scope="module")
def evaluated(digits):
    model, x = digits
    with one_torch_thread():
        report = build_report(
            model,
            x,
            techniques=["saliency", "grad_cam", "activation_grid"],
            evaluate=True,
            metrics="deletion,insertion",
            evaluate_inputs=3,
            progress=False,
        )
    return report, report.to_html()


def test_the_section_scores_saliency_and_grad_cam_as_evaluate_does(digits, evaluated):
    model, _ = digits
    report, doc = evaluated
    section = report.faithfulness[KEY]
    assert section.techniques == ["saliency", "grad_cam"] and section.metrics == [
        "deletion",
        "insertion",
    ]
    assert "activation_grid" in section.skipped  # not a heatmap: listed, not scored
    for technique in section.techniques:
        ex = report.run(technique, KEY).explanation
        for metric in section.metrics:
            # a second computation: the metric on the run's first 3 inputs, via the public API
            direct = ins.evaluate(metric, model, first_inputs(ex, 3), steps=25).summary()
            cell = section.cells[(technique, metric)]
            assert cell.n == 3 and not cell.error
            np.testing.assert_allclose(
                [cell.mean, cell.std], [direct["mean"], direct["std"]], rtol=1e-5
            )
            assert 0.0 <= cell.mean <= 1.0
            assert f'<td class="num">{html.escape(cell.text())}</td>' in doc
    body = doc[doc.index('<section id="faithfulness">') :].split("</section>")[0]
    assert html.escape("How faithful is each technique on this model") in body
    assert "deletion ↓" in body and "insertion ↑" in body
    assert '<a href="#faithfulness">' in doc
    curves = [a for t, a in parse(body).tags if t == "img"]
    assert [a["alt"] for a in curves] == ["deletion curves", "insertion curves"]
    for attrs in curves:
        png = base64.b64decode(attrs["src"].split(",", 1)[1], validate=True)
        assert png == section.curves[attrs["alt"].split()[0]]
        assert np.asarray(Image.open(io.BytesIO(png))).std() > 0


class _Evil(Metric):
    """A metric that fails on grad_cam's maps (with markup in its message) and works otherwise."""

    name = "evil_report_test"
    summary = f"Fails on purpose {EVIL}."
    higher_is_better = True

    def evaluate(self, model, explanation, *, level: int = 1):
        if explanation.technique == "grad_cam":
            raise InputError(f"cannot score {EVIL} at level {level}")
        maps = attribution_maps(explanation, absolute=True)
        return Evaluation(metric=self.name, scores=maps.reshape(len(maps), -1).max(axis=1))


class _EvilPlugin:
    @hookimpl
    def innersight_register_metrics(self):
        yield _Evil()


@pytest.fixture
def evil_metric():
    manager = ins.get_plugin_manager()
    manager.register(_EvilPlugin(), name="report-evil-metric")
    yield
    manager.unregister("report-evil-metric")


def test_a_failing_metric_reads_error_with_its_message_escaped(digits, evil_metric):
    model, x = digits
    with one_torch_thread():
        report = build_report(model, x[:2], techniques=["saliency", "grad_cam"], evaluate=True,
                              metrics=[_Evil.name, "deletion"], progress=False)  # fmt: skip
    section = report.faithfulness[KEY]
    failed = section.cells[("grad_cam", _Evil.name)]
    assert failed.text() == "error"
    assert failed.error == f"cannot score {EVIL} at level 1"
    assert section.cells[("grad_cam", "deletion")].n == 2  # the other cells still have numbers
    saliency = report.run("saliency", KEY).explanation.values
    expected = np.abs(np.asarray(saliency, np.float64)).reshape(2, -1).max(axis=1)
    ok = section.cells[("saliency", _Evil.name)]
    np.testing.assert_allclose([ok.mean, ok.std], [expected.mean(), expected.std()], rtol=1e-6)
    doc = report.to_html()
    assert EVIL not in doc and "<script" not in doc
    assert f"<b>grad_cam / {_Evil.name}</b>: {html.escape(failed.error)}" in doc
    assert '<td class="num">error</td>' in doc


def test_metric_names_are_checked_before_any_work(digits):
    model, x = digits
    with pytest.raises(InputError, match=r"deletoin.*did you mean 'deletion'"):
        build_report(model, x, techniques=["saliency"], evaluate=True, metrics=["deletoin"])
    with pytest.raises(InputError, match=r"metrics is empty"):
        build_report(model, x, techniques=["saliency"], evaluate=True, metrics="")
    report = build_report(
        model, x[:1], techniques=["saliency"], evaluate=True, metrics="deletion", progress=False
    )  # the advice: a known name, a comma-separated string works
    assert report.faithfulness[KEY].cells[("saliency", "deletion")].n == 1


def test_report_command_evaluates(tmp_path, capsys):
    from innersight.cli import main
    from innersight.models import digits_data

    np.save(tmp_path / "x.npy", digits_data().x_test[:2])
    out = tmp_path / "r.html"
    argv = ["-q", "report", "innersight.models:digits_cnn", str(tmp_path / "x.npy"),
            "--input-shape", "32,32,1", "--techniques", "saliency", "--evaluate",
            "--metrics", "deletion,insertion", "-o", str(out)]  # fmt: skip
    with one_torch_thread():
        assert main(argv) == 0, capsys.readouterr().err
    body = out.read_text(encoding="utf-8").split('<section id="faithfulness">')[1]
    row = re.search(r"<tr><th>saliency</th>(.*?)</tr>", body).group(1)
    assert len(re.findall(r"[\d.]+ ± [\d.e-]+", row)) == 2
    assert main([*argv[:-2], "--metrics", "insertoin", "-o", str(out), "--force"]) == 1
    assert "did you mean 'insertion'" in capsys.readouterr().err
    no_flag = [a for a in argv if a != "--evaluate"]
    assert main([*no_flag[:-2], "-o", str(out), "--force"]) == 1
    assert "--metrics only applies with --evaluate; add --evaluate" in capsys.readouterr().err


# -- the report's defaults ------------------------------------------------------------------------
def test_grad_cam_uses_the_techniques_own_layer(digits, evaluated):
    model, x = digits
    report, _ = evaluated
    run = report.run("grad_cam", KEY)
    own = ins.explain("grad_cam", model, x)
    assert run.params["layer"] == own.meta["layer"] == "pool3"
    np.testing.assert_array_equal(run.explanation.values, own.values)


def test_a_keras_model_with_free_input_sides_gets_the_inputs_size():
    import keras  # torch is imported first by tests/conftest.py

    keras.utils.set_random_seed(0)
    inp = keras.Input((None, None, 3))
    h = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inp)
    out = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inp, out)
    x = np.random.default_rng(0).random((2, 12, 10, 3), dtype=np.float32)
    report = build_report(
        model,
        x,
        techniques=["filter_maximization", "class_maximization"],
        params={"filter_maximization": {"steps": 2}, "class_maximization": {"steps": 2}},
        progress=False,
    )
    for name in ("filter_maximization", "class_maximization"):
        run = report.run(name, model.name)
        assert run.status == "ok", run.message
        assert run.params["size"] == [12, 10, 3]
        images = np.asarray(run.explanation.values)
        assert images.shape[1:] == (12, 10, 3) and images.std() > 0

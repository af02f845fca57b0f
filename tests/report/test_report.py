"""The HTML report: structure, embedded images, escaping, failures, the report and demo commands."""

from __future__ import annotations

import base64
import html
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import innersight as ins
from innersight.core import Explanation, Technique, hookimpl
from innersight.report import build_report
from tests.report import one_torch_thread, parse, small_report

Image = pytest.importorskip("PIL.Image")
EVIL = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def report():
    return small_report()


@pytest.fixture(scope="module")
def document(report):
    return report.to_html()


def decode(src: str) -> np.ndarray:
    assert src.startswith("data:image/png;base64,"), src[:40]
    image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True)))
    image.load()
    return np.asarray(image)


# -- structure ----------------------------------------------------------------------------------
def test_every_installed_technique_has_a_section_with_one_run_per_model(report, document):
    ids = [attrs.get("id") for tag, attrs in parse(document).tags if tag == "section"]
    assert ids[:2] == ["models", "inputs"] and ids[-1] == "environment"
    assert len(ids) == len(set(ids)), "section ids must be unique"
    for name in ins.techniques():
        assert f"technique-{name}" in ids
        runs = report.section(name).runs
        assert [run.model for run in runs] == ["torch", "keras"]
        for run in runs:
            assert run.status == "ok", f"{name} on {run.model}: {run.message}"
            assert run.figures or run.details
            assert run.seconds >= 0 and "progress" not in run.params


def test_every_image_is_an_embedded_png_of_the_stated_size(report, document):
    images = [attrs for tag, attrs in parse(document).tags if tag == "img"]
    figures = [f for s in report.sections for r in s.runs for f in (*r.figures, *r.details)]
    assert len(images) == len(figures) + len(report.inputs)
    for attrs in images:
        pixels = decode(attrs["src"])
        assert pixels.shape[:2] == (int(attrs["height"]), int(attrs["width"]))
        assert pixels.std() > 0, f"blank image: {attrs['alt']}"


def test_figures_are_the_renderings_of_the_explanations(report):
    run = report.run("saliency", "keras")
    np.testing.assert_array_equal(decode(run.figures[0].data_uri()), run.explanation.to_image())
    grids = report.run("activation_grid", "torch")
    assert [f.caption.split()[0] for f in grids.details] == list(grids.explanation.values)
    # the torch model and its Keras twin give the same pictures where their layers agree
    np.testing.assert_array_equal(
        decode(report.run("saliency", "torch").figures[0].data_uri()),
        decode(report.run("saliency", "keras").figures[0].data_uri()),
    )


def test_the_document_loads_nothing_and_runs_nothing(document):
    tags = parse(document)
    assert not [tag for tag, _ in tags.tags if tag in ("script", "iframe", "link", "object")]
    for tag, attrs in tags.tags:
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)
        assert not re.match(r"\s*(https?:)?//", attrs.get("src") or ""), (tag, attrs)
        href = attrs.get("href")
        assert href is None or href.startswith("#"), (tag, attrs)
    assert "http://" not in document and "https://" not in document
    csp = [a for t, a in tags.tags if t == "meta" and a.get("http-equiv")]
    assert csp and "default-src 'none'" in csp[0]["content"]


def test_predictions_are_the_softmax_of_the_model_outputs(report):
    from innersight.models import DIGITS_CLASSES, digits_cnn, digits_data

    x = digits_data().x_test[:3]
    logits = ins.wrap(digits_cnn("torch")).forward(x).outputs.astype(np.float64)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    for key in ("torch", "keras"):
        for i, pred in enumerate(report.predictions[key]):
            order = np.argsort(-probs[i])[:3]
            assert pred.predicted == order[0]
            assert [name for name, _ in pred.top] == [DIGITS_CLASSES[k] for k in order]
            np.testing.assert_allclose([p for _, p in pred.top], probs[i, order], atol=1e-5)


def test_model_summary_counts_parameters_and_probes_torch_shapes(report):
    torch_m, keras_m = report.models
    # conv 3x3: (9 * c_in + 1) * c_out; dense: (d_in + 1) * d_out
    expected = (9 + 1) * 16 + (9 * 16 + 1) * 32 + (9 * 32 + 1) * 64 + (1024 + 1) * 64 + 65 * 10
    assert torch_m.num_params == keras_m.num_params == expected
    torch_shapes = {row.name: row.output_shape for row in torch_m.layers}
    keras_shapes = {row.name: row.output_shape for row in keras_m.layers}
    assert torch_shapes["relu1"] == keras_shapes["conv1"] == (32, 32, 16)
    assert torch_shapes["pool3"] == keras_shapes["pool3"] == (4, 4, 64)
    assert torch_shapes["logits"] == (10,)
    assert torch_m.accuracy == keras_m.accuracy and torch_m.accuracy_on == 60
    assert torch_m.accuracy > 0.95
    assert torch_m.input_shape == keras_m.input_shape == (32, 32, 1)


def test_jupyter_shows_the_same_document_in_a_sandboxed_frame(report, document):
    tags = parse(report._repr_html_())
    assert [t for t, _ in tags.tags] == ["iframe"]
    frame = tags.tags[0][1]
    assert frame["srcdoc"] == document and "sandbox" in frame


# -- escaping -----------------------------------------------------------------------------------
def test_names_from_models_class_lists_and_files_are_escaped():
    import torch

    net = torch.nn.Sequential()
    net.add_module(EVIL, torch.nn.Conv2d(1, 2, 3))
    net.add_module("pool", torch.nn.MaxPool2d(2))
    net.add_module("flat", torch.nn.Flatten())
    net.add_module("fc", torch.nn.Linear(2 * 3 * 3, 3))
    classes = ['<img src=x onerror="alert(2)">', "a & b", "it's"]
    x = np.random.default_rng(0).random((2, 8, 8, 1), dtype=np.float32)
    report = build_report(
        {"<b>model</b>": net},
        x,
        techniques=["activation_grid", "saliency"],
        class_names=classes,
        labels=[0, 1],
        input_names=["<i>file</i>.png", '"quoted".png'],
        title="<title>t</title>",
        progress=False,
    )
    doc = report.to_html()
    for raw in (EVIL, classes[0], "<b>model</b>", "<i>file</i>", "<title>t</title>"):
        assert raw not in doc
    assert html.escape(EVIL) in doc
    tags = parse(doc)
    names = [t for t, _ in tags.tags]
    assert "script" not in names and "i" not in names and names.count("title") == 1
    assert all(not any(a.startswith("on") for a in attrs) for _, attrs in tags.tags)
    text = "".join(tags.text)
    for raw in (EVIL, classes[0], "a & b", "<b>model</b>", "<i>file</i>.png", '"quoted".png'):
        assert raw in text, raw  # shown as text, not markup
    assert f"{EVIL} (6, 6, 2), first input" in text  # the layer's activation grid caption


# -- failures and skips -------------------------------------------------------------------------
class Boom(Technique):
    name = "boom_report_test"
    summary = "Always fails."
    requires = frozenset({"forward"})

    def explain(self, model, inputs, *, level: int = 1) -> Explanation:
        raise RuntimeError(f"kaput <img src=x> at level {level}")


class NeedsWeights(Technique):
    name = "weights_report_test"
    summary = "Needs the weights capability."
    requires = frozenset({"forward", "weights"})

    def explain(self, model, inputs) -> Explanation:
        raise AssertionError("must not run: the adapter lacks 'weights'")


class _Plugin:
    @hookimpl
    def innersight_register_techniques(self):
        return [Boom(), NeedsWeights()]


@pytest.fixture
def failing_plugin():
    pm = ins.get_plugin_manager()
    pm.register(_Plugin(), name="report-test-plugin")
    yield
    pm.unregister("report-test-plugin")


def test_a_failing_technique_gets_an_error_section_and_the_report_completes(
    failing_plugin, torch_small, images
):
    report = build_report(
        torch_small,
        images,
        techniques=["saliency", Boom.name, NeedsWeights.name, "embeddings"],
        params={Boom.name: {"level": 3}},
        progress=False,
    )
    boom = report.run(Boom.name, "Sequential")
    assert boom.status == "error" and boom.params == {"level": 3}
    assert boom.message.startswith("PluginError: technique 'boom_report_test' from plugin")
    assert "raised RuntimeError: kaput <img src=x> at level 3" in boom.message
    skipped = report.run(NeedsWeights.name, "Sequential")
    assert skipped.status == "skipped" and "needs weights" in skipped.message
    emb = report.run("embeddings", "Sequential")
    assert emb.status == "skipped" and "labelled data set" in emb.message
    assert report.run("saliency", "Sequential").status == "ok"
    doc = report.to_html()
    assert f'<section id="technique-{Boom.name}"' in doc
    assert "RuntimeError: kaput &lt;img src=x&gt; at level 3" in doc
    assert html.escape(boom.message) + "</pre>" in doc
    assert html.escape(skipped.message) in doc


def test_without_inputs_only_generating_techniques_run():
    from innersight.models import digits_cnn

    adapter = ins.wrap(digits_cnn("torch"), input_shape=(32, 32, 1))
    with one_torch_thread():
        report = build_report(
            {"net": adapter},
            techniques=["saliency", "class_maximization"],
            params={"class_maximization": {"steps": 2, "classes": [3, 5]}},
            progress=False,
        )
    assert report.run("saliency", "net").status == "skipped"
    assert "given none" in report.run("saliency", "net").message
    run = report.run("class_maximization", "net")
    assert run.status == "ok" and run.params["classes"] == [3, 5] and run.params["steps"] == 2
    assert run.explanation.values.shape == (2, 32, 32, 1)
    assert 'id="inputs"' not in report.to_html()


def test_mistakes_in_the_arguments_are_reported_before_any_work(torch_small, images):
    build = build_report
    with pytest.raises(
        ins.InputError, match=r"params were given for 'ocluson'.*did you mean 'occlusion'"
    ):
        build(torch_small, images, techniques=["occlusion"], params={"ocluson": {}})
    with pytest.raises(ins.InputError, match=r"technique 'occlusion' has no parameter 'windw'"):
        build(torch_small, images, techniques=["occlusion"], params={"occlusion": {"windw": 3}})
    with pytest.raises(ins.InputError, match=r"2 class names were given but .* has 3 outputs"):
        build(torch_small, images, techniques=["saliency"], class_names=["a", "b"])
    with pytest.raises(ins.InputError, match=r"3 labels were given for 4 inputs"):
        build(torch_small, images, techniques=["saliency"], labels=[0, 1, 2])
    with pytest.raises(ins.TechniqueNotFoundError, match=r"did you mean 'saliency'"):
        build(torch_small, images, techniques=["salency"])
    with pytest.raises(ins.InputError, match=r"empty mapping of models"):
        build({}, images)


# -- the report command -------------------------------------------------------------------------
def test_report_command_writes_one_file_and_refuses_to_overwrite(tmp_path, capsys):
    from innersight.cli import main
    from innersight.models import digits_data

    data = digits_data()
    picks = [int(np.flatnonzero(data.y_test == k)[0]) for k in (3, 7)]
    paths = [tmp_path / "three.png", tmp_path / "<img src=x onerror=alert(1)>seven.png"]
    for path, i in zip(paths, picks, strict=True):
        Image.fromarray((data.x_test[i, ..., 0] * 255).round().astype(np.uint8)).save(path)
    classes = tmp_path / "classes.txt"
    classes.write_text(
        "\n".join(
            ["zero", "one", "two", "three", "<four>", "five", "six", "seven", "eight", "nine"]
        )
    )
    out = tmp_path / "r.html"
    argv = ["report", "innersight.models:digits_cnn", *map(str, paths), "--input-shape", "32,32,1",
            "--techniques", "saliency,occlusion", "--classes", str(classes), "--labels", "three,7",
            "--param", "occlusion.window=4", "-o", str(out)]  # fmt: skip
    with one_torch_thread():
        assert main(["-q", *argv]) == 0
    doc = out.read_text(encoding="utf-8")
    ids = [a.get("id") for t, a in parse(doc).tags if t == "section"]
    assert ids == ["models", "inputs", "technique-saliency", "technique-occlusion", "environment"]
    assert "&lt;img src=x onerror=alert(1)&gt;seven" in doc and "onerror=alert" not in doc.replace(
        "&lt;img src=x onerror=alert(1)&gt;", ""
    )
    assert "&lt;four&gt;" in doc
    assert doc.count("✓") == 2  # both digits recognised, labels given as a name and an index
    assert "<th>window</th><td>[4, 4]</td>" in doc  # --param reached the technique
    capsys.readouterr()
    assert main(["-q", *argv]) == 1
    assert "already exists; pass --force" in capsys.readouterr().err
    with one_torch_thread():
        assert main(["-q", *argv, "--force"]) == 0


# -- the demo command ---------------------------------------------------------------------------
@pytest.mark.slow
def test_demo_command_writes_the_report_and_an_image_per_technique(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, "-m", "innersight", "demo", "-o", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = Path(tmp_path) / "demo"
    report = folder / "report.html"
    assert f"report: {report}" in proc.stdout
    accuracies = re.findall(r"(torch|keras) digits CNN: test accuracy ([\d.]+)%", proc.stdout)
    assert [b for b, _ in accuracies] == ["torch", "keras"]
    assert all(float(a) > 98 for _, a in accuracies)
    assert re.search(r"total time [\d.]+ s", proc.stdout)
    assert "oneDNN" not in proc.stderr and "absl" not in proc.stderr, proc.stderr[-2000:]
    doc = report.read_text(encoding="utf-8")
    ids = {a.get("id") for t, a in parse(doc).tags}
    faithful = doc[doc.index('<section id="faithfulness">') :].split("</section>")[0]
    for backend in ("torch", "keras"):  # a scored row per heatmap technique and model
        assert f"<h3>{backend}</h3>" in faithful
    rows = re.findall(r"<tr><th>(\w+)</th>((?:<td[^>]*>[^<]*</td>)+)</tr>", faithful)
    assert {"saliency", "grad_cam", "integrated_gradients"} <= {name for name, _ in rows}
    # deletion and insertion score every heatmap; randomization reads n/a where the
    # randomized model's maps are constant (a dead neuron, a Lasso shrunk to zero)
    assert all(len(re.findall(r"[\d.]+ ± ", cells)) >= 2 for _, cells in rows)
    classic = {"saliency", "grad_cam", "integrated_gradients", "occlusion", "smoothgrad"}
    assert all(len(re.findall(r"[\d.]+ ± ", cells)) == 3 for name, cells in rows if name in classic)
    for name in ins.techniques():
        assert f"technique-{name}" in ids
        for backend in ("torch", "keras"):
            png = folder / f"{backend}_{name}.png"
            assert decode(
                "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()
            ).size


def test_demo_refuses_a_folder_holding_other_files(tmp_path, capsys):
    from innersight.cli import main

    folder = tmp_path / "demo"
    folder.mkdir()
    (folder / "report.html").write_text("old demo report")  # the demo's own: replaced
    (folder / "torch_saliency.png").write_bytes(b"old")
    (folder / "notes.txt").write_text("mine")  # not the demo's: protected
    assert main(["demo", "-o", str(tmp_path), "-q"]) == 1
    err = capsys.readouterr().err
    assert re.search(r"holds files the demo did not write \(notes\.txt\).*--force", err)
    assert (folder / "notes.txt").read_text() == "mine"
    assert (folder / "report.html").read_text() == "old demo report"


def test_report_command_embeds_a_labelled_data_set(tmp_path, capsys):
    from innersight.cli import main
    from innersight.models import digits_data

    data = digits_data()
    np.save(tmp_path / "inputs.npy", data.x_test[:2])
    np.savez(tmp_path / "set.npz", x=data.x_test[:60], y=data.y_test[:60])
    out = tmp_path / "r.html"
    argv = ["-q", "report", "innersight.models:digits_cnn", str(tmp_path / "inputs.npy"),
            "--input-shape", "32,32,1", "--techniques", "embeddings", "--dataset",
            str(tmp_path / "set.npz"), "-o", str(out)]  # fmt: skip
    with one_torch_thread():
        assert main(argv) == 0, capsys.readouterr().err
    doc = out.read_text(encoding="utf-8")
    section = doc[doc.index('id="technique-embeddings"') :]
    assert "60" in section and "skipped" not in section.split("</section>")[0]
    np.savez(tmp_path / "bad.npz", images=data.x_test[:5])
    assert (
        main([*argv[:-4], "--dataset", str(tmp_path / "bad.npz"), "-o", str(out), "--force"]) == 1
    )
    assert "holds arrays ['images']; it needs 'x'" in capsys.readouterr().err

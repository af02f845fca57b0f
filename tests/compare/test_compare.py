"""innersight.compare: metrics against closed forms and scipy, pairing, cross objectives, output."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest

import innersight as ins
from innersight import port
from innersight.compare import Comparison, compare, map_metrics, rankdata, spearman, topk_overlap
from innersight.compare.figures import _pair_colours
from innersight.compare.metrics import embedding_rows, procrustes
from innersight.core import objectives
from innersight.models import digits_cnn

torch = pytest.importorskip("torch")
pytest.importorskip("keras")


# -- metrics ---------------------------------------------------------------------------------------
def test_ranks_and_spearman_match_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, size=(7, 9)).astype(float)  # many ties
    b = a + rng.normal(0, 1.5, size=a.shape)
    np.testing.assert_allclose(rankdata(a), stats.rankdata(a.ravel()))
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a.ravel(), b.ravel())[0], abs=1e-12)
    assert np.isnan(spearman(np.ones(5), np.arange(5.0)))


def test_topk_overlap_closed_forms():
    a = np.arange(200.0)
    assert topk_overlap(a, a, 0.05) == 1.0  # k = 10
    assert topk_overlap(a, -a, 0.05) == 0.0
    b = a.copy()
    b[-3:] = -1  # three of A's top 10 drop out of B's top 10
    assert topk_overlap(a, b, 0.05) == pytest.approx(0.7)
    assert topk_overlap(np.array([3.0]), np.array([1.0]), 0.01) == 1.0  # k is at least 1


def test_map_metrics_closed_forms():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(16, 16, 3))
    m = map_metrics(a, a * 1.01)
    assert m["rel_l2"] == pytest.approx(0.01)
    assert m["max_abs_diff"] == pytest.approx(0.01 * np.abs(a).max())
    assert m["spearman"] == pytest.approx(1.0) and m["top1pct"] == m["top5pct"] == 1.0
    assert map_metrics(np.zeros(4), np.zeros(4))["rel_l2"] == 0.0
    assert map_metrics(np.zeros(4), np.ones(4))["rel_l2"] == np.inf


def test_embeddings_are_compared_after_alignment():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(50, 2))
    turn = np.array([[0.0, -1.0], [1.0, 0.0]])
    b = 3.0 * a @ turn * np.array([1.0, -1.0]) + 7.0  # rotated, reflected, scaled, shifted
    np.testing.assert_allclose(procrustes(a, b), a, atol=1e-10)
    rows = embedding_rows(a, b)
    assert max(r["rel_l2"] for r in rows) < 1e-10
    assert min(r["spearman"] for r in rows) == pytest.approx(1.0)
    assert min(r["top5pct"] for r in rows) == 1.0
    b2 = b.copy()
    b2[5] += 40.0  # one point far away: its own row says so
    rows = embedding_rows(a, b2)
    assert max(range(50), key=lambda i: rows[i]["rel_l2"]) == 5


# -- compare on real models ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def nets():
    """The trained digits CNN (torch), a perturbed copy (another model, same input space),
    and the Keras build of the trained one."""
    a = digits_cnn("torch")
    b = digits_cnn("torch")
    with torch.no_grad():
        for p in b.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(0)) * 0.05)
    return a, b, digits_cnn("keras")


def test_metrics_match_an_independent_computation(nets, digits):
    stats = pytest.importorskip("scipy.stats")
    a, b, _ = nets
    x = digits.x_test[:3]
    c = compare("saliency", a, b, x)
    ex_a = ins.explain("saliency", a, x)
    ex_b = ins.explain("saliency", b, x, target=ex_a.params["target"])  # B explains A's class
    assert c.params_b["target"] == ex_a.params["target"]
    for i, row in enumerate(c.metrics):
        va, vb = ex_a.values[i].astype(np.float64), ex_b.values[i].astype(np.float64)
        assert row["rel_l2"] == pytest.approx(np.linalg.norm(va - vb) / np.linalg.norm(va))
        assert row["max_abs_diff"] == pytest.approx(np.abs(va - vb).max())
        assert row["spearman"] == pytest.approx(stats.spearmanr(va.ravel(), vb.ravel())[0])
        k = round(0.05 * va.size)
        top = len(set(np.argsort(-va.ravel())[:k]) & set(np.argsort(-vb.ravel())[:k])) / k
        assert row["top5pct"] == pytest.approx(top)
    assert 0.01 < c.summary()["rel_l2"] < 1  # a different model: a visible, finite difference
    assert c.summary()["n"] == 3


def test_layers_are_translated_between_frameworks(nets, digits):
    a, _, keras_net = nets
    x = digits.x_test[:2]
    c = compare("grad_cam", keras_net, a, x, layer="conv3")  # Keras' fused conv3 = torch relu3
    assert c.params_b["layer"] == "relu3" and c.summary()["rel_l2"] < 1e-5
    wrapped = ins.wrap(a, input_shape=(32, 32, 1))
    with pytest.raises(
        ins.LayerNotFoundError,
        match=r"layer 'conv3' of model A \(torch .*no counterpart.*pre-activation",
    ):
        compare("grad_cam", wrapped, keras_net, x, layer="conv3")
    c = compare("grad_cam", wrapped, keras_net, x, layer="conv3", layer_b="conv3")
    assert c.params_b["layer"] == "conv3" and c.a.params["layer"] == "conv3"
    grid = compare("activation_grid", keras_net, a, x)
    assert grid.layer_pairs == [
        (k, port.layer_map(keras_net, wrapped)[k])
        for k in ("conv1", "pool1", "conv2", "pool2", "conv3", "pool3")
    ]
    assert len(grid.metrics) == 2 * 6 and grid.summary()["rel_l2"] < 1e-6


def test_models_that_are_not_ports_pair_layers_by_name_with_a_note(nets, digits):
    a, b, _ = nets  # neither declares an input shape: no automatic layer map
    c = compare("grad_cam", a, b, digits.x_test[:2], layer="relu3")
    assert c.params_b["layer"] == "relu3"
    assert c.notes and "paired by name only (relu3)" in c.notes[0]
    c = compare("grad_cam", a, b, digits.x_test[:2], layer="relu3", layer_map={"relu3": "relu2"})
    assert c.params_b["layer"] == "relu2" and not c.notes
    with pytest.raises(ins.InputError, match="layer_map must be a dict"):
        compare("grad_cam", a, b, digits.x_test[:2], layer_map=["relu3"])
    with pytest.raises(ins.InputError, match="has no parameter 'layers'"):
        compare("grad_cam", a, b, digits.x_test[:2], layers=["relu3"])


def test_cross_objectives_score_each_models_image_on_the_other(nets):
    a, b, _ = nets
    size = (32, 32, 1)
    c = compare(
        "filter_maximization",
        a,
        b,
        layer="relu2",
        filters=[1, 4],
        steps=6,
        size=size,
        progress=False,
    )
    ex_a, ex_b = c.a, c.b
    np.testing.assert_allclose(
        [r["score_a_img_a"] for r in c.metrics], ex_a.meta["objective"], rtol=1e-5
    )
    np.testing.assert_allclose(
        [r["score_b_img_b"] for r in c.metrics], ex_b.meta["objective"], rtol=1e-5
    )
    # A's objective on B's images, computed independently: forward taps + the reference evaluator
    tap = ins.wrap(a).forward(np.asarray(ex_b.values), taps=["relu2"]).activations
    crop = ex_a.params["crop"]
    ref = objectives.evaluate(objectives.Channel("relu2", np.array([1, 4]), crop), None, tap)
    np.testing.assert_allclose([r["score_a_img_b"] for r in c.metrics], ref, rtol=1e-5)
    assert [r["unit"] for r in c.metrics] == [1, 4]
    r = c.metrics[0]
    assert r["cross_a"] == pytest.approx(r["score_a_img_b"] / r["score_a_img_a"])


# -- output ----------------------------------------------------------------------------------------
def test_identical_results_render_a_black_difference_panel():
    a = np.random.default_rng(3).random((8, 8))
    diff = _pair_colours(a, a)[2]
    assert np.all(diff == diff[0, 0]) and diff[0, 0].sum() < 10  # magma's black end
    shown = _pair_colours(a, 2 * a)
    assert not np.array_equal(shown[0], shown[1])  # one colour scale: B looks brighter


def test_html_is_escaped_and_embeds_the_figure(nets, digits, tmp_path):
    a, b, _ = nets
    c = compare("saliency", a, b, digits.x_test[:2])
    evil = Comparison(**{**c.__dict__, "names": ("<script>x</script>", "b&c"), "notes": ["<i>"]})
    page = evil.to_html()
    assert "<script>" not in page and "&lt;script&gt;" in page and "b&amp;c" in page
    assert "&lt;i&gt;" in page
    png = base64.b64decode(re.search(r'src="data:image/png;base64,([^"]+)"', page).group(1))
    assert png.startswith(b"\x89PNG")
    image = c.to_image()
    assert image.dtype == np.uint8 and image.shape[2] == 3
    out = c.save(tmp_path / "cmp")
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "saliency.html",
        "saliency.png",
        "saliency_a.npz",
        "saliency_b.npz",
        "saliency_metrics.json",
    ]
    record = json.loads(
        (out / "saliency_metrics.json").read_text(), parse_constant=lambda s: pytest.fail(s)
    )
    assert record["summary"]["rel_l2"] == pytest.approx(c.summary()["rel_l2"])
    assert ins.Explanation.load(out / "saliency_b.npz").meta["backend"] == "torch"
    fig = c.plot()
    assert fig.axes[0].get_title().startswith("saliency: torch:Sequential")


def test_layers_b_pairs_activation_grids_in_order(nets, digits):
    a, _, keras_net = nets
    c = compare(
        "activation_grid", ins.wrap(a, input_shape=(32, 32, 1)), keras_net, digits.x_test[:1],
        layers=["relu1", "relu2"], layers_b=["conv1", "conv2"],
    )  # fmt: skip
    assert c.layer_pairs == [("relu1", "conv1"), ("relu2", "conv2")]
    assert max(r["rel_l2"] for r in c.metrics) < 1e-6  # torch relu_k == Keras fused conv_k

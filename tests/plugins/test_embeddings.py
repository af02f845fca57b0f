"""The embeddings technique: PCA / t-SNE of the digits CNN's penultimate features.

Numbers are checked against independent computations: PCA against a numpy SVD of the centred
features, t-SNE by trustworthiness and 5-NN accuracy on the held-out digits (the CNN is 99%
accurate, so its penultimate space separates the classes), and torch against Keras.

t-SNE runs single-threaded here: the test box has 2 cores shared with other test processes, and
openTSNE's and scikit-learn's OpenMP threads then spin-wait on each other (measured 15-30x
slower). The thread count only changes the order of floating-point sums (trustworthiness 0.9951
with 2 threads, 0.9952 with 1, on the same features); ``test_tsne_defaults_...`` checks that
the technique asks for every CPU.
"""

from __future__ import annotations

import sys
import types
from dataclasses import replace

import numpy as np
import pytest

import innersight as ins
from innersight.core import InnersightError, InputError, LayerNotFoundError
from innersight.plugins import _projection
from innersight.plugins.embeddings import Embeddings, layer_features
from innersight.testing import ReferenceAdapter, ReferenceNetwork, check_technique, reference_model
from innersight.testing.reference_layers import Dense

EMB = Embeddings()


@pytest.fixture(scope="module")
def one_thread():
    from threadpoolctl import threadpool_limits

    with pytest.MonkeyPatch.context() as mp, threadpool_limits(1):
        mp.setattr(_projection, "cpu_count", lambda: 1)
        yield


@pytest.fixture(scope="module")
def adapters(digits_torch, digits_keras):
    return {"torch": ins.wrap(digits_torch), "keras": ins.wrap(digits_keras)}


@pytest.fixture(scope="module")
def feats(adapters, digits):
    return {b: layer_features(a, digits.x_test, progress=False) for b, a in adapters.items()}


@pytest.fixture(scope="module")
def pca(adapters, digits):
    return {
        b: ins.explain("embeddings", a, digits.x_test, labels=digits.y_test, progress=False)
        for b, a in adapters.items()
    }


@pytest.fixture(scope="module")
def tsne(adapters, digits, one_thread):
    return {
        b: ins.explain(
            "embeddings", a, digits.x_test, method="tsne", labels=digits.y_test, progress=False
        )
        for b, a in adapters.items()
    }


def batches(x, sizes, y=None):
    """A generator over ``x`` (and ``y``) in chunks of the given sizes."""
    start = 0
    for size in sizes:
        stop = start + size
        yield x[start:stop] if y is None else (x[start:stop], y[start:stop])
        start = stop


# -- the default layer and the features ------------------------------------------------------


def test_default_layer_is_the_input_of_the_final_dense_layer(feats, pca):
    assert feats["torch"].layer == "relu4"  # the ReLU after fc1; torch's logits come next
    assert feats["keras"].layer == "fc1"  # Dense with its fused ReLU
    assert pca["torch"].meta["layer"] == "relu4" and pca["keras"].meta["layer"] == "fc1"
    assert "final dense layer 'logits'" in pca["keras"].meta["layer_rule"]
    assert feats["keras"].shape == (64,) and feats["torch"].values.shape == (450, 64)
    ref = reference_model("conv")  # ... fc1, relu3, fc2
    assert layer_features(ref, np.ones((2, 12, 12, 3), np.float32)).layer == "relu3"


def test_torch_and_keras_features_agree(feats):
    t, k = feats["torch"].values, feats["keras"].values
    assert np.abs(t - k).max() / np.abs(k).max() < 1e-4
    assert (k > 0).mean() > 0.2  # live ReLU features, not an all-zero agreement


def test_spatial_features_are_flattened_channels_last(adapters, digits):
    x = digits.x_test[:5]
    got = layer_features(adapters["torch"], x, layer="pool3", progress=False)
    raw = adapters["keras"].forward(x, taps=["pool3"]).activations["pool3"]  # (5, 4, 4, 64)
    assert got.shape == (4, 4, 64)
    np.testing.assert_allclose(got.values, raw.reshape(5, -1), rtol=1e-4, atol=1e-5)


def test_data_set_gives_the_array_features_and_batch_size_does_not_matter(adapters, digits, feats):
    keras = adapters["keras"]
    x, y = digits.x_test, digits.y_test
    want = feats["keras"].values
    # float32 kernels round differently for different batch shapes: 1e-5 of the feature scale.
    tol = 1e-5 * np.abs(want).max()
    streamed = layer_features(keras, batches(x, [100, 7, 200, 143]), progress=False)
    np.testing.assert_allclose(streamed.values, want, rtol=0, atol=tol)
    assert streamed.labels is None and streamed.inputs is not None
    for size in (1, 13, 450):
        fixed = layer_features(keras, x[:60], batch_size=size, progress=False).values
        np.testing.assert_allclose(fixed, want[:60], rtol=0, atol=tol)
    ex = EMB.explain(keras, batches(x, [200, 250], y), progress=False)
    assert ex.meta["labels"] == y.tolist() and ex.meta["labels_source"] == "data set"
    assert ex.inputs is None  # a data set's inputs are kept only for thumbnails
    np.testing.assert_allclose(ex.values, ins.explain("embeddings", keras, x).values, atol=1e-4)
    onehot = EMB.explain(keras, batches(x, [450], np.eye(10)[y]), progress=False)
    assert onehot.meta["labels"] == y.tolist()
    override = EMB.explain(keras, batches(x, [450], y), labels=y % 2, progress=False)
    assert override.meta["labels"] == (y % 2).tolist()
    assert override.meta["labels_source"] == "labels"


def test_progress_counts_samples_for_arrays_and_batches_for_data_sets(adapters, digits):
    calls: list[tuple[int, int]] = []
    x = digits.x_test[:90]
    layer_features(adapters["keras"], x, batch_size=40, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(40, 90), (80, 90), (90, 90)]

    class Loader:  # a DataLoader-like iterable with a length
        def __len__(self):
            return 3

        def __iter__(self):
            return batches(x, [30, 30, 30])

    calls.clear()
    layer_features(adapters["keras"], Loader(), progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    calls.clear()
    layer_features(adapters["keras"], batches(x, [45, 45]), progress=lambda *a: calls.append(a))
    assert calls == [(1, 0), (2, 0)]  # a generator has no length


# -- PCA ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_pca_matches_numpy_svd_of_the_centred_features(backend, feats, pca):
    f = feats[backend].values.astype(np.float64)
    centred = f - f.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    ex = pca[backend]
    np.testing.assert_allclose(
        ex.meta["explained_variance_ratio"], s[:2] ** 2 / np.sum(s**2), rtol=1e-5
    )
    np.testing.assert_allclose(ex.meta["explained_variance"], s[:2] ** 2 / (len(f) - 1), rtol=1e-5)
    proj = centred @ vt[:2].T
    signs = np.sign(np.sum(proj * ex.values, axis=0))
    np.testing.assert_allclose(ex.values, proj * signs, rtol=1e-5, atol=1e-6 * np.abs(proj).max())
    assert ex.meta["implementation"].startswith("sklearn.decomposition.PCA")


def test_pca_coordinates_agree_across_backends_up_to_sign(pca):
    t, k = pca["torch"].values, pca["keras"].values
    signs = np.sign(np.sum(t * k, axis=0))
    # Features agree to ~3e-7 relative and the two leading eigenvalues are well apart
    # (283 vs 172), so the projections agree to 1e-4 of the map's extent.
    assert np.abs(t * signs - k).max() / np.abs(k).max() < 1e-4


# -- t-SNE -------------------------------------------------------------------------------------


def test_tsne_preserves_neighbourhoods_and_separates_the_digits(tsne):
    for ex in tsne.values():
        assert ex.values.shape == (450, 2) and ex.meta["n_samples"] == 450
        assert ex.meta["trustworthiness"] > 0.9 and ex.meta["trustworthiness_neighbors"] == 5
        assert ex.meta["knn_accuracy"] > 0.9 and ex.meta["knn_neighbors"] == 5
        assert ex.meta["implementation"].startswith("openTSNE")
        assert ex.meta["kl_divergence"] > 0 and ex.meta["perplexity"] == 30.0
    trust = [ex.meta["trustworthiness"] for ex in tsne.values()]
    assert abs(trust[0] - trust[1]) < 0.01


def test_tsne_metrics_match_independent_computations(tsne, feats):
    from sklearn.manifold import trustworthiness

    ex = tsne["keras"]
    expected = trustworthiness(feats["keras"].values, ex.values, n_neighbors=5)
    assert ex.meta["trustworthiness"] == pytest.approx(expected, abs=1e-6)
    # Brute force 5-NN leave-one-out, ties to the smallest label (ours: to the nearest).
    labels = np.asarray(ex.meta["labels"])
    d = np.linalg.norm(ex.values[:, None] - ex.values[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    votes = labels[np.argsort(d, axis=1)[:, :5]]
    predicted = np.array([np.bincount(v, minlength=10).argmax() for v in votes])
    assert abs(np.mean(predicted == labels) - ex.meta["knn_accuracy"]) < 0.01


def test_tsne_falls_back_to_scikit_learn_without_opentsne(
    adapters, digits, monkeypatch, one_thread
):
    monkeypatch.setitem(sys.modules, "openTSNE", None)  # makes `import openTSNE` fail
    x, y = digits.x_test[:150], digits.y_test[:150]
    ex = ins.explain("embeddings", adapters["keras"], x, method="tsne", perplexity=10, labels=y)
    assert ex.meta["implementation"].startswith("sklearn.manifold.TSNE")
    assert ex.meta["trustworthiness"] > 0.9 and ex.meta["knn_accuracy"] > 0.85


def test_tsne_defaults_all_cpus_and_fft_from_10000_samples(monkeypatch):
    seen = []

    class FakeTSNE:  # records what the technique asks openTSNE for
        def __init__(self, **kwargs):
            seen.append(kwargs)

        def fit(self, x):
            out = np.asarray(x[:, :2], dtype=np.float64).view(type("Emb", (np.ndarray,), {}))
            out.kl_divergence = 0.5
            return out

    monkeypatch.setitem(sys.modules, "openTSNE", types.SimpleNamespace(TSNE=FakeTSNE))
    rng = np.random.default_rng(0)
    for n in (50, 10_000):
        coords, meta = _projection.tsne(rng.random((n, 3)), perplexity=5, seed=3)
        assert coords.shape == (n, 2) and meta["kl_divergence"] == 0.5
    assert [s["negative_gradient_method"] for s in seen] == ["bh", "fft"]
    assert all(s["n_jobs"] == _projection.cpu_count() >= 1 for s in seen)
    assert all(s["random_state"] == 3 and s["perplexity"] == 5 for s in seen)


# -- metrics -------------------------------------------------------------------------------------


def test_knn_accuracy_is_leave_one_out_with_nearest_neighbour_tie_break():
    line = np.array([[0, 0], [1, 0], [2, 0], [10, 0], [11, 0], [12, 0]], dtype=float)
    labels = np.array([0, 0, 0, 1, 1, 1])
    assert _projection.knn_accuracy(line, labels, k=2) == 1.0
    assert _projection.knn_accuracy(line, labels, k=5) == 0.0  # 2 own vs 3 other labels
    # Points 0 and 1 see one "c" and one "a" neighbour: the nearer ("c") wins the tie, which
    # gets both right (a smallest-label rule would pick "a" and get none right).
    tie = np.array([[0, 0], [1, 0], [-1.5, 0], [5, 0]], dtype=float)
    assert _projection.knn_accuracy(tie, np.array(["c", "c", "a", "a"]), k=2) == 0.5


def test_trustworthiness_is_estimated_on_a_seeded_subset_of_large_data(monkeypatch):
    from sklearn.manifold import trustworthiness

    rng = np.random.default_rng(0)
    f = rng.standard_normal((300, 10))
    coords = f[:, :2] + 0.1 * rng.standard_normal((300, 2))
    full = _projection.quality(f, coords, None, seed=1)
    assert full["trustworthiness_samples"] == 300
    assert full["trustworthiness"] == pytest.approx(trustworthiness(f, coords, n_neighbors=5))
    monkeypatch.setattr(_projection, "METRIC_SAMPLES", 120)
    part = _projection.quality(f, coords, None, seed=1)
    idx = np.sort(np.random.default_rng(1).choice(300, 120, replace=False))
    assert part["trustworthiness_samples"] == 120
    assert part["trustworthiness"] == pytest.approx(trustworthiness(f[idx], coords[idx]))
    assert abs(part["trustworthiness"] - full["trustworthiness"]) < 0.05


# -- errors --------------------------------------------------------------------------------------


def test_parameter_errors(adapters, digits):
    keras, x, y = adapters["keras"], digits.x_test, digits.y_test
    with pytest.raises(InputError, match=r"method='umap' is unknown; use one of 'pca', 'tsne'"):
        ins.explain("embeddings", keras, x, method="umap")
    with pytest.raises(
        LayerNotFoundError, match=r"layer 'fc' not found in keras model .*did you mean 'fc1'"
    ):
        ins.explain("embeddings", keras, x, layer="fc")
    with pytest.raises(InputError, match=r"labels has 10 entries for 450 samples; pass one per"):
        ins.explain("embeddings", keras, x, labels=y[:10])
    with pytest.raises(InputError, match=r"embeddings needs at least 3 samples, got 2"):
        ins.explain("embeddings", keras, x[:2])
    with pytest.raises(
        InputError,
        match=r"perplexity=30 is too large for 50 samples: t-SNE needs at least 3 \* perplexity "
        r"\+ 1 = 91 samples; pass perplexity=16 or less",
    ):
        ins.explain("embeddings", keras, x[:50], method="tsne")
    with pytest.raises(
        InputError,
        match=r"perplexity must be a finite number > 0, got -1; pass e\.g\. perplexity=30\.0",
    ):
        ins.explain("embeddings", keras, x, method="tsne", perplexity=-1)
    with pytest.raises(
        InputError, match=r"seed must be a non-negative int or None, got 0\.5; pass e\.g\. 0"
    ):
        ins.explain("embeddings", keras, x, seed=0.5)
    one = reference_model("conv", num_classes=1)
    with pytest.raises(
        InputError, match=r"layer 'fc2' gives 1 feature per sample; .*earlier layer"
    ):
        ins.explain("embeddings", one, np.ones((4, 12, 12, 3), np.float32), layer="fc2")


def test_layer_errors_without_layer_info_and_without_a_dense_head():
    ref = reference_model("conv")

    class Bare:  # the bare protocol: no BaseAdapter.layer_info to ask
        backend, capabilities, name, input_shape = "bare", ref.capabilities, "net", None
        layers, forward = ref.layers, ref.forward

    x = np.ones((4, 12, 12, 3), np.float32)
    with pytest.raises(LayerNotFoundError, match=r"layer 'relu' not found in bare model net; 9 "):
        EMB.explain(Bare(), x, layer="relu")
    w = np.ones((6, 3), np.float32)
    head_only = ReferenceAdapter(ReferenceNetwork([Dense("fc", w, np.zeros(3))], (6,)))
    with pytest.raises(
        InputError, match=r"cannot pick a default layer.*pass layer= one of: 1 layers: fc"
    ):
        EMB.explain(head_only, np.ones((4, 6), np.float32))


def test_data_set_errors(adapters, digits):
    keras, x, y = adapters["keras"], digits.x_test[:40], digits.y_test[:40]
    with pytest.raises(
        InputError, match=r"batch 1 of the data set has samples of shape \(16, 16, 1\)"
    ):
        EMB.explain(adapters["torch"], iter([x[:20], x[:20, ::2, ::2]]))  # no declared input shape
    with pytest.raises(
        InputError, match=r"batch 1 of the data set: inputs have shape \(20, 16, 16, 1\)"
    ):
        EMB.explain(keras, iter([x[:20], x[:20, ::2, ::2]]))  # keras knows its input shape
    with pytest.raises(InputError, match=r"batch 1 of the data set has no labels but batch 0 has"):
        EMB.explain(keras, iter([(x[:20], y[:20]), x[20:]]))
    with pytest.raises(
        InputError, match=r"the labels \(y\) of batch 0 has 5 entries for 20 samples"
    ):
        EMB.explain(keras, iter([(x[:20], y[:5])]))
    with pytest.raises(InputError, match=r"batch 0 of the data set is a dict; yield arrays"):
        EMB.explain(keras, iter([{"image": x, "label": y}]))
    with pytest.raises(InputError, match=r"the data set yielded no batches"):
        EMB.explain(keras, iter([]))
    with pytest.raises(
        InputError, match=r"a list or tuple is read as one array: .*iter\(batches\)"
    ):
        EMB.explain(keras, [(x[:20], y[:20]), (x[20:], y[20:])])
    with pytest.raises(InputError, match=r"perplexity=30 is too large for 40 samples"):
        EMB.explain(keras, batches(x, [20, 20]), method="tsne")


def test_missing_scikit_learn_names_the_extra(adapters, digits, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.decomposition", None)
    with pytest.raises(
        InnersightError, match=r"needs scikit-learn .*pip install 'innersight\[embeddings\]'"
    ):
        ins.explain("embeddings", adapters["keras"], digits.x_test[:20])
    with pytest.raises(ImportError):  # also an ImportError, for `except ImportError` code
        ins.explain("embeddings", adapters["keras"], digits.x_test[:20])


# -- conformance and rendering -----------------------------------------------------------------


def test_conformance_on_the_reference_adapter(one_thread):
    check_technique("embeddings")  # PCA of 3 noise samples
    x = np.random.default_rng(0).random((40, 12, 12, 3), dtype=np.float32)
    ref = reference_model("conv")
    check_technique("embeddings", ref, x, method="tsne", perplexity=5, layer="relu2")
    check_technique("embeddings", ref, x, labels=np.arange(40) % 3, thumbnails=True)


def _pixels_near(img, rgb, tol=12):
    return np.all(np.abs(img.astype(int) - np.asarray(rgb)) <= tol, axis=-1)


def test_render_colours_each_class_where_its_points_are(pca, digits):
    from matplotlib import colormaps

    ex = pca["keras"]
    img = ex.to_image()
    assert img.shape[2] == 3 and img.dtype == np.uint8
    rows, cols, data_x, data_y = [], [], [], []
    for c in range(10):
        where = _pixels_near(img, np.array(colormaps["tab10"](c)[:3]) * 255)
        assert where.sum() > 50, f"class {c} is not drawn in its colour"
        r, q = np.nonzero(where)
        rows.append(r.mean())
        cols.append(q.mean())
        data_x.append(ex.values[digits.y_test == c, 0].mean())
        data_y.append(ex.values[digits.y_test == c, 1].mean())
    # Image columns grow with x and rows shrink with y: class colours sit where the classes are.
    assert np.corrcoef(cols, data_x)[0, 1] > 0.9
    assert np.corrcoef(rows, data_y)[0, 1] < -0.9
    plain = replace(ex, meta={**ex.meta, "labels": None}).to_image()
    assert _pixels_near(plain, np.array(colormaps["tab10"](1)[:3]) * 255).sum() == 0
    shifted = replace(ex, meta={**ex.meta, "labels": ((digits.y_test + 1) % 10).tolist()})
    assert not np.array_equal(shifted.to_image(), img)


def test_thumbnails_draw_the_inputs(adapters, digits):
    x, y = digits.x_test, digits.y_test
    ex = ins.explain("embeddings", adapters["keras"], x, labels=y, thumbnails=True)
    with_thumbs, without = ex.to_image(), ex.to_image(thumbnails=False)
    grey = lambda img: np.sum(  # noqa: E731 - gray digit pixels, neither white nor black
        (img.min(axis=-1) == img.max(axis=-1)) & (img.min(axis=-1) > 30) & (img.max(axis=-1) < 220)
    )
    assert grey(with_thumbs) > grey(without) + 500
    streamed = EMB.explain(adapters["keras"], batches(x, [450], y), thumbnails=True)
    np.testing.assert_array_equal(streamed.inputs, x)
    lean = EMB.explain(adapters["keras"], batches(x, [450], y))
    with pytest.raises(InputError, match=r"thumbnails need the inputs in the explanation"):
        lean.to_image(thumbnails=True)


def test_explain_reads_a_data_set_of_x_y_batches(digits, digits_torch):
    """``innersight.explain`` passes an iterable of batches through to the technique."""

    def batches():
        for i in range(0, 450, 100):
            yield digits.x_test[i : i + 100], digits.y_test[i : i + 100]

    from_batches = ins.explain("embeddings", digits_torch, batches(), method="pca", progress=False)
    from_array = ins.explain(
        "embeddings",
        digits_torch,
        digits.x_test,
        labels=digits.y_test,
        method="pca",
        progress=False,
    )
    np.testing.assert_allclose(from_batches.values, from_array.values, atol=1e-4)
    assert from_batches.meta["knn_accuracy"] == from_array.meta["knn_accuracy"]

"""embed_dataset: features equal a direct tap, incremental PCA equals scikit-learn's PCA, the
t-SNE map's trustworthiness is reported (and equals scikit-learn's), the projector folder is
read by TensorBoard's own projector plugin, and reruns keep what is still valid."""

from __future__ import annotations

import json

import numpy as np
import pytest

import innersight as ins
from innersight.dataset import projection

torch = pytest.importorskip("torch")
pytest.importorskip("pyarrow")
sklearn_decomposition = pytest.importorskip("sklearn.decomposition")
sklearn_manifold = pytest.importorskip("sklearn.manifold")


@pytest.fixture(scope="module")
def pca_run(tmp_path_factory, digits_torch, digits):
    """PCA map of the 450 held-out digits, fitted in blocks of 64 rows (many partial fits)."""
    out = tmp_path_factory.mktemp("embed") / "pca"
    old, projection.BLOCK = projection.BLOCK, 64
    try:
        return ins.embed_dataset(
            digits_torch,
            (digits.x_test, digits.y_test),
            out=out,
            method="pca",
            components=8,
            batch_size=100,
            projector=0,
            quality_samples=200,
            progress=False,
        )
    finally:
        projection.BLOCK = old


def test_features_are_the_penultimate_layer(pca_run, digits_torch, digits):
    from innersight.plugins._features import layer_features

    direct = layer_features(ins.wrap(digits_torch), digits.x_test, batch_size=100, progress=False)
    assert pca_run.manifest.fingerprint["layer"] == direct.layer == "relu4"
    stored = pca_run.to_numpy(column="features", table="features")
    np.testing.assert_allclose(stored, direct.values, rtol=1e-6, atol=1e-6)


def test_incremental_pca_equals_sklearn_pca(pca_run):
    feats = pca_run.to_numpy(column="features", table="features").astype(np.float64)
    exact = sklearn_decomposition.PCA(n_components=8).fit(feats)
    comps = pca_run.to_numpy(column="pca")
    reference = exact.transform(feats)
    for k in range(3):  # the leading components, up to sign
        cos = abs(np.dot(comps[:, k], reference[:, k])) / (
            np.linalg.norm(comps[:, k]) * np.linalg.norm(reference[:, k])
        )
        assert cos > 0.9999, (k, cos)
    ratio = pca_run.manifest.stages["pca"]["explained_variance_ratio"]
    np.testing.assert_allclose(ratio[:3], exact.explained_variance_ratio_[:3], rtol=1e-3)
    np.testing.assert_allclose(pca_run.to_numpy(column="x"), comps[:, 0], rtol=1e-6)
    np.testing.assert_allclose(pca_run.to_numpy(column="y"), comps[:, 1], rtol=1e-6)


def test_blockwise_trustworthiness_equals_sklearn():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 12))
    y = x[:, :2] + 0.5 * rng.normal(size=(300, 2))
    for k in (1, 5, 12):
        ours = projection.trustworthiness(x, y, k, block=37)
        assert ours == pytest.approx(
            sklearn_manifold.trustworthiness(x, y, n_neighbors=k), abs=1e-12
        )


@pytest.fixture(scope="module")
def tsne_run(tmp_path_factory, digits_torch, digits):
    pytest.importorskip("openTSNE")
    out = tmp_path_factory.mktemp("embed") / "tsne"
    return ins.embed_dataset(
        digits_torch,
        (digits.x_test, digits.y_test),
        out=out,
        method="tsne",
        sample=200,
        batch_size=128,
        projector=100,
        quality_samples=300,
        progress=False,
    )


def test_tsne_map_reports_its_trustworthiness(tsne_run, digits):
    stage = tsne_run.manifest.stages["map"]
    assert stage["sample"] == 200 and stage["trustworthiness_samples"] == 300
    rows = projection.sample_rows(450, 300, 0 + 1)  # the run's seeded subsample (seed + 1)
    feats = tsne_run.to_numpy(column="features", table="features")[rows]
    coords = np.stack([tsne_run.to_numpy(column="x"), tsne_run.to_numpy(column="y")], 1)[rows]
    again = sklearn_manifold.trustworthiness(feats, coords, n_neighbors=5)
    assert stage["trustworthiness"] == pytest.approx(again, abs=1e-9)
    assert stage["trustworthiness"] > 0.9  # the trained CNN separates the digits
    assert tsne_run.summary()["embedding"]["knn_accuracy"] > 0.9


def test_projector_folder_opens_in_tensorboard(tsne_run):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.projector.projector_plugin import ProjectorPlugin
    from werkzeug.test import Client
    from werkzeug.wrappers import Response

    logdir = str(tsne_run.out / "projector")
    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(logdir)
    provider = data_provider.MultiplexerDataProvider(mux, logdir)
    plugin = ProjectorPlugin(base_plugin.TBContext(logdir=logdir, data_provider=provider))
    apps = plugin.get_plugin_apps()

    def get(route, **query):
        return Client(apps[route], Response).get(route, query_string=query)

    assert json.loads(get("/runs").get_data(as_text=True)) == ["."]
    config = json.loads(get("/info", run=".").get_data(as_text=True))
    shapes = {e["tensorName"]: e["tensorShape"] for e in config["embeddings"]}
    assert shapes == {"pca": [100, 50], "map": [100, 2]}
    points = np.frombuffer(get("/tensor", run=".", name="map").get_data(), np.float32).reshape(
        100, 2
    )
    meta = get("/metadata", run=".", name="map").get_data(as_text=True).splitlines()
    assert meta[0] == "id\tlabel\tprediction" and len(meta) == 101
    ids = [line.split("\t")[0] for line in meta[1:]]
    x, y = tsne_run.to_numpy(ids, "x"), tsne_run.to_numpy(ids, "y")
    np.testing.assert_allclose(points, np.stack([x, y], 1), rtol=1e-6, atol=1e-4)
    sprite = get("/sprite_image", run=".", name="pca")
    assert sprite.status_code == 200 and sprite.mimetype == "image/png"
    assert config["embeddings"][0]["sprite"]["singleImageDim"] == [32, 32]


def test_rerun_keeps_features_and_redoes_only_changed_stages(pca_run, digits_torch, digits):
    out = pca_run.out
    stamp = {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")}
    same = ins.embed_dataset(
        digits_torch,
        (digits.x_test, digits.y_test),
        out=out,
        method="pca",
        components=8,
        batch_size=100,
        projector=0,
        quality_samples=200,
        progress=False,
    )
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")} == stamp
    fewer = ins.embed_dataset(
        digits_torch,
        (digits.x_test, digits.y_test),
        out=out,
        method="pca",
        components=4,
        batch_size=100,
        projector=0,
        quality_samples=200,
        progress=False,
    )
    features = [p for p in stamp if p.parent.name == "features"]
    assert all(p.stat().st_mtime_ns == stamp[p] for p in features)
    assert fewer.to_numpy(column="pca").shape == (450, 4) and same.ids() == fewer.ids()

"""Exact incremental occlusion on Keras models (the adapter's ``cropped_forward`` capability).

Every incremental map is checked against the naive path (one full forward per occluded image,
itself checked against a brute-force loop in tests/plugins/test_occlusion.py) and against the
torch adapter's incremental map of the same weights; fallbacks by their reasons and by the advice
they give; the user's model by snapshots.
"""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import innersight as ins  # noqa: E402
from innersight.backends.keras import incremental  # noqa: E402
from innersight.core import CapabilityError  # noqa: E402
from innersight.models import seed_convnet  # noqa: E402
from innersight.plugins._incremental import make_plan, parse_graph  # noqa: E402
from innersight.testing import diff, snapshot  # noqa: E402

L = keras.layers
RTOL = 1e-5  # equal to naive occlusion within 1e-5 of the map's largest value


def occlude(model, x, method, **kwargs):
    return ins.explain("occlusion", model, x, progress=False, method=method, **kwargs)


def assert_same_map(model, x, **kwargs):
    """Incremental equals naive within RTOL of the map's largest value; returns both."""
    naive = occlude(model, x, "naive", **kwargs)
    inc = occlude(model, x, "incremental", **kwargs)
    assert inc.meta["method"] == "incremental", inc.meta["method_reason"]
    scale = float(np.abs(naive.values).max())
    assert scale > 1e-5  # the map is not trivially zero
    np.testing.assert_allclose(inc.values, naive.values, rtol=0, atol=RTOL * scale)
    np.testing.assert_allclose(inc.meta["score"], naive.meta["score"], rtol=1e-6)
    assert inc.meta["window_positions"] == naive.meta["window_positions"]
    return naive, inc


def residual(seed: int = 0):
    """Functional: "same" convs (stride 2, dilation 2, fused ReLU), BN with non-trivial
    statistics, a "same" max pool, an Add, SiLU, a depthwise stride-2 conv, a 1x1 conv, an
    average pool, then Flatten and a Dense softmax (the logits tap reads its pre-activation)."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((40, 40, 3))
    x = L.Conv2D(8, 5, strides=2, padding="same")(inp)
    bn = L.BatchNormalization()
    x = L.ReLU()(bn(x))
    x = L.MaxPooling2D(3, 2, padding="same")(x)
    y = L.Conv2D(8, 3, padding="same", dilation_rate=2, activation="relu")(x)
    x = L.Add()([x, L.Conv2D(8, 3, padding="same")(y)])
    x = L.Activation("silu")(x)
    x = L.Conv2D(12, 1)(L.DepthwiseConv2D(3, strides=2, padding="same")(x))
    x = L.Flatten()(L.AveragePooling2D(2)(x))
    model = keras.Model(inp, L.Dense(3, activation="softmax")(x))
    rng = np.random.default_rng(seed)
    gamma, beta, mean, var = bn.get_weights()
    bn.set_weights([gamma, beta, rng.normal(0, 0.2, mean.shape), rng.uniform(0.5, 1.5, var.shape)])
    return model


def test_the_adapter_declares_and_serves_the_capability():
    adapter = ins.wrap(seed_convnet("keras", input_shape=(48, 48, 3)))
    assert "cropped_forward" in {str(c) for c in adapter.capabilities}
    graph = adapter.crop_graph((48, 48, 3))
    assert [n["op"] for n in graph["nodes"]] == ["input"] + ["window", "window"] * 4
    assert graph["stop"].startswith("'flatten' (Flatten)")
    conv1 = graph["nodes"][1]
    assert conv1["kernel"] == (3, 3) and conv1["macs"] == 32 * 3 * 9 and conv1["size"] == (46, 46)


@pytest.mark.parametrize("edges", ["aligned", "truncate"])
def test_seed_convnet_equals_naive_and_torch(edges):
    model = seed_convnet("keras", input_shape=(48, 48, 3))
    x = np.random.default_rng(1).random((2, 48, 48, 3), dtype=np.float32)
    naive, inc = assert_same_map(model, x, window=(7, 5), stride=(5, 4), edges=edges)
    assert "8 layers recomputed on crops" in inc.meta["method_reason"]
    # the same weights in torch give the same incremental map
    torch_inc = occlude(seed_convnet("torch", input_shape=(48, 48, 3)), x, "incremental",
                        window=(7, 5), stride=(5, 4), edges=edges)  # fmt: skip
    scale = np.abs(naive.values).max()
    np.testing.assert_allclose(torch_inc.values, inc.values, rtol=0, atol=RTOL * scale)


@pytest.mark.parametrize("edges", ["aligned", "truncate"])
@pytest.mark.parametrize("baseline", [0.0, "blur"])
def test_residual_model_equals_naive(edges, baseline):
    model = residual()
    before = snapshot(model)
    x = np.random.default_rng(2).random((2, 40, 40, 3), dtype=np.float32)
    _, inc = assert_same_map(
        model, x, window=6, stride=4, edges=edges, baseline=baseline, target=[0, 2]
    )
    assert "11 layers recomputed on crops" in inc.meta["method_reason"]
    assert inc.meta["score_source"].startswith("logits")
    assert diff(before, snapshot(model)) == []


def test_residual_crops_are_smaller_than_the_maps():
    """On 40x40 images a 6x6 window changes part of every map up to the Add: the crops
    really are crops (a plan that recomputed everything would pass the equality tests too)."""
    adapter = ins.wrap(residual())
    graph = parse_graph(adapter.crop_graph((40, 40, 3)), "keras")
    corners = np.array([0, 4, 8, 12, 16, 20, 24, 28, 32, 34])
    plan = make_plan(graph, corners, corners, (6, 6))
    for node, (h, w) in zip(graph.nodes, plan.sizes, strict=True):
        if node.name in ("conv2d", "max_pooling2d", "add"):
            assert h < node.size[0] and w < node.size[1], (node.name, (h, w), node.size)
    assert plan.saving() > 1.5


def test_probability_score_on_a_separate_softmax_and_a_sequential_model():
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            L.Conv2D(6, 3, activation="tanh"),
            L.MaxPooling2D(2),
            L.Conv2D(6, 3, strides=2),
            L.LeakyReLU(0.1),
            L.Flatten(),
            L.Dense(4),
            L.Activation("softmax"),
        ]
    )
    x = np.random.default_rng(4).random((1, 16, 16, 3), dtype=np.float32)
    for score in ("logit", "probability"):
        naive, inc = assert_same_map(model, x, window=4, stride=3, score=score)
        assert inc.meta["score_source"] == naive.meta["score_source"]


def upsampling_first():
    keras.utils.set_random_seed(5)
    inp = keras.Input((12, 12, 3))
    x = L.Conv2D(4, 3)(L.UpSampling2D(name="up")(inp))
    return keras.Model(inp, L.Dense(3)(L.Flatten()(x)))


def test_unsupported_first_layer_falls_back_with_the_reason():
    model = upsampling_first()
    x = np.random.default_rng(6).random((1, 12, 12, 3), dtype=np.float32)
    auto = occlude(model, x, "auto", window=4, stride=4)
    assert auto.meta["method"] == "naive"
    reason = auto.meta["method_reason"]
    assert reason.startswith("naive: no convolution or pooling can be recomputed on a crop")
    assert "'up' (UpSampling2D) cannot be cropped" in reason
    with pytest.raises(CapabilityError, match=r"method='incremental' cannot run on keras model"):
        occlude(model, x, "incremental", window=4, stride=4)
    naive = occlude(model, x, "naive", window=4, stride=4)  # the advice works
    # the same naive run; the planner may cut it into other chunks (float32 rounding)
    np.testing.assert_allclose(auto.values, naive.values, rtol=1e-5, atol=1e-6)


def test_same_average_pooling_ends_the_prefix_and_auto_says_why():
    keras.utils.set_random_seed(7)
    inp = keras.Input((24, 24, 3))
    x = L.Conv2D(4, 3, padding="same", activation="relu")(inp)
    x = L.AveragePooling2D(3, 2, padding="same", name="avg")(x)
    model = keras.Model(inp, L.Dense(2)(L.Flatten()(L.Conv2D(4, 3)(x))))
    x = np.random.default_rng(8).random((1, 24, 24, 3), dtype=np.float32)
    graph = ins.wrap(model).crop_graph((24, 24, 3))
    assert "'same' average pooling leaves the padding out of the mean" in graph["stop"]
    _, inc = assert_same_map(model, x, window=4, stride=4)  # the first conv runs on crops
    assert (
        "1 layers recomputed on crops (the first that cannot be is 'avg'"
        in (inc.meta["method_reason"])
    )


def test_jax_backend_is_declined_with_the_reason(monkeypatch):
    """Keras on JAX: crop_graph names why (the runner would dispatch every op eagerly)."""
    adapter = ins.wrap(upsampling_first())
    monkeypatch.setattr(adapter, "keras_backend", "jax")
    monkeypatch.setattr(incremental, "_PROGRAMS", type(incremental._PROGRAMS)())
    graph = adapter.crop_graph((12, 12, 3))
    assert graph["nodes"] == [] and graph["stop"].startswith("Keras on JAX would run")
    x = np.ones((1, 12, 12, 3), np.float32)
    with pytest.raises(CapabilityError, match="Keras on JAX would run the cropped layers"):
        occlude(adapter, x, "incremental", window=4, stride=4)
    assert occlude(adapter, x, "auto", window=4, stride=4).meta["method"] == "naive"


def test_runners_are_cached_and_chunks_may_span_images(monkeypatch):
    """A tiny memory budget: one cached image per session; the traced runner is reused."""
    monkeypatch.setenv("INNERSIGHT_MEMORY_BUDGET", "1")
    model = residual(seed=1)
    x = np.random.default_rng(9).random((3, 40, 40, 3), dtype=np.float32)
    _, inc = assert_same_map(model, x, window=6, stride=4, batch_size=7)
    assert inc.meta["forwards"] > 3  # cropped runs plus one cache pass per image
    adapter = ins.wrap(model)
    (programs,) = [p for p in incremental._PROGRAMS[adapter].values() if p.runners]
    assert len(programs.runners) == 1

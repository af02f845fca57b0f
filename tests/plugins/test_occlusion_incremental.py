"""Exact incremental occlusion: the same maps as naive occlusion, from cropped recomputation.

Every incremental map is checked against the naive path (one full forward per occluded image,
itself checked against a brute-force loop in test_occlusion.py) on the seeds' convnet, on a
residual CNN with every croppable op (BN, stride 2, padding, "same" padding with an even kernel,
dilation, groups, padded pooling, in-place and functional activations, ``+=``), and on models
where the croppable prefix ends early. The planner is checked against closed forms, the
fallbacks by their reasons and by the advice they give, and the user's model by snapshots.
The Keras adapter's side is tested in tests/backends/keras/test_incremental.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import innersight as ins
from innersight.core import CapabilityError, InputError
from innersight.models import seed_convnet
from innersight.plugins._incremental import Graph, Node, make_plan, parse_graph
from innersight.testing import ReferenceAdapter, diff, snapshot
from tests.plugins._replicas import ViT, seeded

RTOL = 1e-5  # goal: equal to naive occlusion within 1e-5 relative (of the map's scale)

# The residual CNN runs in float64: its map (score drops through a global average pool) is
# ~1e-4 of its scores, below float32's noise between batch sizes; in float64 a 1e-5 tolerance
# tests the crops, not the arithmetic. The seeds' convnet is tested in float32.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")


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
    return naive, inc


class Block(nn.Module):
    """A residual block: in-place ReLU, BN, dilation or groups, ``+=`` then a functional ReLU."""

    def __init__(self, cin: int, cout: int, stride: int, dilation: int = 1, groups: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, dilation, dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.act = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, groups=groups)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.down is None else self.down(x)
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return F.relu(out)


class ResidualNet(nn.Module):
    """Stem (5x5 stride 2) + BN + Hardswish + padded max pool, a dilated and a grouped stride-2
    block, an even-kernel "same" conv, SiLU, scalar arithmetic, an average pool, then global
    pooling and a linear head (the tail)."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 8, 5, 2, 2), nn.BatchNorm2d(8), nn.Hardswish(), nn.MaxPool2d(3, 2, 1)
        )
        self.block1 = Block(8, 8, 1, dilation=2)
        self.block2 = Block(8, 16, 2, groups=4)
        self.same = nn.Conv2d(16, 16, (4, 2), padding="same")
        self.act = nn.SiLU()
        self.pool = nn.AvgPool2d(2, 1, padding=1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.block1(self.stem(x)))
        x = self.act(self.same(x)) * 0.5 + 1.0
        return self.head(self.pool(x))


@pytest.fixture(scope="module")
def resnet():
    return seeded(ResidualNet).double()


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).random((2, 40, 40, 3), dtype=np.float32)


# -- equality with naive occlusion ---------------------------------------------------------------


@pytest.mark.parametrize("edges", ["aligned", "truncate"])
def test_seed_convnet_equals_naive(edges):
    model = seed_convnet("torch", input_shape=(48, 48, 3))
    x = np.random.default_rng(1).random((2, 48, 48, 3), dtype=np.float32)
    naive, inc = assert_same_map(model, x, window=(7, 5), stride=(5, 4), edges=edges)
    assert "12 layers recomputed on crops" in inc.meta["method_reason"]
    assert "'flatten' (Flatten)" in inc.meta["method_reason"]
    assert inc.meta["window_positions"] == naive.meta["window_positions"]


@pytest.mark.parametrize("edges", ["aligned", "truncate"])
@pytest.mark.parametrize("baseline", [0.0, "blur"])
def test_residual_cnn_equals_naive(resnet, images, edges, baseline):
    _, inc = assert_same_map(
        resnet, images, window=6, stride=4, edges=edges, baseline=baseline, target=[1, 3]
    )
    # every layer up to the global pooling is recomputed on crops
    assert "'head.0' (AdaptiveAvgPool2d)" in inc.meta["method_reason"]


def test_residual_cnn_crops_reach_the_grouped_block(resnet):
    """On 80x80 images the crops stay smaller than the maps through the grouped, strided block
    (on 40x40 they cover its 5x5 maps, which then run whole, as in the model)."""
    x = np.random.default_rng(9).random((1, 80, 80, 3))
    naive, _ = assert_same_map(resnet, x, window=5, stride=5)
    graph = parse_graph(ins.wrap(resnet).crop_graph((80, 80, 3)), "torch")
    corners = np.asarray(naive.meta["window_rows"])
    plan = make_plan(graph, corners, corners, (5, 5))
    sizes = {n.name: (size, n.size) for n, size in zip(graph.nodes, plan.sizes, strict=True)}
    for name in ("block2.conv1", "block2.conv2", "block2.down.0", "add_1"):
        region, full = sizes[name]
        assert region[0] < full[0] and region[1] < full[1], (name, region, full)
    assert sizes["same"][0] != sizes["same"][1]  # cropped along one axis at least


def test_crop_graph_describes_the_residual_cnn(resnet):
    graph = ins.wrap(resnet).crop_graph((40, 40, 3))
    ops = {n["name"]: n for n in graph["nodes"]}
    assert graph["stop"].startswith("'head.0' (AdaptiveAvgPool2d)")
    assert ops["stem.3"]["op"] == "window" and ops["stem.3"]["padding"] == (1, 1)
    assert ops["block1.conv1"]["dilation"] == (2, 2) and ops["block1.conv1"]["padding"] == (2, 2)
    assert ops["same"]["padding"] == (1, 0) and ops["same"]["kernel"] == (4, 2)  # 'same', even
    assert [n["op"] for n in graph["nodes"]].count("add") == 2  # the residual adds
    assert ops["mul"]["op"] == ops["add_2"]["op"] == "pointwise"  # "* 0.5 + 1.0"
    assert ops["block2.conv2"]["macs"] == 16 * (16 // 4) * 9  # groups divide the work


def test_probability_score_and_softmax_logits_tap():
    """A model ending in Softmax: the logits tap reads the Softmax input, incrementally too."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 6, 3, 2), nn.Tanh(),
        nn.Flatten(), nn.Linear(6 * 3 * 3, 4), nn.Softmax(dim=1),
    ).eval()  # fmt: skip
    x = np.random.default_rng(2).random((1, 16, 16, 3), dtype=np.float32)
    for score in ("logit", "probability"):
        naive, inc = assert_same_map(model, x, window=4, stride=3, score=score)
        assert inc.meta["score_source"] == naive.meta["score_source"]


def test_chunks_spanning_image_groups(resnet, images, monkeypatch):
    """A small memory budget: one cached image per session, chunks across two images."""
    monkeypatch.setenv("INNERSIGHT_MEMORY_BUDGET", "1")
    _, inc = assert_same_map(resnet, images, window=6, stride=4, batch_size=7)
    assert inc.meta["forwards"] > 2  # cropped runs plus one cache pass per image


def test_in_place_on_a_shared_tensor_is_not_cropped():
    """Eager code lets ``y`` see the in-place ReLU: the prefix must stop there to stay exact."""

    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4 * 12 * 12, 3)

        def forward(self, x):
            y = self.conv(x)
            z = F.relu(y, inplace=True)  # y now equals z
            return self.fc(torch.flatten(y + z - 0.1 * y.abs(), 1))

    torch.manual_seed(0)
    model = Shared().eval()
    x = np.random.default_rng(3).random((1, 12, 12, 3), dtype=np.float32) - 0.5
    _, inc = assert_same_map(model, x, window=4, stride=4)
    assert "in place, on a tensor that other layers read too" in inc.meta["method_reason"]


# -- the plan ------------------------------------------------------------------------------------


def test_plan_regions_closed_form():
    """conv 3x3 pad 1 grows a window by 1 each side; a 2x2 pool maps [a, b) to
    [a // 2, (b - 1) // 2 + 1); regions are shifted in at the edge and sized for the widest."""
    nodes = (
        Node("x", "input", (), (12, 12), 3, 0.0),
        Node("conv", "window", (0,), (12, 12), 4, 108.0, (3, 3), (1, 1), (1, 1)),
        Node("pool", "window", (1,), (6, 6), 4, 16.0, (2, 2), (2, 2)),
    )
    plan = make_plan(Graph(nodes, None, 0.0, 0, 0), np.array([0, 4, 8]), np.array([0]), (4, 4))
    # conv: [r-1, r+5) clipped -> [0, 5), [3, 9), [7, 12): length 6, starts 0, 3, 6 (shifted)
    assert plan.sizes[1] == (6, 5) and plan.row_starts[1].tolist() == [0, 3, 6]
    # pool: [0, 3), [1, 5), [3, 6): length 4, starts 0, 1, 2 (the last shifted in)
    assert plan.sizes[2][0] == 4 and plan.row_starts[2].tolist() == [0, 1, 2]
    full = 12 * 12 * 108 + 6 * 6 * 16
    assert plan.saving() == pytest.approx(full / (6 * 5 * 108 + 4 * 3 * 16))


# -- choosing the method, and falling back -------------------------------------------------------


def test_auto_picks_incremental_with_its_reason(resnet, images):
    expl = occlude(resnet, images[:1], "auto", window=6, stride=4)
    assert expl.meta["method"] == "incremental"
    assert expl.meta["method_reason"].startswith("incremental: ")
    assert "fewer multiply-adds than naive occlusion" in expl.meta["method_reason"]


class TinyViT(nn.Module):
    """Patch embedding, then attention: it mixes every token, so only the embedding crops."""

    def __init__(self, dim: int = 16):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, 4)
        self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = t + self.attn(t, t, t, need_weights=False)[0]
        return self.head(t.mean(1))


def test_auto_falls_back_on_attention():
    model = seeded(TinyViT)
    x = np.random.default_rng(4).random((1, 16, 16, 3), dtype=np.float32)
    auto = occlude(model, x, "auto", window=4, stride=4)
    assert auto.meta["method"] == "naive"
    reason = auto.meta["method_reason"]
    assert reason.startswith("naive: incremental would save too little (1 layers recomputed")
    assert "'flatten' (the tensor method .flatten())" in reason and "needs 2x" in reason
    # asked for, it runs (the model allows it), and still gives the naive map
    assert_same_map(model, x, window=4, stride=4)
    naive = occlude(model, x, "naive", window=4, stride=4)
    np.testing.assert_array_equal(auto.values, naive.values)


class Spectral(nn.Module):
    """A custom op first: a Fourier filter mixes every pixel, nothing after it can be cropped."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 10 * 10, 3)

    def forward(self, x):
        x = torch.fft.ifft2(torch.fft.fft2(x) * 0.5).real
        return self.fc(self.conv(x).flatten(1))


def test_incremental_refused_with_reason_and_advice():
    torch.manual_seed(0)
    model = Spectral().eval()
    x = np.random.default_rng(5).random((1, 12, 12, 3), dtype=np.float32)
    with pytest.raises(
        CapabilityError, match=r"method='incremental' cannot run on torch model"
    ) as err:
        occlude(model, x, "incremental", window=4, stride=4)
    message = str(err.value)
    assert "no convolution or pooling can be recomputed on a crop" in message
    assert "'fft_fft2' (the function fft_fft2)" in message and "Use method='naive'" in message
    naive = occlude(model, x, "naive", window=4, stride=4)  # the advice works
    auto = occlude(model, x, "auto", window=4, stride=4)
    assert auto.meta["method"] == "naive" and "fft_fft2" in auto.meta["method_reason"]
    np.testing.assert_array_equal(auto.values, naive.values)


def test_untraceable_replica_falls_back():
    """The replica ViT calls len(x), which torch.fx cannot trace."""
    auto = occlude(seeded(ViT), np.ones((1, 16, 16, 3), np.float32), "auto", window=8, stride=8)
    assert auto.meta["method"] == "naive"
    assert auto.meta["method_reason"].startswith("naive: torch.fx cannot trace ViT (")
    assert "'len' is not supported in symbolic tracing" in auto.meta["method_reason"]


def test_data_dependent_control_flow_falls_back():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 3)

        def forward(self, x):
            y = self.conv(x)
            return y.mean((2, 3)) if y.sum() > 0 else -y.mean((2, 3))  # data-dependent

    model = Branchy().eval()
    x = np.random.default_rng(6).random((1, 8, 8, 3), dtype=np.float32)
    auto = occlude(model, x, "auto", window=4, stride=4)
    assert auto.meta["method"] == "naive"
    assert "torch.fx cannot trace Branchy" in auto.meta["method_reason"]
    with pytest.raises(CapabilityError, match="torch.fx cannot trace Branchy"):
        occlude(model, x, "incremental", window=4, stride=4)


def test_adapter_without_the_capability(small_weights):
    model = ReferenceAdapter.from_weights(small_weights)
    x = np.random.default_rng(7).random((1, 12, 12, 3))
    with pytest.raises(CapabilityError, match="'cropped_forward' capability") as err:
        occlude(model, x, "incremental", window=4, stride=4)
    assert "Use method='naive'" in str(err.value)
    auto = occlude(model, x, "auto", window=4, stride=4)
    assert auto.meta["method"] == "naive" and "cropped_forward" in auto.meta["method_reason"]
    np.testing.assert_array_equal(
        auto.values, occlude(model, x, "naive", window=4, stride=4).values
    )


def test_unknown_method():
    model, x = seed_convnet("torch", input_shape=(48, 48, 3)), np.zeros((1, 48, 48, 3), np.float32)
    with pytest.raises(
        InputError, match=r"method='fast' is unknown; use one of 'naive', 'incremental', 'auto'"
    ):
        occlude(model, x, "fast", window=8, stride=8)
    assert occlude(model, x, "auto", window=8, stride=8).meta["method"] == "incremental"


# -- the user's model ----------------------------------------------------------------------------


class WithConstant(nn.Module):
    """A plain tensor attribute: fx tracing stores such constants on the module it traces."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.offset = torch.linspace(-1, 1, 4).reshape(1, 4, 1, 1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(F.relu(self.conv(x) + self.offset).mean((2, 3)))


@pytest.mark.parametrize("make", [lambda: seeded(ResidualNet).train(), lambda: WithConstant()])
def test_model_untouched(make, images):
    model = make().double()
    before = snapshot(model)
    occlude(model, images[:1], "incremental", window=8, stride=8)
    occlude(model, images[:1], "auto", window=8, stride=8)
    assert diff(before, snapshot(model)) == []
    assert not hasattr(model, "_tensor_constant0")


class Counting(nn.Module):
    """A forward with side effects: tracing it would leave a proxy in ``self.last``."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)
        self.last = None

    def forward(self, x):
        self.last = self.conv(x)
        return self.last.mean((2, 3))


def test_forward_with_side_effects_is_restored_and_refused():
    model = Counting().eval()
    x = np.random.default_rng(8).random((1, 8, 8, 3), dtype=np.float32)
    before = snapshot(model)
    graph = ins.wrap(model).crop_graph((8, 8, 3))  # traces, and nothing else runs the model
    assert graph["nodes"] == [] and "assigned attributes (Counting.last)" in graph["stop"]
    assert model.last is None and diff(before, snapshot(model)) == []
    auto = occlude(model, x, "auto", window=4, stride=4)
    assert auto.meta["method"] == "naive"
    assert (
        "tracing Counting.forward() assigned attributes (Counting.last)"
        in (auto.meta["method_reason"])
    )
    model.last = None  # the naive forwards set it, as the model's own code does
    assert diff(before, snapshot(model)) == []

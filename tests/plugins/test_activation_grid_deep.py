"""Activation grids on deep nets: the layers worth seeing, a capped picture that Pillow reopens,
and one file per layer on request."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest

import innersight as ins
from innersight.core import Explanation, InputError
from innersight.plugins.renderers import channel_image, grid_height, plan_grids
from tests.plugins import _replicas as R

Image = pytest.importorskip("PIL.Image")


def reopen(data: bytes | str) -> np.ndarray:
    """Decode a PNG with Pillow's default limits, its decompression-bomb warning an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as img:
            return np.asarray(img.convert("RGB"))


@pytest.fixture(scope="module")
def mobilenet():
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=4
    )
    x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    return ins.wrap(model), x, ins.explain("activation_grid", model, x)


def test_default_layers_of_a_deep_keras_model(mobilenet):
    adapter, x, ex = mobilenet
    infos = {info.name: info for info in adapter.layers()}
    shown = list(ex.values)
    kinds = {infos[n].kind for n in shown}
    assert not kinds & {"ZeroPadding2D", "Dropout", "InputLayer"}
    assert all(min(ex.values[n].shape[1:3]) >= 2 for n in shown)  # no 1x1 "maps"
    assert shown[0] == "Conv1_relu" and "Conv1" not in shown and "bn_Conv1" not in shown
    assert "block_2_add" in shown and "block_1_pad" not in shown
    skipped = ex.meta["skipped"]
    assert "block_1_pad" in skipped["pads its input"]
    assert "out_relu" in skipped["a 1x1 map"]  # 32x32 inputs end at 1x1
    assert (
        "Conv1" in skipped["its next layer is its own normalisation or activation, shown instead"]
    )
    assert len(shown) < 60 < len(infos)  # 48 of 155 layers here
    taps = adapter.forward(x, taps=shown[-2:]).activations
    for name in shown[-2:]:
        np.testing.assert_array_equal(ex.values[name], taps[name])


def test_picture_is_capped_and_pillow_reopens_it(mobilenet, tmp_path):
    _, _, ex = mobilenet
    path = ex.save(tmp_path / "grid.png")
    pixels = reopen(str(path))
    assert pixels.shape[0] <= 4096 and pixels.shape[0] * pixels.shape[1] < 20_000_000
    np.testing.assert_array_equal(pixels, ex.to_image())
    # under the first title, cell k is channel k of the first layer, standardised
    act = np.asarray(ex.values["Conv1_relu"])[0]
    k = next(c for c in range(16) if act[..., c].std() > 0)
    cell = channel_image(act[..., k]).repeat(2, axis=0).repeat(2, axis=1)  # 16x16 -> 32x32
    np.testing.assert_array_equal(pixels[14 : 14 + 32, k * 33 : k * 33 + 32, 0], cell)


def test_one_file_per_layer(mobilenet, tmp_path):
    _, _, ex = mobilenet
    folder = ex.save(tmp_path / "grids" / "act_{layer}.png")
    assert folder == tmp_path / "grids"
    files = sorted(folder.glob("act_*.png"))
    assert [f.name for f in files] == sorted(f"act_{n}.png" for n in ex.values)
    for name in list(ex.values)[::12]:
        pixels = reopen(str(folder / f"act_{name}.png"))
        np.testing.assert_array_equal(pixels, ex.to_image(layers=[name]))
        assert f"{ex.values[name].shape[-1]} shown" not in name  # every channel fits alone
    with pytest.raises(InputError, match=r"a '\{layer\}' file name writes one \.png per layer"):
        Explanation("saliency", "heatmap", np.zeros((1, 4, 4))).save(tmp_path / "s_{layer}.png")


def test_cap_limits_channels_then_layers_and_says_so():
    rng = np.random.default_rng(0)
    values = {f"l{i}": rng.standard_normal((1, 8, 8, 64)).astype(np.float32) for i in range(10)}
    values["last"] = rng.standard_normal((1, 4, 4, 8)).astype(np.float32)
    shapes = {k: v.shape[1:] for k, v in values.items()}
    # 8x8 maps are upscaled to 24 px: one row of a layer is 25 px, a title 14, a gap 8
    assert grid_height((8, 8, 64), 4) == 14 + 4 * 25 - 1
    rows, left_out = plan_grids(shapes, 16, 600)
    assert left_out == [] and set(rows.values()) == {1}  # 2 rows each would need 724 px
    ex = Explanation("activation_grid", "layer_grid", values)
    img = ex.to_image(max_height=600)
    assert img.shape[0] <= 600
    rows, left_out = plan_grids(shapes, 16, 300)
    assert "l9" in rows and "last" in rows  # stage outputs: the last layer at each resolution
    assert left_out and len(rows) + len(left_out) == 11
    pixels = ex.to_image(max_height=300)
    assert pixels.shape[0] <= 300
    with pytest.raises(
        InputError, match=r"max_height must be at least 64 \(pixels\), got 10; pass e\.g\. max_"
    ):
        ex.to_image(max_height=10)
    with pytest.raises(InputError, match=r"max_height must be a positive int, got 300\.0"):
        ex.to_image(max_height=300.0)
    assert ex.to_image(max_height=64).shape[0] <= 64


def test_torch_replica_layers_and_aliases():
    model = R.seeded(R.ResNet)
    x = np.random.default_rng(0).random((1, 16, 16, 3), dtype=np.float32)
    ex = ins.explain("activation_grid", model, x)
    shown = list(ex.values)
    assert "conv1" not in shown and "bn1" not in shown and shown[0] == "relu"
    assert shown[-1] == "layer4.0.relu" and ex.meta["aliases"]["layer4.0.relu"] == "layer4"
    assert "avgpool" in ex.meta["skipped"]["a 1x1 map"]
    mnv3 = ins.explain("activation_grid", R.seeded(R.MobileNetV3), x)
    assert "global_pool.flatten" not in mnv3.values and "conv_head" not in mnv3.values
    assert mnv3.meta["aliases"]["blocks.2.0.2"] == "blocks"

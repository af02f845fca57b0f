from __future__ import annotations

import io

import numpy as np
import pytest

from innersight.core import Explanation, InputError, Renderer
from innersight.core.render import colorize, deprocess, normalise, png_bytes, render, tile
from innersight.plugins.renderers import channel_image, layer_grid

PIL = pytest.importorskip("PIL.Image")


def test_png_encoder_round_trips_through_pillow():
    img = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    decoded = np.asarray(PIL.open(io.BytesIO(png_bytes(img))))
    np.testing.assert_array_equal(decoded, img)


def test_normalise_policies():
    maps = np.array([[[0.0, 1.0]], [[0.0, 4.0]]])
    np.testing.assert_allclose(normalise(maps, "per_map")[:, 0, 1], [1.0, 1.0])
    np.testing.assert_allclose(normalise(maps, "shared")[:, 0, 1], [0.25, 1.0])
    signed = np.array([[[-2.0, 1.0]]])
    np.testing.assert_allclose(normalise(signed, "symmetric"), [[[-1.0, 0.5]]])
    assert np.all(normalise(np.zeros((1, 3, 3)), "per_map") == 0)
    with pytest.raises(InputError, match="normalise='loud' is unknown"):
        normalise(maps, "loud")


def test_colorize_endpoints():
    np.testing.assert_allclose(
        colorize(np.array([0.0, 1.0])), [[0, 0, 4 / 255], [252 / 255, 253 / 255, 191 / 255]]
    )
    mid = colorize(np.array([0.0]), signed=True)[0]
    np.testing.assert_allclose(mid, [247 / 255] * 3)


def test_tile_layout():
    cells = [np.full((2, 3, 3), i, np.uint8) for i in range(5)]
    grid = tile(cells, per_row=2, gap=1, fill=200)
    assert grid.shape == (3 * 2 + 2, 2 * 3 + 1, 3)
    assert grid[0, 0, 0] == 0 and grid[0, 4, 0] == 1 and grid[6, 0, 0] == 4 and grid[6, 4, 0] == 200


def test_channel_image_formula_and_constant_channels():
    a = np.array([[1.0, 3.0]])
    np.testing.assert_array_equal(channel_image(a), [[64, 192]])  # mean 2, std 1
    assert channel_image(np.ones((3, 3))) is None


def test_layer_grid_is_16_per_row_with_one_pixel_gap():
    act = np.random.default_rng(0).standard_normal((30, 30, 20))
    grid = layer_grid(act, per_row=16)
    assert grid.shape == (2 * 30 + 1, 16 * 30 + 15, 3)


def test_deprocess_recipe():
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 3)) * 50 + 7
    out = deprocess(x)
    assert out.dtype == np.uint8
    assert abs(out.astype(float).mean() - 127.5) < 2  # centred at 0.5
    assert abs((out / 255.0).std() - 0.1) < 0.01  # std 0.1


def test_unknown_kind_is_a_clear_error():
    ex = Explanation("x", "sonogram", np.zeros((1, 2)))
    with pytest.raises(
        InputError, match="no renderer for kind 'sonogram'; known kinds: embedding, heatmap"
    ):
        ex.to_image()


def test_heatmap_places_input_map_and_overlay_side_by_side():
    inputs = np.random.default_rng(0).random((2, 12, 12, 3)).astype(np.float32)
    ex = Explanation("saliency", "heatmap", np.random.default_rng(1).random((2, 12, 12)), inputs)
    img = ex.to_image()
    assert img.shape == (2 * 96 + 4, 3 * 96 + 4, 3)
    no_inputs = Explanation("saliency", "heatmap", np.ones((1, 12, 12)))
    assert no_inputs.to_image().shape == (96, 96, 3)


class _Bars(Renderer):
    """One grey column per value of the first map (not registered anywhere)."""

    kind = "bars_test"

    def render(self, explanation, **options):
        v = np.asarray(explanation.values, np.float64)[0]
        heights = np.round(8 * v / v.max()).astype(int)
        img = np.zeros((8, len(v), 3), np.uint8)
        for col, h in enumerate(heights):
            img[8 - h :, col] = 255
        return img


def test_render_uses_the_renderer_it_is_given_with_no_registry():
    ex = Explanation("x", "bars_test", np.array([[1.0, 2.0, 4.0, 8.0]]))
    img = render(ex, _Bars())
    assert img.shape == (8, 4, 3)
    np.testing.assert_array_equal(img[:, :, 0].sum(axis=0) // 255, [1, 2, 4, 8])


def test_a_renderer_that_returns_no_rgb_image_is_refused():
    class Gray(_Bars):
        def render(self, explanation, **options):
            return super().render(explanation)[..., 0]

    ex = Explanation("x", "bars_test", np.ones((1, 3)))
    with pytest.raises(InputError, match=r"returned uint8 \(8, 3\); a renderer must return"):
        render(ex, Gray())


def test_the_manager_finds_a_kinds_renderer_and_the_advice_for_a_new_kind_works():
    import innersight as ins
    from innersight.core import hookimpl

    pm = ins.get_plugin_manager()
    assert type(pm.renderer("heatmap")).__name__ == "HeatmapRenderer"
    with pytest.raises(InputError, match="register.* with innersight_register_renderers"):
        pm.renderer("bars_test")

    class Plugin:
        @hookimpl
        def innersight_register_renderers(self):
            return [_Bars()]

    pm.register(Plugin(), name="bars-test-plugin")
    try:
        assert isinstance(pm.renderer("bars_test"), _Bars)
        ex = Explanation("x", "bars_test", np.array([[1.0, 2.0]]))
        np.testing.assert_array_equal(ex.to_image(), _Bars().render(ex))
    finally:
        pm.unregister("bars-test-plugin")

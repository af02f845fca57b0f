from __future__ import annotations

import json

import numpy as np
import pytest

from innersight.core import Explanation, InputError

PIL = pytest.importorskip("PIL.Image")


def make():
    rng = np.random.default_rng(0)
    return Explanation(
        technique="saliency",
        kind="heatmap",
        values=rng.random((2, 6, 6)).astype(np.float32),
        inputs=rng.random((2, 6, 6, 3)).astype(np.float32),
        params={"target": np.array([1, 2]), "reduce_channels": "max"},
        meta={"seed": np.int64(3), "backend": "torch"},
    )


def test_npz_round_trip_keeps_values_inputs_params_meta(tmp_path):
    ex = make()
    back = Explanation.load(ex.save(tmp_path / "a.npz"))
    np.testing.assert_array_equal(back.values, ex.values)
    np.testing.assert_array_equal(back.inputs, ex.inputs)
    assert back.params == {"target": [1, 2], "reduce_channels": "max"}
    assert back.meta == {"seed": 3, "backend": "torch"}
    assert (back.technique, back.kind) == ("saliency", "heatmap")


def test_npz_round_trip_of_layer_dicts_keeps_order(tmp_path):
    values = {"z_last": np.ones((1, 2, 2, 1)), "a_first": np.zeros((1, 3, 3, 2))}
    ex = Explanation("activation_grid", "layer_grid", values)
    back = Explanation.load(ex.save(tmp_path / "g.npz"))
    assert list(back.values) == ["z_last", "a_first"]
    np.testing.assert_array_equal(back.values["a_first"], values["a_first"])


def test_png_and_json_outputs(tmp_path):
    ex = make()
    png = ex.save(tmp_path / "sub" / "a.png")
    assert np.asarray(PIL.open(png)).shape == ex.to_image().shape
    head = json.loads(ex.save(tmp_path / "a.json").read_text())
    assert head["params"]["target"] == [1, 2]
    assert ex._repr_png_().startswith(b"\x89PNG")


def test_save_rejects_unknown_suffix(tmp_path):
    with pytest.raises(InputError, match="cannot save 'a.bmp': use a .png, .npz or .json"):
        make().save(tmp_path / "a.bmp")


def test_plot_returns_a_figure():
    fig = make().plot()
    assert fig.axes and fig.axes[0].get_title() == "saliency"


def test_len_counts_samples():
    assert len(make()) == 2
    assert len(Explanation("g", "layer_grid", {"a": np.zeros((3, 2, 2, 1))})) == 3


def test_jupyter_html_and_short_repr():
    import base64
    import io
    import re

    from PIL import Image

    from innersight.core import Explanation

    ex = Explanation(
        technique="t<x>",
        kind="heatmap",
        values=np.arange(32, dtype=np.float32).reshape(2, 4, 4),
        inputs=None,
        meta={"backend": "torch", "model": "Net"},
    )
    assert repr(ex) == "<Explanation t<x> (heatmap) values (2, 4, 4) on torch Net>"
    html_text = ex._repr_html_()
    assert "t&lt;x&gt;" in html_text and "<x>" not in html_text
    data = re.search(r'src="data:image/png;base64,([^"]+)"', html_text).group(1)
    image = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))
    np.testing.assert_array_equal(image[..., :3], ex.to_image()[..., :3])


def test_channel_reductions_and_their_errors():
    import pytest

    from innersight.core import InputError, check_reduction, reduce_channels

    x = np.arange(2 * 2 * 2 * 3, dtype=np.float32).reshape(2, 2, 2, 3)
    np.testing.assert_array_equal(reduce_channels(x, "max"), x[..., 2])
    np.testing.assert_array_equal(reduce_channels(x, "sum"), 3 * x[..., 1])
    np.testing.assert_array_equal(reduce_channels(x, "mean"), x[..., 1])
    assert reduce_channels(x, None) is x
    vectors = np.ones((2, 5), np.float32)
    assert reduce_channels(vectors, "max") is vectors  # no channel axis
    check_reduction("sum", ("sum", "mean", None))
    with pytest.raises(
        InputError, match=r"reduce_channels='max' is unknown; use 'sum', 'mean' or None"
    ):
        check_reduction("max", ("sum", "mean", None))


@pytest.mark.parametrize("shape", [(2, 5, 5, 3), (2, 7, 20), (3, 9), (1, 4, 4, 1)])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("how", ["max", "mean", "sum", None])
def test_absolute_reduction_is_the_reduction_of_the_absolute_values(shape, dtype, how):
    from innersight.core import reduce_channels

    values = np.random.default_rng(3).standard_normal(shape).astype(dtype)
    kept = values.copy()
    want = reduce_channels(np.abs(values), how)
    got = reduce_channels(values, how, absolute=True)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)  # the same numbers, bit for bit
    np.testing.assert_array_equal(values, kept)  # the caller's gradients are left as they were

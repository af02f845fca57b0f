"""Eigen-CAM's principal component of a whole batch of maps at once (one stacked SVD).

The stacked SVD must give each map exactly what a single SVD of that map gives (the sign of a
singular vector follows LAPACK's arithmetic, so "close" is not enough: a map computed apart
would be allowed to flip), and the closed form of a rank-one map: positions ``u`` times a
channel direction ``v`` project to ``(u - mean u) * |v|`` up to sign, with all the variance.
The comparison with pytorch-grad-cam's recipe is in test_cam_family.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from innersight.plugins.eigen_cam import first_component


@pytest.mark.parametrize("shape", [(16, 8, 8, 64), (3, 15, 15, 128), (4, 7, 7, 3)])
def test_stacked_svd_equals_one_map_at_a_time(shape):
    acts = np.maximum(np.random.default_rng(0).standard_normal(shape, np.float32), 0.0)
    acts[0, 0, 0, 0] = np.nan  # read as 0, as pytorch-grad-cam does
    cam, share = first_component(acts)
    for i in range(len(acts)):
        one_cam, one_share = first_component(acts[i : i + 1])
        np.testing.assert_array_equal(cam[i], one_cam[0])
        np.testing.assert_array_equal(share[i], one_share[0])


def test_rank_one_maps_closed_form():
    rng = np.random.default_rng(1)
    u = rng.random((3, 6, 5))  # positions
    v = rng.standard_normal((3, 10))  # channel directions
    acts = (u[..., None] * v[:, None, None, :] + 2.0).astype(np.float32)
    cam, share = first_component(acts)
    expected = (u - u.mean(axis=(1, 2), keepdims=True)) * np.linalg.norm(v, axis=1)[:, None, None]
    sign = np.sign((cam * expected).sum(axis=(1, 2)))[:, None, None]
    assert np.all(sign != 0)
    np.testing.assert_allclose(sign * cam, expected, atol=1e-5 * np.abs(expected).max())
    np.testing.assert_allclose(share, 1.0, atol=1e-6)
    zero_cam, zero_share = first_component(np.ones((2, 4, 4, 3), np.float32))
    np.testing.assert_array_equal(zero_share, 0.0)  # no variance: no share, no NaN
    np.testing.assert_array_equal(zero_cam, 0.0)

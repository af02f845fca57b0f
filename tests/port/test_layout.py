"""Keras <-> torch weight layouts: the one conversion the port, the models and the tests share.

Checked against what each framework computes, written out in numpy: a Keras dense layer reads
the (h, w, c) flattening of a map, a torch Linear the (c, h, w) one; a Keras conv kernel is
indexed [i, j, in, out], a torch one [out, in, i, j].
"""

from __future__ import annotations

import numpy as np

from innersight.port.layout import (
    conv_kernel_from_torch,
    conv_kernel_to_torch,
    dense_kernel_from_torch,
    dense_kernel_to_torch,
    rows_from_torch_order,
    rows_to_torch_order,
)

RNG = np.random.default_rng(0)
HWC = (3, 2, 4)


def test_a_dense_layer_after_a_flatten_computes_the_same_in_both_orders():
    feature_map = RNG.standard_normal((5, *HWC))  # N, H, W, C
    kernel = RNG.standard_normal((24, 7))  # Keras: (h*w*c, out)
    keras_out = feature_map.reshape(5, -1) @ kernel
    weight = dense_kernel_to_torch(kernel, HWC)  # torch: (out, c*h*w)
    torch_out = feature_map.transpose(0, 3, 1, 2).reshape(5, -1) @ weight.T
    np.testing.assert_allclose(torch_out, keras_out, rtol=1e-12)
    assert weight.shape == (7, 24) and weight.flags.c_contiguous
    np.testing.assert_array_equal(dense_kernel_from_torch(weight, HWC), kernel)


def test_a_dense_layer_without_a_flatten_is_transposed():
    kernel = RNG.standard_normal((6, 3))
    np.testing.assert_array_equal(dense_kernel_to_torch(kernel), kernel.T)
    np.testing.assert_array_equal(dense_kernel_from_torch(kernel.T), kernel)


def test_conv_kernels_index_the_same_weights():
    kernel = RNG.standard_normal((3, 2, 4, 5))  # kh, kw, in, out
    weight = conv_kernel_to_torch(kernel)
    assert weight.shape == (5, 4, 3, 2) and weight.flags.c_contiguous
    for i, j, cin, cout in np.ndindex(kernel.shape):
        assert weight[cout, cin, i, j] == kernel[i, j, cin, cout]
    np.testing.assert_array_equal(conv_kernel_from_torch(weight), kernel)


def test_per_feature_vectors_follow_the_flatten_order():
    """A 1-d BatchNorm after a Flatten: one value per (h, w, c) entry, reordered as the map."""
    values = np.arange(24.0)
    as_map = values.reshape(HWC)  # Keras order
    torch_values = rows_to_torch_order(values, HWC)
    np.testing.assert_array_equal(torch_values, as_map.transpose(2, 0, 1).ravel())
    np.testing.assert_array_equal(rows_from_torch_order(torch_values, HWC), values)

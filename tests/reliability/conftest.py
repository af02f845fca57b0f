"""Fixtures of the reliability tests: the small net on each backend."""

from __future__ import annotations

import pytest

BACKENDS = ("torch", "keras")


@pytest.fixture(params=BACKENDS)
def net(request):
    """``(backend, native model)``: the test suite's small conv net (12x12x3 in, 3 classes)."""
    return request.param, request.getfixturevalue(f"{request.param}_small")

"""Session-wide replicas: each model is built once per test session (see ``subjects.py``)."""

from __future__ import annotations

import pytest

from tests.realarch.subjects import Subjects


@pytest.fixture(scope="session")
def subjects() -> Subjects:
    """Lazily filled ``{name: Subject}`` shared by every test of the session."""
    return Subjects()

from __future__ import annotations

import re

import numpy as np
import pytest

from innersight.core import InputError
from innersight.core.batching import BatchPlanner, Progress, bytes_per_sample, parse_bytes


@pytest.fixture(autouse=True)
def _clear():
    BatchPlanner.clear_cache()
    yield
    BatchPlanner.clear_cache()


def test_parse_bytes():
    assert parse_bytes("512MB") == 512 * 2**20
    assert parse_bytes("2gb") == 2 * 2**30
    assert parse_bytes(100) == 100
    with pytest.raises(InputError, match="not a size; write e.g. 512MB"):
        parse_bytes("lots")


def test_bytes_per_sample_counts_input_and_layers():
    assert bytes_per_sample((2, 2, 3), [(4,), (2, 2, 1)]) == 4 * (12 + 4 + 4)
    assert bytes_per_sample((2, 2, 3), [(4,)], grads=True) == 3 * 4 * 16


def test_budget_forces_several_chunks_and_no_chunk_exceeds_it():
    planner = BatchPlanner(budget_bytes=1000)
    sizes = []

    def fn(a, b):
        sizes.append(b - a)
        return np.arange(a, b)

    out = planner.map(fn, 50, per_sample=100)  # at most 10 samples fit
    np.testing.assert_array_equal(out, np.arange(50))
    assert len(sizes) >= 5 and max(sizes) <= 10


def test_auto_probes_with_real_work_and_caches_the_fastest():
    planner = BatchPlanner(budget_bytes=10**9, candidates=(4, 8, 16))
    sizes = []

    def fn(a, b):
        sizes.append(b - a)
        return np.zeros(b - a)

    planner.map(fn, 200, per_sample=1, key="model-a")
    # warm-up chunk, then each candidate once, then the winner for the rest
    assert sizes[:4] == [4, 4, 8, 16]
    winner = BatchPlanner._cache["model-a"]
    assert winner in (4, 8, 16)
    assert all(s == winner for s in sizes[4:-1])
    sizes.clear()
    planner.map(fn, 40, per_sample=1, key="model-a")
    assert set(sizes[:-1]) == {winner}


def test_fixed_batch_size_and_validation():
    planner = BatchPlanner()
    sizes = []
    planner.map(lambda a, b: sizes.append(b - a) or np.zeros(b - a), 10, per_sample=1, batch_size=3)
    assert sizes == [3, 3, 3, 1]
    with pytest.raises(InputError, match="batch_size must be a positive int or 'auto', got 0"):
        planner.map(lambda a, b: np.zeros(b - a), 10, per_sample=1, batch_size=0)


def test_results_do_not_depend_on_batch_size():
    data = np.random.default_rng(0).standard_normal(37)
    fn = lambda a, b: data[a:b] * 2  # noqa: E731
    ref = BatchPlanner().map(fn, 37, per_sample=1, batch_size=37)
    for bs in (1, 5, "auto"):
        np.testing.assert_array_equal(BatchPlanner().map(fn, 37, per_sample=1, batch_size=bs), ref)


def test_progress_callback_sees_every_item():
    seen = []
    BatchPlanner().map(
        lambda a, b: np.zeros(b - a),
        25,
        per_sample=1,
        batch_size=10,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert seen == [(10, 25), (20, 25), (25, 25)]


def test_progress_silent_when_false(capsys):
    with Progress(5, "x", False) as bar:
        bar.update(5)
    assert capsys.readouterr().err == ""


def test_progress_true_draws_a_bar(capsys):
    with Progress(4, "work", True) as bar:
        bar.update(4)
    # tqdm clears the bar at the end; how far it was drawn depends on its refresh rate
    assert re.search(r"work\b.*\d/4", capsys.readouterr().err)

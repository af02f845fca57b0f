"""``BatchPlanner``: a probe that runs out of work is resumed by the next call with its key.

Before, a first call shorter than the probe stored the best of the sizes timed so far for every
later call (GradientShap's 80 copies timed only 8 and 16, never 32 or 64: docs/peers.md).
"""

from __future__ import annotations

import numpy as np
import pytest

from innersight.core.batching import BatchPlanner


@pytest.fixture(autouse=True)
def _clear():
    BatchPlanner.clear_cache()
    yield
    BatchPlanner.clear_cache()


class Recorder:
    """Chunk sizes seen; the 'time' per item is simulated through the clock the planner reads
    (the largest size is the fastest), so no real sleeping is needed."""

    def __init__(self, per_item: dict[int, float], clock: list[float]) -> None:
        self.per_item, self.clock, self.sizes = per_item, clock, []

    def __call__(self, a: int, b: int) -> np.ndarray:
        self.sizes.append(b - a)
        self.clock[0] += self.per_item.get(b - a, 1.0) * (b - a)
        return np.arange(a, b)


def test_a_short_first_call_leaves_its_probe_to_the_next_call(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr("innersight.core.batching.time.perf_counter", lambda: clock[0])
    planner = BatchPlanner(budget_bytes=10**9, candidates=(4, 8, 16))
    model = Recorder({4: 0.004, 8: 0.003, 16: 0.001}, clock)
    out = planner.map(model, 30, per_sample=1, key="k")  # 4, 4, 8, 8, then 6 left
    np.testing.assert_array_equal(out, np.arange(30))
    assert model.sizes == [4, 4, 8, 8, 6]
    assert not isinstance(BatchPlanner._cache["k"], int)  # no size fixed from 4 and 8 alone
    model.sizes.clear()
    planner.map(model, 40, per_sample=1, key="k")  # resumes at 16: warm-up, timed, then 8 left
    assert model.sizes == [16, 16, 8]
    assert BatchPlanner._cache["k"] == 16
    model.sizes.clear()
    planner.map(model, 40, per_sample=1, key="k")
    assert model.sizes == [16, 16, 8]


def test_a_resumed_probe_keeps_to_a_smaller_budget(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr("innersight.core.batching.time.perf_counter", lambda: clock[0])
    model = Recorder({4: 0.004, 8: 0.003, 16: 0.001}, clock)
    BatchPlanner(budget_bytes=10**9, candidates=(4, 8, 16)).map(model, 30, per_sample=1, key="k")
    model.sizes.clear()
    BatchPlanner(budget_bytes=10, candidates=(4, 8, 16)).map(model, 20, per_sample=1, key="k")
    assert max(model.sizes) <= 10  # 16 no longer fits: the best timed size, 8, is used
    assert model.sizes == [8, 8, 4]
    assert BatchPlanner._cache["k"] == 8


class Spiky(Recorder):
    """:class:`Recorder` with a load spike of ``spike`` seconds on the ``nth`` chunk."""

    def __init__(self, per_item: dict[int, float], clock: list[float], nth: int, spike: float):
        super().__init__(per_item, clock)
        self.nth, self.spike = nth, spike

    def __call__(self, a: int, b: int) -> np.ndarray:
        if len(self.sizes) == self.nth:
            self.clock[0] += self.spike
        return super().__call__(a, b)


@pytest.mark.parametrize(("timed", "chosen"), [(1, 4), (2, 8)])
def test_two_timed_calls_per_size_outlast_a_load_spike(monkeypatch, timed, chosen):
    """A spike on the one timed call of the fastest size (8) made it look slowest and ended
    the probe at 4; with ``timed_calls=2`` the size's faster call counts and 8 wins."""
    clock = [0.0]
    monkeypatch.setattr("innersight.core.batching.time.perf_counter", lambda: clock[0])
    model = Spiky({4: 0.004, 8: 0.002, 16: 0.003}, clock, nth=3, spike=0.1)
    planner = BatchPlanner(budget_bytes=10**9, candidates=(4, 8, 16), timed_calls=timed)
    planner.map(model, 200, per_sample=1, key="k")
    assert BatchPlanner._cache["k"] == chosen
    probed = [4] * (1 + timed) + [8] * (1 + timed) + ([16] * (1 + timed) if timed == 2 else [])
    assert model.sizes[: len(probed)] == probed


def test_calls_of_the_same_short_work_keep_the_same_chunks(monkeypatch):
    """A probe size larger than the work left is not tried (a short chunk would teach
    nothing): the rest runs at the best size so far. The first call times 4 once, the second
    (resumed) a second time; both chunk 9 items as 4, 4, 1 (float results depend on the batch
    size, so two such calls agree exactly). Only then is 8 tried, as 9 items hold a chunk of 8.
    Without the rule the second call ran 4, 5: a chunk of 5 while probing 8, which taught
    nothing and changed the numbers."""
    clock = [0.0]
    monkeypatch.setattr("innersight.core.batching.time.perf_counter", lambda: clock[0])
    model = Recorder({4: 0.004, 8: 0.003}, clock)
    planner = BatchPlanner(budget_bytes=10**9, candidates=(4, 8, 16), timed_calls=2)
    chunks = []
    for _ in range(3):
        model.sizes.clear()
        planner.map(model, 9, per_sample=1, key="k")
        chunks.append(list(model.sizes))
    assert chunks == [[4, 4, 1], [4, 4, 1], [8, 1]]

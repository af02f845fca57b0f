from __future__ import annotations

import re
import time

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


class SimulatedModel:
    """A batch function whose chunk takes ``per_item[size] * size`` seconds, plus ``cold``
    seconds the first time a size is seen (as oneDNN creates its primitives for a new shape)."""

    def __init__(self, per_item: dict[int, float], cold: float = 0.0) -> None:
        self.per_item, self.cold, self.sizes = per_item, cold, []

    def __call__(self, a: int, b: int) -> np.ndarray:
        size = b - a
        first = size not in self.sizes
        self.sizes.append(size)
        time.sleep(self.per_item.get(size, 0.001) * size + (self.cold if first else 0.0))
        return np.arange(a, b)


def test_auto_probes_with_real_work_and_caches_the_fastest():
    planner = BatchPlanner(budget_bytes=10**9, candidates=(4, 8, 16))
    model = SimulatedModel({4: 0.002, 8: 0.0015, 16: 0.001})
    out = planner.map(model, 100, per_sample=1, key="model-a")
    np.testing.assert_array_equal(out, np.arange(100))
    # each candidate twice (a warm-up call, then the timed one), then the winner for the rest
    assert model.sizes[:6] == [4, 4, 8, 8, 16, 16]
    assert BatchPlanner._cache["model-a"] == 16
    assert all(s == 16 for s in model.sizes[6:-1])
    model.sizes.clear()
    planner.map(model, 40, per_sample=1, key="model-a")
    assert model.sizes == [16, 16, 8]  # cached: no probing


def test_auto_times_the_warm_call_of_each_size():
    """The first call of every size is slow (primitive creation): timing it would make the
    size probed first look fastest. Only the second call counts, so 8 wins."""
    planner = BatchPlanner(budget_bytes=10**9, candidates=(4, 8, 16))
    model = SimulatedModel({4: 0.002, 8: 0.001, 16: 0.0016}, cold=0.04)
    planner.map(model, 100, per_sample=1, key="model-b")
    assert BatchPlanner._cache["model-b"] == 8
    assert set(model.sizes[6:-1]) == {8}


def test_probing_stops_past_the_best_size():
    """Per-item time grows past the best size (a plain process on CPU): a size 1.3x slower
    than the best so far ends the probing, and the larger, slower sizes never run."""
    planner = BatchPlanner(budget_bytes=10**9, candidates=(8, 16, 32, 64))
    model = SimulatedModel({8: 0.001, 16: 0.002, 32: 0.0025, 64: 0.003})
    planner.map(model, 200, per_sample=1, key="model-c")
    assert model.sizes[:4] == [8, 8, 16, 16] and not {32, 64} & set(model.sizes)
    assert BatchPlanner._cache["model-c"] == 8


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


# -- explain's per-call work (issue 16: <= 0.3 ms over the adapter's own call) -------------------


def test_explain_lists_an_adapters_layers_once(small_weights, torch_small):
    """The shape probe before a technique (``shaped_layers``) runs once per adapter: listing a
    torch model's layers on every call cost ~60 us of a ~0.5 ms saliency call. A new adapter
    (another model) is probed again, and techniques still see shapes."""
    import innersight as ins
    from innersight.testing import ReferenceAdapter

    class Counting(ReferenceAdapter):
        calls = 0

        def layers(self):
            Counting.calls += 1
            return super().layers()

    model = Counting(ReferenceAdapter.from_weights(small_weights).network)
    x = np.random.default_rng(0).random((1, 12, 12, 3), dtype=np.float32)
    first = ins.explain("saliency", model, x, target=0)
    after_first = Counting.calls
    assert after_first >= 1
    second = ins.explain("saliency", model, x, target=0)
    assert Counting.calls == after_first  # saliency itself never lists layers
    np.testing.assert_array_equal(first.values, second.values)
    other = Counting(ReferenceAdapter.from_weights(small_weights).network)
    ins.explain("saliency", other, x, target=0)
    assert Counting.calls == after_first + 1
    # torch learns shapes from its first pass: explain probes it, then never lists again
    adapter = ins.wrap(torch_small)
    grid = ins.explain("activation_grid", adapter, x, layers=["conv1"])
    assert grid.values["conv1"].shape == (1, 10, 10, 4)


def test_explain_reads_a_techniques_signature_once(monkeypatch, small_weights):
    """Valid parameter names are remembered per ``explain`` function; a wrong one is still
    refused with the list of valid ones."""
    import innersight as ins
    from innersight.core import Technique
    from innersight.testing import ReferenceAdapter

    model = ReferenceAdapter.from_weights(small_weights)
    x = np.random.default_rng(1).random((1, 12, 12, 3), dtype=np.float32)
    ins.explain("saliency", model, x, target=0)
    calls = []
    original = Technique.parameters
    monkeypatch.setattr(Technique, "parameters", lambda self: calls.append(1) or original(self))
    ins.explain("saliency", model, x, target=0, reduce_channels="mean")
    assert calls == []
    with pytest.raises(InputError, match="technique 'saliency' has no parameter 'tagret'"):
        ins.explain("saliency", model, x, tagret=0)

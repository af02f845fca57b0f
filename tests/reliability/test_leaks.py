"""No leaks: long loops of explain keep resident memory flat, and every cache is bounded.

Resident memory is read from ``/proc/self/statm`` (Linux); the loops run on the demo digits
CNN, both backends, in this one process. The numbers are printed (``pytest -s``) for the record.
"""

from __future__ import annotations

import gc
import os
import weakref

import numpy as np
import pytest
import torch
from torch import nn

import innersight as ins
from innersight import api
from innersight.backends.keras import compiled
from innersight.core.batching import BatchPlanner, bytes_per_sample

pytestmark = pytest.mark.slow

MB = 2**20
GROWTH_LIMIT_MB = 50


def rss_bytes() -> int:
    if not os.path.exists("/proc/self/statm"):
        pytest.skip("resident memory is read from /proc/self/statm (Linux only)")
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def growth_mb(fn, calls: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    gc.collect()
    start = rss_bytes()
    for _ in range(calls):
        fn()
    gc.collect()
    return (rss_bytes() - start) / MB


def digits_batch(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 32, 32, 1), dtype=np.float32)


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_repeated_explain_does_not_grow_memory(request, backend):
    model = request.getfixturevalue(f"digits_{backend}")
    x = digits_batch(2)
    saliency = growth_mb(lambda: ins.explain("saliency", model, x), calls=500, warmup=30)
    print(f"\n[{backend}] 500 saliency calls: RSS growth {saliency:+.1f} MB")
    assert saliency < GROWTH_LIMIT_MB
    if "occlusion" in ins.techniques():
        occlusion = growth_mb(
            lambda: ins.explain("occlusion", model, x[:1], window=8, stride=8, progress=False),
            calls=100,
            warmup=10,
        )
        print(f"[{backend}] 100 occlusion calls: RSS growth {occlusion:+.1f} MB")
        assert occlusion < GROWTH_LIMIT_MB


def _tiny_torch(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).eval()


def test_adapter_cache_is_bounded_and_releases_models():
    ins.clear_cache()
    x = np.random.default_rng(0).random((1, 6, 6, 1), dtype=np.float32)
    refs = []
    for seed in range(12):
        model = _tiny_torch(seed)
        refs.append(weakref.ref(model))
        ins.explain("saliency", model, x)
        assert len(api._ADAPTERS._entries) <= api._AdapterCache.size
        del model
    gc.collect()
    alive = [r for r in refs if r() is not None]
    assert len(api._ADAPTERS._entries) == api._AdapterCache.size
    assert len(alive) == api._AdapterCache.size  # only the cached ones; the rest were freed
    ins.clear_cache()
    gc.collect()
    assert all(r() is None for r in refs)


def test_keras_function_cache_is_bounded(keras_small):
    adapter = ins.wrap(keras_small)
    adapter = type(adapter)(keras_small)  # a fresh adapter, not the shared cached one
    x = np.random.default_rng(0).random((1, 12, 12, 3), dtype=np.float32)
    names = [info.name for info in adapter.layers()]
    subsets = [[a] for a in names] + [[a, b] for i, a in enumerate(names) for b in names[i + 1 :]]
    assert len(subsets) > compiled.CACHE_SIZE
    held = []
    for taps in subsets[: compiled.CACHE_SIZE + 4]:
        adapter.forward(x, taps=taps)
        held.append(weakref.ref(adapter._cache.values()[-1]))
        assert len(adapter._cache) <= compiled.CACHE_SIZE
    assert len(adapter._cache) == compiled.CACHE_SIZE
    gc.collect()
    assert sum(r() is None for r in held) == 4  # the evicted traces are freed, not just dropped


def test_batch_planner_cache_is_bounded():
    saved = dict(BatchPlanner._cache)
    try:
        planner = BatchPlanner(budget_bytes=10**6, candidates=(1, 2))
        for i in range(BatchPlanner._cache_size + 50):
            planner.map(lambda a, b: np.zeros(b - a), 4, per_sample=8, key=("leak test", i))
            assert len(BatchPlanner._cache) <= BatchPlanner._cache_size
        assert len(BatchPlanner._cache) == BatchPlanner._cache_size
        assert ("leak test", 0) not in BatchPlanner._cache  # least recently used went first
    finally:
        BatchPlanner.clear_cache()
        BatchPlanner._cache.update(saved)


@pytest.mark.parametrize("batch_size", ["auto", 64, 5])
def test_batch_planner_chunks_respect_the_budget(batch_size):
    per_sample = 1000
    budget = 7 * per_sample + 999  # room for 7 samples, not 8
    chunks: list[int] = []

    def fn(start: int, stop: int) -> np.ndarray:
        chunks.append(stop - start)
        return np.arange(start, stop)

    out = BatchPlanner(budget_bytes=budget).map(
        fn, 100, per_sample=per_sample, batch_size=batch_size, key=None
    )
    np.testing.assert_array_equal(out, np.arange(100))  # every item once, in order
    assert sum(chunks) == 100
    assert max(chunks) <= 7
    assert len(chunks) >= 15  # ceil(100 / 7)
    if batch_size == 5:
        assert set(chunks) == {5}


def test_a_remembered_batch_size_is_capped_by_a_smaller_budget():
    key = ("budget test", 1)
    try:
        BatchPlanner._store(key, 64)
        chunks: list[int] = []
        BatchPlanner(budget_bytes=3 * 100).map(
            lambda a, b: chunks.append(b - a) or np.zeros(b - a), 20, per_sample=100, key=key
        )
        assert max(chunks) == 3
    finally:
        BatchPlanner._cache.pop(key, None)


def test_occlusion_forwards_stay_within_the_memory_budget(digits_torch, monkeypatch):
    if "occlusion" not in ins.techniques():
        pytest.skip("occlusion is not registered")
    x = digits_batch(2)
    budget = 40 * bytes_per_sample(x.shape[1:])  # input-only size: a generous upper bound
    monkeypatch.setenv("INNERSIGHT_MEMORY_BUDGET", str(budget))
    sizes: list[int] = []
    adapter = ins.wrap(digits_torch)
    adapter.forward(x[:1])  # the first explain on a torch adapter probes shapes with one input
    forward = adapter.forward
    monkeypatch.setattr(
        adapter, "forward", lambda x, **kw: sizes.append(len(x)) or forward(x, **kw)
    )
    ex = ins.explain("occlusion", adapter, x, window=4, stride=4, target=0, progress=False)
    assert sum(sizes) == len(x) * (1 + ex.meta["windows"])  # the originals + every window
    assert max(sizes) <= 40
    assert len(sizes) >= len(x) * ex.meta["windows"] / 40

"""Threads: explaining from several threads at once, with one shared adapter (or one native
model, which ``explain`` serves with its cached adapter), gives exactly the sequential results,
and each adapter serialises its passes (torch and Keras: a per-adapter lock)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

import innersight as ins
from innersight.backends.keras import compiled
from innersight.core.objectives import Logit
from tests.reliability._common import batch, minimal_params, value_arrays

THREADS = 4
JOBS = [
    (technique, seed)
    for technique in ("saliency", "guided_backprop", "activation_grid", "occlusion", "grad_cam")
    for seed in range(3)
]


def _run(model: Any, job: tuple[str, int]) -> list[np.ndarray]:
    technique, seed = job
    x = batch(2, seed=seed)
    return value_arrays(ins.explain(technique, model, x, **minimal_params(technique)).values)


def _jobs() -> list[tuple[str, int]]:
    return [j for j in JOBS if j[0] in ins.techniques()]


def _compare(jobs: list[Any], threaded: list[Any], sequential: list[Any]) -> None:
    assert len(jobs) == len(threaded) == len(sequential)
    for job, got, want in zip(jobs, threaded, sequential, strict=True):
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-7, err_msg=str(job))


@pytest.mark.parametrize("shared", ["native_model", "one_adapter"])
def test_threads_give_the_sequential_results(net, shared):
    _, native = net
    model = ins.wrap(native) if shared == "one_adapter" else native
    jobs = _jobs() * 2  # every job twice, so that identical requests race too
    sequential = [_run(model, job) for job in jobs]
    with ThreadPoolExecutor(THREADS) as pool:
        threaded = list(pool.map(lambda job: _run(model, job), jobs))
    _compare(jobs, threaded, sequential)


def test_threads_tracing_new_keras_functions_at_once(keras_small):
    # A fresh adapter: the threads' first calls all trace (forward taps, gradients) at once.
    adapter = type(ins.wrap(keras_small))(keras_small)
    names = [info.name for info in adapter.layers()]
    x = batch(2)
    requests = [("forward", n) for n in names] + [("grad", r) for r in ("plain", "guided")]

    def call(adapter: Any, req: tuple[str, str]) -> np.ndarray:
        kind, arg = req
        if kind == "forward":
            return adapter.forward(x, taps=[arg]).activations[arg]
        return adapter.value_and_grad(x, Logit(1), relu=arg)[1]

    barrier = threading.Barrier(THREADS)

    def start(req: tuple[str, str]) -> np.ndarray:
        if req in requests[:THREADS]:  # the first requests start together
            barrier.wait(timeout=30)
        return call(adapter, req)

    with ThreadPoolExecutor(THREADS) as pool:
        threaded = list(pool.map(start, requests))
    fresh = type(adapter)(keras_small)
    for req, got in zip(requests, threaded, strict=True):
        np.testing.assert_allclose(got, call(fresh, req), rtol=1e-6, atol=1e-7, err_msg=str(req))


class _Overlap:
    """Counts how many calls are inside a region at once (the maximum is what matters)."""

    def __init__(self) -> None:
        self.active = self.most = 0
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        with self._lock:
            self.active += 1
            self.most = max(self.most, self.active)
        time.sleep(0.005)  # widen the window a race would need

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.active -= 1


def test_torch_adapter_serialises_its_passes(torch_small):
    adapter = type(ins.wrap(torch_small))(torch_small)
    overlap = _Overlap()

    def hook(module: Any, args: Any, out: Any) -> None:
        with overlap:
            assert not module.training  # inside a pass: eval mode, set by the adapter

    handle = torch_small.conv1.register_forward_hook(hook)
    try:
        calls = [
            lambda: adapter.forward(batch(2), taps=["relu1"]),
            lambda: adapter.value_and_grad(batch(2), Logit(0)),
            lambda: adapter.value_and_grad(batch(2), Logit(0), relu="guided"),
            lambda: adapter.layer_value_and_grad(batch(2), Logit(1), "conv2"),
            lambda: adapter.predict_classes(batch(2)),
        ] * 4
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(lambda f: f(), calls))
    finally:
        handle.remove()
    assert overlap.most == 1


def test_keras_adapter_serialises_its_calls(keras_small, monkeypatch):
    adapter = type(ins.wrap(keras_small))(keras_small)
    overlap = _Overlap()
    get = adapter._cache.get

    def counted_get(key: Any, make: Any) -> Any:  # every request goes through the cache
        with overlap:
            return get(key, make)

    monkeypatch.setattr(adapter._cache, "get", counted_get)
    names = [info.name for info in adapter.layers()]
    calls = [lambda n=n: adapter.forward(batch(2), taps=[n]) for n in names] + [
        lambda: adapter.value_and_grad(batch(2), Logit(0)),
        lambda: adapter.layer_value_and_grad(batch(2), Logit(1), "conv2"),
        lambda: adapter.predict_classes(batch(2)),
    ]
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(lambda f: f(), calls * 2))
    assert overlap.most == 1


def test_keras_function_cache_documents_its_lock():
    # The lock lives in the adapter; the cache says so, so nobody shares one without it.
    assert "per-adapter lock" in compiled.FunctionCache.__doc__

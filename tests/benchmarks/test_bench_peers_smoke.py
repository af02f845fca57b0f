"""Smoke test of ``benchmarks/bench_peers.py`` (innersight against Captum, shap and
pytorch-grad-cam's recipe): its quickest mode, one timed round, runs every issue-13 technique
against its peer, and the two sides compute the same numbers on every row."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

import innersight as ins

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_peers.py"
#: The agreement the issue asks of every method and its peer: max |ours - peer| / max |peer|.
AGREEMENT = 1e-5


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    """The benchmark script as a module, with the technique modules it registers (those the
    plugin manager does not list yet) unregistered again afterwards."""
    for name in ("torch", "captum", "shap", "sklearn", "tqdm"):
        pytest.importorskip(name)
    spec = importlib.util.spec_from_file_location("bench_peers", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        added = module.register_missing()
        yield module
    finally:
        sys.modules.pop(spec.name, None)
    for name in added:
        ins.get_plugin_manager().unregister(f"innersight.plugins.{name}")


def test_quick_run_times_every_method_against_its_peer_and_they_agree(bench: ModuleType) -> None:
    rows = bench.run(quick=True, repeats=1)
    assert {r.method for r in rows} == set(bench.PLUGINS)
    for r in rows:
        assert r.rounds == 1 and r.ours > 0 and r.theirs > 0, r
        assert r.diff <= AGREEMENT, (r.method, r.peer, r.diff)
    # Captum's perturbation methods at their default (one input per forward) and batched
    for method in ("feature_ablation", "kernel_shap", "lime"):
        settings = sorted(
            r.peer for r in rows if r.method == method and r.peer.startswith("captum ")
        )
        assert len(settings) == 2 and settings[0].endswith("perturbations_per_eval=1"), settings
    assert any(r.peer == "shap KernelExplainer" for r in rows)
    text = bench.table(rows)
    assert len(text.splitlines()) == len(rows) + 2  # header, rule, one line per row

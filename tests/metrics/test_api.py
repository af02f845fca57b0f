"""innersight.evaluate / metrics(): the registry, the checks, errors that say what to do, the
Evaluation result type, and metric plugins (conflicts, failures, the hook example)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import innersight as ins
from innersight import testing
from innersight.api import evaluate, metrics
from innersight.core import (
    CapabilityError,
    InputError,
    PluginConflictError,
    PluginError,
    get_plugin_manager,
    hookimpl,
)
from innersight.core.manager import BUILTIN_METRICS, InnersightPluginManager, PluginLoadWarning
from innersight.core.metric import Curve, Evaluation, Metric, attribution_maps

BUILT_IN = [
    "agreement", "completeness", "data_randomization", "deletion", "infidelity", "insertion",
    "max_sensitivity", "randomization", "road",
]  # fmt: skip


@pytest.fixture
def setup():
    adapter = testing.reference_model("conv")
    x = np.random.default_rng(0).random((3, 12, 12, 3), dtype=np.float32)
    return adapter, x


def _register(plugin, name):
    manager = get_plugin_manager()
    manager.register(plugin, name)
    return manager


def test_every_built_in_metric_is_registered_from_its_module():
    assert sorted(metrics()) == BUILT_IN
    manager = get_plugin_manager()
    for name in BUILT_IN:
        assert manager.metric_provider(name).name in BUILTIN_METRICS


def test_a_technique_name_and_inputs_are_explained_first(setup):
    adapter, x = setup
    direct = evaluate("deletion", adapter, "saliency", x, steps=10)
    ex = ins.explain("saliency", adapter, x)
    again = evaluate("deletion", adapter, ex, steps=10)
    np.testing.assert_array_equal(direct.scores, again.scores)
    assert direct.meta["technique"] == "saliency" and direct.meta["backend"] == "numpy"
    assert direct.meta["higher_is_better"] is False and "RISE" in direct.meta["reference"]
    occ = evaluate("deletion", adapter, "occlusion", x, technique_params={"window": 4, "stride": 2})
    assert occ.meta["technique"] == "occlusion"


def test_mistakes_get_messages_whose_advice_works(setup):
    adapter, x = setup
    with pytest.raises(InputError, match="no metric named 'delition'.*did you mean 'deletion'"):
        evaluate("delition", adapter, "saliency", x)
    with pytest.raises(InputError, match="metric 'deletion' has no parameter 'step'.*'steps'"):
        evaluate("deletion", adapter, "saliency", x, step=3)
    with pytest.raises(
        InputError, match=r"needs inputs to explain: evaluate\('deletion', model, 'saliency', x\)"
    ):
        evaluate("deletion", adapter, "saliency")
    ex = ins.explain("saliency", adapter, x)
    with pytest.raises(InputError, match="the Explanation already holds its inputs"):
        evaluate("deletion", adapter, ex, x)
    grid = ins.explain("activation_grid", adapter, x)
    with pytest.raises(InputError, match="kind 'layer_grid': pick a heatmap technique"):
        evaluate("deletion", adapter, grid)
    assert len(evaluate("deletion", adapter, "saliency", x, steps=3)) == 3


class _Sparsity(Metric):
    """The example of the innersight_register_metrics hookspec, verbatim."""

    name = "sparsity"
    summary = "Share of the total |attribution| held by the top 10% of the pixels."
    higher_is_better = True
    reference = "(an illustration)"

    def evaluate(self, model, explanation, *, top=0.1):
        maps = attribution_maps(explanation, absolute=True)
        flat = np.sort(maps.reshape(len(maps), -1), axis=1)[:, ::-1]
        k = max(1, int(top * flat.shape[1]))
        total = flat.sum(axis=1)
        share = np.divide(
            flat[:, :k].sum(axis=1), total, out=np.full(len(flat), np.nan), where=total > 0
        )
        return Evaluation(metric=self.name, scores=share, params={"top": top})


class _SparsityPlugin:
    @hookimpl
    def innersight_register_metrics(self):
        yield _Sparsity()


def test_a_third_party_metric_runs_and_passes_the_conformance_check(setup):
    adapter, x = setup
    manager = _register(_SparsityPlugin(), "tests.sparsity")
    try:
        ev = evaluate("sparsity", adapter, "saliency", x)
        maps = np.sort(
            np.abs(np.asarray(ins.explain("saliency", adapter, x).values, np.float64)).reshape(
                3, -1
            )
        )
        np.testing.assert_allclose(ev.scores, maps[:, -14:].sum(1) / maps.sum(1), rtol=1e-12)
        testing.check_metric("sparsity", adapter, x)
    finally:
        manager.unregister("tests.sparsity")
    testing.check_metric(_Sparsity(), adapter, x)  # registered for the check only
    assert "sparsity" not in metrics()


def test_two_metrics_with_one_name_conflict():
    class Twin(_Sparsity):
        name = "deletion"

    class TwinPlugin:
        @hookimpl
        def innersight_register_metrics(self):
            yield Twin()

    manager = _register(TwinPlugin(), "tests.twin")
    try:
        with pytest.raises(
            PluginConflictError, match="metric 'deletion' is provided twice.*tests.twin"
        ):
            metrics()
    finally:
        manager.unregister("tests.twin")
    assert "deletion" in metrics()


def test_a_plugin_that_returns_no_metric_is_reported_not_fatal():
    class Broken:
        @hookimpl
        def innersight_register_metrics(self):
            yield "not a metric"

    manager = InnersightPluginManager(autoload=False)
    manager.load_builtins()
    manager.register(Broken(), "tests.broken", distribution="broken-dist")
    with pytest.warns(PluginLoadWarning, match="broken-dist.*returned str, expected a Metric"):
        found = manager.metrics()
    assert sorted(found) == BUILT_IN
    strict = InnersightPluginManager(autoload=False, strict=True)
    strict.register(Broken(), "tests.broken")
    with pytest.raises(Exception, match="expected a Metric"):
        strict.metrics()


def test_a_crashing_third_party_metric_is_a_plugin_error(setup):
    adapter, x = setup

    class Crash(_Sparsity):
        name = "crash"

        def evaluate(self, model, explanation):
            raise ZeroDivisionError("oops")

    class Short(_Sparsity):
        name = "short"

        def evaluate(self, model, explanation):
            return Evaluation(self.name, np.zeros(1))

    class Plugin:
        @hookimpl
        def innersight_register_metrics(self):
            yield Crash()
            yield Short()

    manager = _register(Plugin(), "tests.crash")
    try:
        with pytest.raises(
            PluginError, match="metric 'crash' from plugin 'tests.crash'.*ZeroDivisionError"
        ):
            evaluate("crash", adapter, "saliency", x)
        with pytest.raises(PluginError, match="returned 1 scores for 3 inputs"):
            evaluate("short", adapter, "saliency", x)
        with pytest.raises(
            AssertionError, match=r"check_metric\(.short.\).*returned 1 scores for 3"
        ):
            testing.check_metric("short", adapter, x)
    finally:
        manager.unregister("tests.crash")


def test_capabilities_are_checked_before_running(setup):
    adapter, x = setup

    class NeedsWeights(_Sparsity):
        name = "needs_weights"
        requires = frozenset({"weights"})

    class Plugin:
        @hookimpl
        def innersight_register_metrics(self):
            yield NeedsWeights()

    manager = _register(Plugin(), "tests.needs")
    try:
        with pytest.raises(CapabilityError, match="metric 'needs_weights' needs weights"):
            evaluate("needs_weights", adapter, "saliency", x)
    finally:
        manager.unregister("tests.needs")


def test_evaluation_summary_save_load_and_pictures(tmp_path):
    curve = Curve([0.0, 0.5, 1.0], [[1.0, 0.5, 0.0], [1.0, np.nan, 0.2]], "fraction", "p")
    ev = Evaluation("deletion", [0.25, np.nan], {"deletion": curve}, {"steps": 2},
                    {"technique": "saliency", "higher_is_better": False})  # fmt: skip
    s = ev.summary()
    assert s == {"n": 1.0, "mean": 0.25, "std": 0.0, "median": 0.25, "min": 0.25, "max": 0.25}
    np.testing.assert_allclose(curve.mean(), [1.0, 0.5, 0.1])
    assert repr(ev) == "<Evaluation deletion of saliency: 0.25 ± 0 over 1 inputs (lower is better)>"
    loaded = Evaluation.load(ev.save(tmp_path / "e.npz"))
    np.testing.assert_array_equal(loaded.scores, ev.scores)
    np.testing.assert_array_equal(loaded.curves["deletion"].y, curve.y)
    assert loaded.curves["deletion"].x_label == "fraction" and loaded.params == {"steps": 2}
    record = json.loads(ev.save(tmp_path / "e.json").read_text())  # strict JSON: NaN -> null
    assert record["scores"] == [0.25, None] and record["curves"]["deletion"]["y"][1][1] is None
    image = ev.to_image()
    assert image.dtype == np.uint8 and image.shape[2] == 3
    assert (tmp_path / "e.png").write_bytes(ev._repr_png_()) > 0
    assert "<table>" in ev._repr_html_()
    with pytest.raises(InputError, match="use a .png, .npz or .json file name"):
        ev.save(tmp_path / "e.txt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Evaluation("x", [np.nan]).summary()  # all NaN: no RuntimeWarning


def test_the_metrics_package_is_also_the_metrics_function():
    """``innersight.metrics`` must be both the package and ``innersight.metrics()``: importing
    ``innersight.metrics.deletion`` binds the package to that name whatever was there."""
    import innersight.metrics as package
    import innersight.metrics.deletion as deletion

    assert callable(package) and package() == metrics()
    assert package.deletion is deletion and "deletion" in package()

"""``parametrize_with_checks``: one pytest test per (adapter, check), each failing, passing or
skipping on its own, and agreeing with ``check_adapter`` on what fails."""

from __future__ import annotations

import re

import numpy as np
import pytest

from innersight import testing
from innersight.testing import ConformanceError, ReferenceAdapter, reference_model

pytest_plugins = ["pytester"]

NAMES = [check.name for check in testing.ADAPTER_CHECKS]


class NegatedGradients(ReferenceAdapter):
    """Input gradients with the wrong sign: a bug only the gradient checks can see."""

    def value_and_grad(self, x, objective, *, relu="plain"):
        values, grads = super().value_and_grad(x, objective, relu=relu)
        return values, -grads


class ForwardOnly(ReferenceAdapter):
    """An adapter that declares no gradients: the gradient checks do not apply."""

    capabilities = frozenset({"forward", "layer_taps"})


def outcomes(decorator) -> dict[str, str]:
    """Run every (adapter, check) pair of the decorator as its tests would: {id: outcome}."""
    (argnames, params), ids = decorator.mark.args, decorator.mark.kwargs["ids"]
    assert argnames == ("adapter", "check")
    out = {}
    for (adapter, check), test_id in zip(params, ids, strict=True):
        try:
            check(adapter)
            out[test_id] = "passed"
        except pytest.skip.Exception as err:
            out[test_id] = f"skipped: {err.msg}"
        except ConformanceError as err:
            out[test_id] = f"failed: {err}"
    return out


def failed_in_check_adapter(adapter, **options) -> set[str]:
    """The checks that ``check_adapter`` lists as failed, by name."""
    with pytest.raises(ConformanceError) as info:
        testing.check_adapter(adapter, **options)
    lines = str(info.value).splitlines()[1:]
    return {re.sub(r"\(relu='plain'\)$", "", line[2:].split(":")[0]) for line in lines}


def test_ids_name_the_adapter_and_the_check():
    decorator = testing.parametrize_with_checks({"numpy": reference_model})
    assert decorator.mark.kwargs["ids"] == [f"numpy-{name}" for name in NAMES]
    assert len(NAMES) == len(set(NAMES)) == 12


def test_adapters_are_built_on_first_use_and_once():
    calls = []

    def factory():
        calls.append(1)
        return reference_model("linear", seed=1)

    decorator = testing.parametrize_with_checks([factory])
    assert calls == []  # collecting the tests builds nothing
    assert decorator.mark.kwargs["ids"][0] == "factory-check_protocol"
    results = outcomes(decorator)
    assert calls == [1]
    assert results["factory-check_gradients"] == "passed"
    assert results["factory-check_matches_reference"] == (
        "skipped: check_matches_reference compares with a reference adapter, and none was given"
    )
    assert [v for v in results.values() if v != "passed"] == [
        results["factory-check_matches_reference"]
    ]


def test_each_check_fails_on_its_own_as_in_check_adapter():
    ref = reference_model("conv", seed=0)
    bad = NegatedGradients(ref.network)
    x = np.random.default_rng(4).random((3, 12, 12, 3), dtype=np.float32)
    results = outcomes(
        testing.parametrize_with_checks({"bad": lambda: testing.AdapterCase(bad, x, reference=ref)})
    )
    failed = {k.removeprefix("bad-") for k, v in results.items() if v.startswith("failed")}
    # the derived adapters of check_with_inputs do not negate: they disagree with the adapter
    assert failed == {"check_gradients", "check_matches_reference", "check_with_inputs"}
    assert failed == failed_in_check_adapter(bad, x=x, reference=ref)
    assert results["bad-check_gradients"].startswith(
        "failed: check_gradients(relu='plain'): the gradient of Logit([0, 1, 2]) w.r.t. the "
        "input disagrees with central finite differences"
    )
    assert all(results[f"bad-{name}"] == "passed" for name in NAMES if name not in failed)


def test_checks_that_do_not_apply_are_skipped_with_the_reason():
    results = outcomes(
        testing.parametrize_with_checks({"fwd": ForwardOnly(reference_model().network)})
    )
    skipped = {k: v for k, v in results.items() if v.startswith("skipped")}
    assert skipped["fwd-check_gradients"] == (
        "skipped: check_gradients needs input_gradients, which the numpy adapter does not declare"
    )
    assert skipped["fwd-check_layer_gradients"] == (
        "skipped: check_layer_gradients needs input_gradients, layer_gradients, which the numpy "
        "adapter does not declare"
    )
    assert sorted(skipped) == [
        "fwd-check_gradients",
        "fwd-check_gradients(deconv)",
        "fwd-check_gradients(guided)",
        "fwd-check_layer_gradients",
        "fwd-check_matches_reference",
        "fwd-check_with_inputs",
    ]
    assert all(v == "passed" for k, v in results.items() if k not in skipped)


def test_check_adapter_runs_the_same_checks():
    """check_adapter counts the checks that apply: the parametrized ones that do not skip."""
    bad = NegatedGradients(reference_model().network)
    with pytest.raises(ConformanceError, match=r"fails 2 of 11 conformance checks"):
        testing.check_adapter(bad)


PLUGIN_TESTS = """
from innersight import testing
from innersight.testing import ReferenceAdapter, reference_model


class NegatedGradients(ReferenceAdapter):
    def value_and_grad(self, x, objective, *, relu="plain"):
        values, grads = super().value_and_grad(x, objective, relu=relu)
        return values, -grads


@testing.parametrize_with_checks(
    {"good": reference_model, "bad": lambda: NegatedGradients(reference_model().network)}
)
def test_conformance(adapter, check):
    check(adapter)
"""


def test_a_pytest_run_shows_one_test_per_check(pytester):
    pytester.makepyfile(test_backend=PLUGIN_TESTS)
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider", "-rfs")
    result.assert_outcomes(passed=20, failed=2, skipped=2)
    result.stdout.fnmatch_lines(
        [
            "E * check_gradients(relu='plain'): the gradient of Logit([[]0, 1, 2[]]) w.r.t. *",
            "FAILED test_backend.py::test_conformance[[]bad-check_gradients[]] - *",
            "SKIPPED [[]2[]] *: check_matches_reference compares with a reference adapter, *",
        ]
    )

"""The remaining user mistakes: each message says what was received and what to do, and doing
it works."""

from __future__ import annotations

import numpy as np
import pytest

import innersight as ins
from innersight import testing
from innersight.api import evaluate
from innersight.core import Explanation, InputError, TechniqueNotFoundError


@pytest.fixture
def case():
    adapter = testing.reference_model("conv")
    x = np.random.default_rng(0).random((2, 12, 12, 3), dtype=np.float32)
    return adapter, x, ins.explain("saliency", adapter, x)


def test_explanations_without_inputs_or_of_the_wrong_size(case):
    adapter, x, ex = case
    bare = Explanation("saliency", "heatmap", ex.values, None, ex.params)
    with pytest.raises(
        InputError, match="holds no inputs.*the Explanation that innersight.explain returned"
    ):
        evaluate("deletion", adapter, bare)
    small = Explanation("mine", "heatmap", np.zeros((2, 6, 6)), x)
    with pytest.raises(
        InputError, match=r"maps of shape \(2, 6, 6\) for inputs \(2, 12, 12, 3\).*\(2, 12, 12\)"
    ):
        evaluate("deletion", adapter, small)
    fixed = Explanation("mine", "heatmap", np.zeros((2, 12, 12)), x)
    assert len(evaluate("deletion", adapter, fixed, steps=4)) == 2
    with pytest.raises(InputError, match="must be an Explanation or a technique name, got ndarray"):
        evaluate("deletion", adapter, x)


def test_baselines_of_the_wrong_shape(case):
    adapter, _x, ex = case
    with pytest.raises(
        InputError,
        match=r"baseline has shape \(5,\); pass a number \(e\.g\. 0\.0\), 'zeros', 'mean', "
        r"'blur', or an array shaped like one input \(12, 12, 3\) or like the batch "
        r"\(2, 12, 12, 3\)",
    ):
        evaluate("deletion", adapter, ex, baseline=np.zeros(5))
    ok = evaluate("deletion", adapter, ex, baseline=np.zeros((12, 12, 3)), steps=4)
    np.testing.assert_allclose(ok.scores, evaluate("deletion", adapter, ex, steps=4).scores)


def test_perturbations_that_do_not_fit(case):
    adapter, _x, ex = case
    with pytest.raises(
        InputError, match=r"perturb must return \(perturbations, perturbed_inputs\), got ndarray"
    ):
        evaluate("infidelity", adapter, ex, perturb=lambda a: a)
    assert len(evaluate("infidelity", adapter, ex, perturb=lambda a: (a * 0.1, a * 0.9))) == 2
    with pytest.raises(
        InputError, match=r"perturb returned shape \(1, 12, 12, 3\) for inputs \(20, 12, 12, 3\)"
    ):
        evaluate("max_sensitivity", adapter, ex, perturb=lambda a: a[:1])
    assert len(evaluate("max_sensitivity", adapter, ex, perturb=lambda a: a + 0.01)) == 2


def test_a_technique_that_is_gone_cannot_run_again(case):
    adapter, x, _ = case
    orphan = Explanation("uninstalled", "heatmap", np.ones((2, 12, 12)), x)
    with pytest.raises(
        TechniqueNotFoundError, match="re-runs technique 'uninstalled'.*Install its plugin"
    ):
        evaluate("max_sensitivity", adapter, orphan)
    assert len(evaluate("deletion", adapter, orphan, steps=4)) == 2  # needs no re-run


def test_agreement_mistakes(case):
    adapter, _x, ex = case
    with pytest.raises(
        InputError, match=r"k must be a finite number in \(0, 1\], got 5; pass e\.g\. k=0\.05"
    ):
        evaluate("agreement", adapter, ex, other="saliency", k=5)
    with pytest.raises(InputError, match="no technique named 'salency'; available:.*saliency"):
        evaluate("agreement", adapter, ex, other="salency")
    assert len(evaluate("agreement", adapter, ex, other="saliency", k=0.5)) == 2


def test_road_needs_images_with_something_kept():
    from innersight.metrics._imputation import impute

    with pytest.raises(InputError, match="every pixel is removed; keep some"):
        impute(np.zeros((1, 3, 3, 1)), np.ones((1, 3, 3), bool))


def test_command_line_param_names(tmp_path, capsys):
    from innersight.cli import main

    out = str(tmp_path / "o")
    base = [
        "evaluate",
        "demo:torch",
        "-o",
        out,
        "--techniques",
        "saliency",
        "--metrics",
        "deletion",
    ]
    assert main([*base, "-p", "occlusion.window=3"]) == 1
    assert "'occlusion', which is not among the techniques (saliency)" in capsys.readouterr().err
    assert main([*base, "-p", "deletion.step=3"]) == 1
    assert (
        "metric 'deletion' has no parameter 'step'; valid parameters: steps"
        in capsys.readouterr().err
    )
    assert main([*base, "-p", "deletion.steps=3", "--max-inputs", "1", "-q"]) == 0

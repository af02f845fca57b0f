"""Fuzzing the public entry point: whatever goes in, ``explain`` either returns finite values,
one row per input, or raises an InnersightError that says what was wrong. No framework error,
no NaN, no silent wrong-length result.

Inputs vary in rank, spatial size, channels, batch size (0 included), dtype (float16/32/64,
integers, bool) and values (tiny, huge, beyond float32, NaN, +-Inf); targets and the cheap
techniques' parameters vary too. Examples are derandomised (the same ones on every run) so the
suite stays reproducible; raise ``max_examples`` locally to dig deeper.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import innersight as ins
from innersight import testing
from innersight.core.adapter import check_input_array
from innersight.core.errors import InnersightError, InputError
from tests.reliability._common import CHEAP, value_arrays

EXAMPLES_PER_BACKEND = 40
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES_PER_BACKEND,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TECHNIQUES = [t for t in CHEAP if t in ins.techniques()]
DTYPES = ("float32", "float64", "float16", "int32", "uint8", "bool")
SCALES = (0.0, 1e-30, 1.0, 255.0, 1e4, 1e30, 1e39)
SPECIALS = (np.nan, np.inf, -np.inf, 0.0, -1e38)


@pytest.fixture(scope="module")
def models(torch_small, keras_small):
    return {"torch": torch_small, "keras": keras_small, "numpy": testing.reference_model("conv")}


@st.composite
def inputs(draw: Any, broken: bool) -> np.ndarray:
    """Image batches around the models' (N, 12, 12, 3); ``broken`` ones are mostly invalid."""
    n = draw(st.sampled_from([1, 2, 3, 0] if broken else [1, 2, 3]))
    h = draw(st.sampled_from([12, 11, 3, 1] if broken else [12]))
    w = draw(st.sampled_from([h, 5] if broken else [h]))
    c = draw(st.sampled_from([3, 1, 4] if broken else [3]))
    layouts = [(n, h, w, c), (h, w, c)]
    if broken:
        layouts += [(n, c, h, w), (n, h * w * c), (n, 1, h, w, c)]
    shape = draw(st.sampled_from(layouts))
    scale = draw(st.sampled_from(SCALES if broken else [1.0, 1e-3, 255.0, 0.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.standard_normal(shape) * scale
    for _ in range(draw(st.integers(0, 2 if broken else 0))):
        if x.size:
            x.flat[draw(st.integers(0, x.size - 1))] = draw(st.sampled_from(SPECIALS))
    dtype = draw(st.sampled_from(DTYPES if broken else DTYPES[:3]))
    with np.errstate(all="ignore"):
        return x > 0 if dtype == "bool" else x.astype(dtype)


VALID_TARGETS = st.one_of(st.none(), st.integers(0, 2), st.sampled_from([np.int64(2), 1.0]))
BAD_TARGETS = st.one_of(
    st.integers(-2, 4),
    st.sampled_from([1.5, "1", True]),
    st.lists(st.integers(-1, 3), min_size=0, max_size=4),
)


def params_for(technique: str, draw: Any, *, bad_target: bool, broken: bool) -> dict[str, Any]:
    """The technique's parameters: valid ones, or (``broken``) drawn from wide ranges."""
    params: dict[str, Any] = {}
    if "target" in ins.techniques()[technique].parameters():
        params["target"] = draw(BAD_TARGETS if bad_target else VALID_TARGETS)
    if not broken:
        return {**params, **VALID_PARAMS.get(technique, {})}
    if technique == "occlusion":
        params["window"] = draw(
            st.one_of(
                st.integers(2, 6),
                st.integers(-1, 14),
                st.tuples(st.integers(1, 4), st.integers(1, 13)),
            )
        )
        params["stride"] = draw(st.one_of(st.integers(2, 3), st.integers(-1, 5)))
        params["baseline"] = draw(st.sampled_from([0.0, "mean", "blur", 0.0, np.nan, "noise"]))
        params["progress"] = False
    elif technique == "smoothgrad":
        params["samples"] = draw(st.integers(0, 3))
        params["noise"] = draw(st.sampled_from([0.0, 0.2, 0.2, -0.1, float("nan"), 1e6]))
        params["progress"] = False
    elif technique == "saliency":
        params["reduce_channels"] = draw(st.sampled_from(["max", "mean", None, "sum"]))
    elif technique == "activation_grid":
        params["layers"] = draw(
            st.sampled_from(
                [None, None, ["conv1"], "conv1", ["fc1"], ["nope"], [], ["conv1", "conv1"]]
            )
        )
    return params


VALID_PARAMS: dict[str, dict[str, Any]] = {
    "occlusion": {"window": 4, "stride": 3, "progress": False},
    "smoothgrad": {"samples": 2, "progress": False},
}


def expected_rows(x: np.ndarray) -> int:
    """Rows a successful call must return: N, or 1 for one (H, W, C) image."""
    return 1 if x.ndim == 3 else x.shape[0]


def run_one(model: Any, data: Any) -> str:
    technique = data.draw(st.sampled_from(TECHNIQUES), label="technique")
    # Half the examples are valid calls; the others break the inputs, the target or the
    # parameters (one of them, so each kind of mistake is reached often).
    broken = data.draw(st.sampled_from(["", "", "", "inputs", "target", "params"]), label="break")
    x = data.draw(inputs(broken == "inputs"), label="inputs")
    params = params_for(
        technique, data.draw, bad_target=broken == "target", broken=broken == "params"
    )
    try:
        result = ins.explain(technique, model, x, **params)
    except InnersightError as err:
        assert str(err), "an InnersightError without a message"
        return "error"
    rows = expected_rows(x)
    assert len(result.inputs) == rows
    arrays = value_arrays(result.values)
    assert arrays, f"{technique} returned no values"
    for arr in arrays:
        assert arr.shape[:1] == (rows,), (technique, arr.shape, x.shape)
        assert arr.dtype.kind in "biuf"
        assert np.all(np.isfinite(arr)), f"{technique} returned NaN/Inf for inputs {x.dtype}"
    return "ok"


@pytest.mark.parametrize("backend", ["torch", "keras", "numpy"])
def test_explain_succeeds_finitely_or_raises_an_innersight_error(models, backend):
    outcomes: list[str] = []

    @FUZZ_SETTINGS
    @given(data=st.data())
    def fuzz(data: Any) -> None:
        outcomes.append(run_one(models[backend], data))

    fuzz()
    # The generator must reach both branches, or the property says little.
    assert outcomes.count("ok") >= 3, outcomes
    assert outcomes.count("error") >= 3, outcomes


CORE_EXAMPLES = 150


@settings(max_examples=CORE_EXAMPLES, deadline=None, derandomize=True, database=None)
@given(
    x=inputs(True),
    expected=st.sampled_from([None, (12, 12, 3), (None, None, 3), (12, 12, None), (432,)]),
)
def test_input_validation_returns_a_finite_float32_copy_or_an_input_error(x, expected):
    before = np.array(x, copy=True)
    try:
        out = check_input_array(x, expected=expected)
    except InputError as err:
        assert "inputs" in str(err)
    else:
        assert out.dtype == np.float32 and np.all(np.isfinite(out))
        assert out.shape == x.shape and out.ndim >= 2 and len(out) > 0
        assert not np.shares_memory(out, x)
        assert x.dtype.kind == "f"  # only floats are accepted
    np.testing.assert_array_equal(x, before)  # never mutated

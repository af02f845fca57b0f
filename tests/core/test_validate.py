"""innersight.core.validate: what each checker accepts, what it refuses, and the exact words.

Every message names the parameter, repeats what was received, says what is expected and (where
a value can be suggested) gives one that works; the tests pass that value back to check it.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from innersight.core import InputError, validate


def refused(fn, *args, **kwargs) -> str:
    with pytest.raises(InputError) as info:
        fn(*args, **kwargs)
    return str(info.value)


def advised(message: str, name: str) -> str:
    """The value a message advises for ``name`` (``pass e.g. name=VALUE``)."""
    m = re.search(rf"pass e\.g\. {name}=(.+)$", message)
    assert m, message
    return m[1]


# -- is_int / is_number ----------------------------------------------------------------------
@pytest.mark.parametrize("value", [0, 7, -3, np.int8(2), np.int64(-5), np.uint16(9), 10**30])
def test_is_int_accepts_python_and_numpy_integers(value):
    assert validate.is_int(value)


@pytest.mark.parametrize(
    "value", [True, False, np.bool_(True), 2.0, np.float32(2), "2", None, [2], np.array(2)]
)
def test_is_int_refuses_bools_floats_strings_and_arrays(value):
    assert not validate.is_int(value)


@pytest.mark.parametrize("value", [0, -1.5, np.float32(0.25), np.int16(3), math.inf, math.nan])
def test_is_number_accepts_reals(value):
    assert validate.is_number(value)


@pytest.mark.parametrize("value", [True, np.bool_(False), "1", None, 1j, [1.0]])
def test_is_number_refuses_bools_strings_and_complex(value):
    assert not validate.is_number(value)


# -- positive_int / non_negative_int ---------------------------------------------------------
@pytest.mark.parametrize("value", [1, 32, np.int64(5), np.uint8(255)])
def test_positive_int_returns_a_python_int(value):
    got = validate.positive_int("steps", value)
    assert got == int(value) and type(got) is int


@pytest.mark.parametrize("value", [0, -2, True, False, 2.0, np.float64(3), "4", None])
def test_positive_int_refuses_with_the_example(value):
    message = refused(validate.positive_int, "steps", value, example=32)
    assert message == f"steps must be a positive int, got {value!r}; pass e.g. steps=32"
    assert validate.positive_int("steps", int(advised(message, "steps"))) == 32


def test_positive_int_default_example_and_maximum():
    assert (
        refused(validate.positive_int, "k", 0) == "k must be a positive int, got 0; pass e.g. k=1"
    )
    assert validate.positive_int("k", 5, maximum=5) == 5
    assert refused(validate.positive_int, "k", 6, maximum=5) == "k must be at most 5, got 6"


@pytest.mark.parametrize("value", [0, 3, np.int32(0)])
def test_non_negative_int_accepts_zero(value):
    assert validate.non_negative_int("jitter", value) == int(value)


@pytest.mark.parametrize("value", [-1, True, 0.0, "0"])
def test_non_negative_int_refuses(value):
    message = refused(validate.non_negative_int, "jitter", value, example=2)
    assert message == f"jitter must be a non-negative int, got {value!r}; pass e.g. jitter=2"
    assert refused(validate.non_negative_int, "j", -1) == (
        "j must be a non-negative int, got -1; pass e.g. j=0"
    )


# -- number / probability --------------------------------------------------------------------
@pytest.mark.parametrize("value", [0, 0.5, np.float32(0.25), np.int64(1), -7.5])
def test_number_returns_a_float(value):
    got = validate.number("x", value)
    assert got == float(value) and type(got) is float


@pytest.mark.parametrize(
    ("kwargs", "value", "interval"),
    [
        ({}, math.nan, ""),
        ({}, math.inf, ""),
        ({}, True, ""),
        ({}, "0.1", ""),
        ({"low": 0.0}, -0.5, " >= 0"),
        ({"low": 0.0, "low_open": True}, 0.0, " > 0"),
        ({"high": 1.0}, 1.5, " <= 1"),
        ({"high": 1.0, "high_open": True}, 1.0, " < 1"),
        ({"low": 0.0, "high": 1.0}, -0.1, " in [0, 1]"),
        ({"low": 0.0, "high": 1.0, "low_open": True}, 0.0, " in (0, 1]"),
        ({"low": 0.0, "high": 1.0, "low_open": True, "high_open": True}, 1.0, " in (0, 1)"),
        ({"low": 2.5, "high": 10}, np.float32(11), " in [2.5, 10]"),
    ],
)
def test_number_refuses_and_states_the_interval(kwargs, value, interval):
    message = refused(validate.number, "noise", value, **kwargs)
    assert message == f"noise must be a finite number{interval}, got {value!r}"
    with_example = refused(validate.number, "noise", value, example=0.5, **kwargs)
    assert with_example == f"{message}; pass e.g. noise=0.5"


def test_number_interval_ends():
    assert validate.number("x", 0, low=0) == 0.0
    assert validate.number("x", 1, high=1) == 1.0
    assert validate.number("x", 1e-12, low=0, low_open=True) == 1e-12


@pytest.mark.parametrize("value", [0, 1, 0.5, np.float64(0.75)])
def test_probability_accepts_the_closed_unit_interval(value):
    assert validate.probability("p", value) == float(value)


@pytest.mark.parametrize("value", [-0.01, 1.01, math.nan, True])
def test_probability_refuses_with_a_working_example(value):
    message = refused(validate.probability, "p", value)
    assert message == f"p must be a finite number in [0, 1], got {value!r}; pass e.g. p=0.5"
    assert validate.probability("p", float(advised(message, "p"))) == 0.5


# -- boolean / choice ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value",
    [
        True,
        False,
        np.bool_(True),
        np.bool_(False),
    ],
)
def test_boolean_accepts_python_and_numpy_bools(value):
    # numpy 2 names np.bool_ "bool": a type-name test would refuse it
    got = validate.boolean("relu", value)
    assert got is bool(value)


@pytest.mark.parametrize("value", [1, 0, "yes", "True", None, 1.0])
def test_boolean_refuses_truthy_values(value):
    assert refused(validate.boolean, "relu", value) == f"relu must be True or False, got {value!r}"


def test_choice_accepts_its_options():
    assert validate.choice("method", "pca", ("pca", "tsne")) == "pca"
    assert validate.choice("how", None, ("max", None)) is None
    assert validate.choice("k", 3, (1, 3)) == 3


@pytest.mark.parametrize("value", ["umap", None, True, ["pca"], {"a": 1}, np.int64(7)])
def test_choice_refuses_and_lists_the_options(value):
    assert refused(validate.choice, "method", value, ("pca", "tsne")) == (
        f"method={value!r} is unknown; use one of 'pca', 'tsne'"
    )


def test_choice_lists_none_as_none_and_refuses_true_for_one():
    assert refused(validate.choice, "how", "sum", ("max", None)) == (
        "how='sum' is unknown; use one of 'max', None"
    )
    assert refused(validate.choice, "k", True, (1, 2)) == "k=True is unknown; use one of 1, 2"


# -- pair ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "want"),
    [(8, (8, 8)), (np.int64(3), (3, 3)), ((2, 5), (2, 5)), ([4, 1], (4, 1))],
)
def test_pair_returns_rows_and_cols(value, want):
    got = validate.pair("window", value)
    assert got == want and all(type(v) is int for v in got)


@pytest.mark.parametrize("value", [0, -1, True, 2.0, (2,), (2, 3, 4), (2, 0), (2, True), "8"])
def test_pair_refuses_with_an_example(value):
    message = refused(validate.pair, "window", value)
    assert message == (
        f"window must be a positive int or a pair of them (rows, cols), got {value!r}; "
        "pass e.g. window=8"
    )
    assert validate.pair("window", int(advised(message, "window"))) == (8, 8)
    assert refused(validate.pair, "stride", 0, example=(2, 2)).endswith("pass e.g. stride=(2, 2)")


# -- seed ------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [0, 42, np.int64(7), np.uint32(2**32 - 1)])
def test_seed_returns_a_python_int(value):
    got = validate.seed(value)
    assert got == int(value) and type(got) is int


def test_seed_none_draws_a_fresh_one_each_time():
    drawn = {validate.seed(None) for _ in range(8)}
    assert len(drawn) > 1 and all(type(s) is int and 0 <= s < 2**32 for s in drawn)


@pytest.mark.parametrize("value", [-1, True, 0.5, "0", np.float64(1)])
def test_seed_refuses_with_a_working_example(value):
    message = refused(validate.seed, value)
    assert message == f"seed must be a non-negative int or None, got {value!r}; pass e.g. 0"
    assert refused(validate.seed, -2, name="rng_seed").startswith("rng_seed must be")
    assert validate.seed(int(message.rsplit(" ", 1)[1])) == 0

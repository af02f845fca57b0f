"""--param text -> the values a technique's signature asks for."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import pytest

import innersight as ins
from innersight.cli.params import convert, convert_params, parse_assignments
from innersight.core.technique import Technique

ProgressArg = bool | None | Callable[[int, int], Any]  # as innersight.core.ProgressArg


class Fake(Technique):
    """Postponed (string) annotations, as every plugin module writes them."""

    name = "fake"

    def explain(
        self,
        model,
        inputs,
        *,
        steps: int = 8,
        noise: float = 0.1,
        smooth: bool = False,
        mode: str = "max",
        reduce: str | None = "max",
        target: int | list[int] | None = None,
        window: int | tuple[int, int] = 15,
        layers: Sequence[str] | None = None,
        batch_size: int | str = "auto",
        baseline: float | str | np.ndarray = 0.0,
        kind: Literal["a", "b"] = "a",
        progress: ProgressArg = None,
        anything=None,
        count=3,
    ):
        raise NotImplementedError


CASES = [
    ("steps", "32", 32),
    ("noise", "0.25", 0.25),
    ("noise", "1/255", 1 / 255),
    ("noise", "2", 2.0),
    ("smooth", "yes", True),
    ("smooth", "False", False),
    ("mode", "mean", "mean"),
    ("mode", "12", "12"),
    ("reduce", "none", None),
    ("reduce", "mean", "mean"),
    ("target", "3", 3),
    ("target", "3,5,1", [3, 5, 1]),
    ("target", "[3, 5]", [3, 5]),
    ("target", "None", None),
    ("window", "7", 7),
    ("window", "5,9", (5, 9)),
    ("layers", "conv1", ["conv1"]),
    ("layers", "conv1,fc.2", ["conv1", "fc.2"]),
    ("batch_size", "auto", "auto"),
    ("batch_size", "16", 16),
    ("baseline", "mean", "mean"),
    ("baseline", "0.5", 0.5),
    ("kind", "b", "b"),
    ("progress", "false", False),
    ("progress", "none", None),
    ("anything", "4", 4),
    ("anything", "1.5", 1.5),
    ("anything", "true", True),
    ("anything", "1,2", [1, 2]),
    ("anything", "word", "word"),
    ("count", "9", 9),
]


@pytest.mark.parametrize(("key", "text", "expected"), CASES)
def test_converts_by_annotation(key, text, expected):
    value = convert_params(Fake(), {key: text})[key]
    assert value == expected
    assert type(value) is type(expected)


def test_array_from_npy_file(tmp_path):
    np.save(tmp_path / "b.npy", np.arange(6.0).reshape(2, 3))
    value = convert_params(Fake(), {"baseline": str(tmp_path / "b.npy")})["baseline"]
    np.testing.assert_array_equal(value, np.arange(6.0).reshape(2, 3))


@pytest.mark.parametrize(
    ("key", "text", "message"),
    [
        (
            "steps",
            "many",
            r"--param steps='many': expected an integer \(annotation: int, default: 8\)",
        ),
        ("smooth", "maybe", r"expected true or false"),
        ("window", "1,2,3", r"expected an integer or 2 comma-separated values"),
        (
            "target",
            "3,x",
            r"expected an integer or comma-separated values \(an integer each\) or none",
        ),
        ("kind", "c", r"expected one of 'a', 'b'"),
        ("progress", "sometimes", r"expected true or false or none \(annotation: ProgressArg"),
        ("count", "x", r"expected an integer or none"),
    ],
)
def test_bad_values_say_what_was_expected(key, text, message):
    with pytest.raises(ins.InputError, match=message):
        convert_params(Fake(), {key: text})


def test_unknown_key_lists_valid_ones():
    with pytest.raises(
        ins.InputError,
        match=r"no parameter 'step'; valid parameters: steps, noise.*did you mean 'steps'",
    ):
        convert_params(Fake(), {"step": "3"})


def test_real_technique_signatures():
    techniques = ins.techniques()
    got = convert_params(
        techniques["integrated_gradients"],
        {"steps": "16", "target": "1,2", "baseline": "mean", "batch_size": "auto"},
    )
    assert got == {"steps": 16, "target": [1, 2], "baseline": "mean", "batch_size": "auto"}
    assert convert_params(techniques["occlusion"], {"stride": "4,2"}) == {"stride": (4, 2)}


def test_parse_assignments():
    assert parse_assignments(["a=1", "b = x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    with pytest.raises(ins.InputError, match=r"--param 'steps' is not key=value"):
        parse_assignments(["steps"])
    with pytest.raises(ins.InputError, match=r"--param a is given twice \('1' and '2'\)"):
        parse_assignments(["a=1", "a=2"])


def test_convert_without_a_technique():
    assert convert("3,4", tuple[int, ...]) == (3, 4)
    assert convert("", list[int]) == []
    with pytest.raises(ins.InputError, match="cannot be set on the command line"):
        convert("f", Callable[[int], int], name="fn")

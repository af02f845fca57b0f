from __future__ import annotations

import pytest

import innersight as ins
from innersight.core import errors


@pytest.mark.parametrize(
    "cls",
    [
        errors.PluginLoadError,
        errors.PluginConflictError,
        errors.BackendNotFoundError,
        errors.CapabilityError,
        errors.LayerNotFoundError,
        errors.ObjectiveError,
        errors.InputError,
        errors.TechniqueNotFoundError,
    ],
)
def test_every_error_derives_from_the_root(cls):
    assert issubclass(cls, ins.InnersightError)


def test_keyerror_subclasses_print_the_message_unquoted():
    err = errors.LayerNotFoundError("layer 'x' not found")
    assert str(err) == "layer 'x' not found"


def test_did_you_mean_suggests_close_names_only():
    assert errors.did_you_mean("conv5", ["conv1", "conv2", "dense"]).startswith(
        "; did you mean 'conv"
    )
    assert errors.did_you_mean("zzz", ["conv1", "dense"]) == ""


def test_summarize_names_truncates_long_lists():
    text = errors.summarize_names([f"l{i}" for i in range(20)], limit=3)
    assert text == "20 layers: l0, l1, l2, ... (17 more)"

"""The error catalogue: every user mistake gives a specific InnersightError whose message says
what was received and what to do, on torch and on Keras, through every registered technique.

Each case is one ``pytest.raises(<specific subclass>, match=...)``; techniques come from
``innersight.techniques()`` (with the cheap parameters of ``_common.MINIMAL``), so a new
plugin is held to the same catalogue as soon as it is registered.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import innersight as ins
from innersight.core.adapter import check_input_array
from innersight.core.errors import (
    BackendNotFoundError,
    InputError,
    LayerNotFoundError,
    ObjectiveError,
    TechniqueNotFoundError,
)
from tests.reliability._common import (
    MIN_BATCH,
    batch,
    minimal_params,
    technique_names,
    value_arrays,
)

WITH_INPUTS = technique_names(needs_inputs=True)
WITH_TARGET = [n for n in WITH_INPUTS if "target" in ins.techniques()[n].parameters()]
PROBE_ONE_SAMPLE = ("grad_cam", "embeddings")


def _nan(x):
    x = x.copy()
    x[0, 1, 2, 0] = np.nan
    return x


def _inf(x):
    x = x.copy()
    x[1, 0, 0, 2] = -np.inf
    return x


#: (id, bad inputs from a good (N, 12, 12, 3) batch, regex, or {backend: regex}). "{n}" in a
#: regex stands for the batch size N (techniques that first run one sample to learn the
#: layers' shapes on the torch backend, :data:`PROBE_ONE_SAMPLE`, may report 1).
INPUT_CASES = [
    ("wrong_rank_flat", lambda x: x.reshape(len(x), -1), r"shape \({n}, 432\)"),
    ("wrong_rank_5d", lambda x: x[:, None], r"shape \({n}, 1, 12, 12, 3\)"),
    (
        "wrong_spatial_size",
        lambda x: x[:, :10, :10],
        {
            "torch": r"failed on inputs of shape \({n}, 10, 10, 3\).*channels-last numpy",
            "keras": r"shape \({n}, 10, 10, 3\), expected \(N, 12, 12, 3\) \(wrong spatial size: "
            r"10x10 instead of 12x12\)",
        },
    ),
    (
        "wrong_channel_count",
        lambda x: x[..., :1],
        {
            "torch": r"inputs of shape \({n}, 12, 12, 1\).*to have 3 channels, but got 1",
            "keras": r"\(wrong channel count: 1 instead of 3\)",
        },
    ),
    (
        "channels_first_layout",
        lambda x: np.ascontiguousarray(x.transpose(0, 3, 1, 2)),
        r"shape \({n}, 3, 12, 12\).*channels-first.*x\.transpose\(0, 2, 3, 1\)",
    ),
    ("nan", _nan, r"1 NaN or Inf value\(s\) \(the first at index \(0, 1, 2, 0\)\); clean"),
    ("inf", _inf, r"1 NaN or Inf value\(s\) \(the first at index \(1, 0, 0, 2\)\)"),
    (
        "beyond_float32",
        lambda x: (x.astype(np.float64) + 1) * 1e39,
        r"values up to [\d.]+e\+39, beyond float32's range.*rescale",
    ),
    ("uint8", lambda x: (x * 255).astype(np.uint8), r"integer dtype uint8.*astype\(np\.float32\)"),
    ("int64", lambda x: x.astype(np.int64), r"integer dtype int64.*not converted implicitly"),
    ("bool", lambda x: x > 0.5, r"dtype bool.*x\.astype\(np\.float32\)"),
    ("complex", lambda x: x.astype(np.complex64), r"floating point array, got dtype complex64"),
    ("strings", lambda x: np.full(x.shape, "a"), r"floating point array, got dtype <U1"),
    ("empty_batch", lambda x: x[:0], r"empty batch \(shape \(0, 12, 12, 3\)\)"),
    ("ragged_list", lambda x: [x[0], x[1, :5]], r"(cannot turn into one|object array)"),
]


@pytest.mark.parametrize("technique", WITH_INPUTS)
@pytest.mark.parametrize(("case", "make", "match"), INPUT_CASES, ids=[c[0] for c in INPUT_CASES])
def test_bad_inputs(net, technique, case, make, match):
    backend, model = net
    match = match[backend] if isinstance(match, dict) else match
    n = MIN_BATCH.get(technique, 2)
    sizes = f"(?:{n}|1)" if technique in PROBE_ONE_SAMPLE and backend == "torch" else str(n)
    with pytest.raises(InputError, match=match.replace("{n}", sizes)):
        ins.explain(technique, model, make(batch(n)), **minimal_params(technique))


@pytest.mark.parametrize("technique", WITH_INPUTS)
def test_torch_tensors_are_taken_as_their_numpy_copy(net, technique):
    """A torch tensor in the model's own layout (NCHW for torch, channels-last for Keras) gives
    the numpy batch's values, and stays as it was."""
    backend, model = net
    x = batch(MIN_BATCH.get(technique, 2))
    t = torch.from_numpy(x.transpose(0, 3, 1, 2).copy() if backend == "torch" else x.copy())
    before = t.clone()
    from_numpy = ins.explain(technique, model, x, **minimal_params(technique))
    from_tensor = ins.explain(technique, model, t, **minimal_params(technique))
    for a, b in zip(value_arrays(from_numpy.values), value_arrays(from_tensor.values), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    assert torch.equal(t, before) and t.grad is None and not t.requires_grad


#: (id, target, regex): targets on a 3-class model, batch of 2.
TARGET_CASES = [
    ("out_of_range", 3, r"target 3 is out of range: valid values are 0\.\.2"),
    ("negative", -1, r"target -1 is out of range: valid values are 0\.\.2"),
    ("per_sample_out_of_range", [0, 7], r"target 7 is out of range"),
    ("float", 1.5, r"target must be an int or a sequence of ints, got 1\.5"),
    ("string", "cat", r"target must be an int or a sequence of ints, got 'cat'"),
    ("bool", True, r"target must be an int or one int per sample, got a bool"),
    ("too_many", [0, 1, 2], r"target has 3 entries for 2 samples; pass one int"),
    ("too_few", [1], r"target has 1 entries for 2 samples"),
    ("nested", [[0, 1]], r"target has 2 entries for 2 samples"),
]


@pytest.mark.parametrize("technique", WITH_TARGET)
@pytest.mark.parametrize(
    ("case", "target", "match"), TARGET_CASES, ids=[c[0] for c in TARGET_CASES]
)
def test_bad_targets(net, technique, case, target, match):
    _, model = net
    x = batch(MIN_BATCH.get(technique, 2))
    with pytest.raises(ObjectiveError, match=match):
        ins.explain(technique, model, x, target=target, **minimal_params(technique))


@pytest.mark.parametrize("technique", technique_names())
def test_unknown_parameter_suggests_the_closest(net, technique):
    _, model = net
    valid = list(ins.techniques()[technique].parameters())
    wrong = valid[0][:-1] + valid[0][-1].upper() * 2  # "target" -> "targeTT"
    with pytest.raises(
        InputError,
        match=rf"technique '{technique}' has no parameter '{wrong}'; valid parameters: "
        rf"{valid[0]}.*did you mean '{valid[0]}'",
    ):
        ins.explain(technique, model, batch(), **{wrong: 1})


#: (technique, params, error, regex): parameter values a technique must refuse.
PARAM_CASES = [
    (
        "activation_grid",
        {"layers": ["conv"]},
        LayerNotFoundError,
        r"layer 'conv' not found.*did you mean 'conv",
    ),
    (
        "activation_grid",
        {"layers": ["fc1"]},
        InputError,
        r"spatial \(H, W, C\) layers; not spatial: fc1 \(8,\)",
    ),
    (
        "grad_cam",
        {"layer": "conv"},
        LayerNotFoundError,
        r"layer 'conv' not found.*did you mean 'conv",
    ),
    (
        "grad_cam",
        {"layer": "fc1"},
        InputError,
        r"needs a layer with a spatial \(H, W, C\) output; 'fc1' gives \(8,\)",
    ),
    ("grad_cam", {"layer": 3}, InputError, r"layer must be a layer name \(str\) or None, got int"),
    ("embeddings", {"layer": "fc"}, LayerNotFoundError, r"layer 'fc' not found.*did you mean 'fc"),
    ("occlusion", {"window": 13}, InputError, r"window \(13, 13\) is larger than the 12x12 images"),
    (
        "occlusion",
        {"window": (4, 20), "stride": 2},
        InputError,
        r"window \(4, 20\) is larger than the 12x12 images",
    ),
    ("occlusion", {"window": 0}, InputError, r"window must be a positive int .*got 0"),
    ("occlusion", {"window": 4, "stride": 0}, InputError, r"stride must be a positive int .*got 0"),
    (
        "occlusion",
        {"window": 4, "stride": -2},
        InputError,
        r"stride must be a positive int .*got -2",
    ),
    (
        "occlusion",
        {"window": 3, "stride": 3, "score": "prob"},
        InputError,
        r"score='prob' is unknown; use one of 'logit', 'probability'",
    ),
    ("integrated_gradients", {"steps": 0}, InputError, r"steps must be a positive int, got 0"),
    ("integrated_gradients", {"steps": -5}, InputError, r"steps must be a positive int, got -5"),
    (
        "integrated_gradients",
        {"steps": 4, "baseline": "white"},
        InputError,
        r"baseline='white' is unknown",
    ),
    ("smoothgrad", {"samples": 0}, InputError, r"samples must be a positive int.*got 0"),
    (
        "smoothgrad",
        {"samples": 2, "noise": -0.1},
        InputError,
        r"noise must be a finite number >= 0, got -0\.1",
    ),
    ("saliency", {"reduce_channels": "sum"}, InputError, r"reduce_channels='sum' is unknown"),
    (
        "filter_maximization",
        {"layer": "conv"},
        LayerNotFoundError,
        r"layer 'conv' not found.*did you mean 'conv",
    ),
    (
        "filter_maximization",
        {"layer": "fc1"},
        InputError,
        r"layer 'fc1' has output shape \(8,\), not a spatial \(H, W, C\) map",
    ),
    (
        "filter_maximization",
        {"filters": [99]},
        InputError,
        r"filters \[99\] are out of range: layer 'conv1' has \d+ filters",
    ),
    ("filter_maximization", {"steps": 0}, InputError, r"steps must be a positive int, got 0"),
    (
        "class_maximization",
        {"classes": [5]},
        InputError,
        r"classes \[5\] are out of range: the model has 3 outputs",
    ),
    ("class_maximization", {"steps": -1}, InputError, r"steps must be a positive int, got -1"),
]


@pytest.mark.parametrize(
    ("technique", "params", "error", "match"),
    PARAM_CASES,
    ids=[f"{c[0]}-{'-'.join(map(str, c[1].items()))}" for c in PARAM_CASES],
)
def test_bad_technique_parameters(net, technique, params, error, match):
    if technique not in ins.techniques():
        pytest.skip(f"{technique} is not registered")
    _, model = net
    full = {**minimal_params(technique), **params}
    with pytest.raises(error, match=match):
        ins.explain(technique, model, batch(MIN_BATCH.get(technique, 2)), **full)


def test_unknown_technique_suggests_the_closest(net):
    _, model = net
    with pytest.raises(
        TechniqueNotFoundError,
        match=r"no technique named 'salency'; available: .*did you mean 'saliency'",
    ):
        ins.explain("salency", model, batch())


def test_technique_must_be_a_name(net):
    _, model = net
    with pytest.raises(InputError, match=r"technique must be a name \(str\), got Saliency"):
        ins.explain(ins.techniques()["saliency"], model, batch())


def test_missing_inputs_are_explained(net):
    _, model = net
    with pytest.raises(InputError, match=r"technique 'saliency' needs inputs: pass a batch"):
        ins.explain("saliency", model)


def test_one_image_without_batch_axis_is_accepted_when_the_input_shape_is_known(net):
    backend, model = net
    x = batch(1)
    if backend == "torch":  # no declared input_shape: (12, 12, 3) may be a batch; never guessed
        with pytest.raises(InputError, match=r"for one image \(H, W, C\) add the batch axis"):
            ins.explain("saliency", model, x[0])
        model = ins.wrap(model, input_shape=(12, 12, 3))
    np.testing.assert_array_equal(
        ins.explain("saliency", model, x[0]).values, ins.explain("saliency", model, x).values
    )


@pytest.mark.parametrize("entry", ["wrap", "layers"])
def test_unknown_model_type(entry):
    with pytest.raises(
        BackendNotFoundError, match=r"no backend accepts a model of type builtins\.dict; installed"
    ):
        getattr(ins, entry)({"not": "a model"})


@pytest.mark.parametrize("entry", ["wrap", "layers", "explain"])
def test_unknown_wrap_option_suggests_the_closest(net, entry):
    backend, model = net
    bad, fix = {"torch": ("input_layut", "input_layout"), "keras": ("logit", "logits")}[backend]
    call = {
        "wrap": lambda: ins.wrap(model, **{bad: "NHWC"}),
        "layers": lambda: ins.layers(model, **{bad: "NHWC"}),
        # explain takes technique parameters, not wrap options: the option is an unknown parameter
        "explain": lambda: ins.explain("saliency", model, batch(), **{bad: "NHWC"}),
    }[entry]
    match = (
        rf"no parameter '{bad}'"
        if entry == "explain"
        else rf"unknown option.*'{bad}'.*valid options: .*did you mean '{fix}'"
    )
    with pytest.raises(InputError, match=match):
        call()


def test_options_on_an_adapter_are_refused(net):
    _, model = net
    adapter = ins.wrap(model)
    with pytest.raises(InputError, match=r"is already wrapped; options \['logits'\] apply only"):
        ins.wrap(adapter, logits=False)


def test_torch_declared_input_shape_gives_core_messages(torch_small):
    adapter = ins.wrap(torch_small, input_shape=(12, 12, 3))
    x = batch()
    with pytest.raises(InputError, match=r"expected \(N, 12, 12, 3\); this looks channels-first"):
        ins.explain("saliency", adapter, np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    with pytest.raises(InputError, match=r"\(wrong spatial size: 10x10 instead of 12x12\)"):
        ins.explain("saliency", adapter, x[:, :10, :10])
    with pytest.raises(InputError, match=r"expected \(N, 12, 12, 3\) \(rank 4, got rank 2\)"):
        ins.explain("saliency", adapter, x.reshape(2, -1))


@pytest.mark.parametrize("technique", ["saliency", "activation_grid"])
def test_image_too_small_for_the_torch_model_is_an_input_error(torch_small, technique):
    # Found by the fuzz test: a pooling layer with nothing left to pool raised a bare
    # RuntimeError ("Output size is too small") that the torch backend did not translate.
    with pytest.raises(
        InputError, match=r"failed on inputs of shape \(1, 3, 3, 3\).*Output size is too small"
    ):
        ins.explain(technique, torch_small, batch(1, (3, 3, 3)))


def test_nhwc_torch_model_given_nchw_data_hints_at_the_layout(torch_small):
    # A channels-last batch given to a model wrapped as NHWC that really is NCHW: the torch error
    # is turned into a message about the layout option.
    with pytest.raises(InputError, match=r"fed to it as an NHWC tensor.*input_layout='NCHW'"):
        ins.explain("saliency", ins.wrap(torch_small, input_layout="NHWC"), batch())


def test_layers_of_an_unknown_layer_name_lists_the_names(net):
    _, model = net
    adapter = ins.wrap(model)
    with pytest.raises(
        LayerNotFoundError, match=r"layer 'fc3' not found in .* model .*did you mean 'fc"
    ):
        adapter.forward(batch(), taps=["fc3"])


def test_occlusion_channels_first_batch_gets_the_layout_hint(digits_torch):
    x = np.zeros((2, 1, 32, 32), np.float32)
    with pytest.raises(InputError, match=r"channels-first"):
        ins.explain("occlusion", digits_torch, x, progress=False)


#: (id, array-like, expected shape, regex): the core validation every adapter shares.
CORE_CASES = [
    (
        "one_sample",
        np.zeros((12, 12, 3), np.float32),
        (12, 12, 3),
        r"rank 4, got rank 3\); this looks like one sample without the batch axis: pass x\[None\]",
    ),
    (
        "vector_width",
        np.zeros((2, 5), np.float32),
        (4,),
        r"shape \(2, 5\), expected \(N, 4\) \(axis 1 has 5 entries instead of 4\)",
    ),
    (
        "channels_first_any_size",
        np.zeros((2, 3, 9, 9), np.float32),
        (None, None, 3),
        r"expected \(N, \?, \?, 3\); this looks channels-first \(N, C, H, W\)",
    ),
    ("objects", [object(), object()], None, r"becomes an object array \(ragged nesting"),
    ("ragged", [[1.0, 2.0], [3.0]], None, r"cannot turn into one .*pass a numpy array"),
    ("scalar", 3.0, None, r"at least 2 axes, got shape \(\); add the batch axis"),
    (
        "float64_beyond_float32",
        np.full((1, 2), 1e300),
        None,
        r"values up to 1e\+300, beyond float32",
    ),
]


@pytest.mark.parametrize(
    ("case", "x", "expected", "match"), CORE_CASES, ids=[c[0] for c in CORE_CASES]
)
def test_core_input_validation_messages(case, x, expected, match):
    with pytest.raises(InputError, match=match):
        check_input_array(x, expected=expected)


def test_adapter_given_one_sample_says_to_add_the_batch_axis(keras_small):
    with pytest.raises(InputError, match=r"one sample without the batch axis: pass x\[None\]"):
        ins.wrap(keras_small).forward(batch()[0])

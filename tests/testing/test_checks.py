"""The backend checks pass on the reference adapter and fail, with the right message, on
adapters broken on purpose. A check that cannot fail is worthless."""

from __future__ import annotations

import numpy as np
import pytest

from innersight import testing
from innersight.core import objectives as O
from innersight.core.adapter import ForwardResult, LayerInfo
from innersight.core.errors import LayerNotFoundError
from innersight.testing import ConformanceError, ReferenceAdapter, reference_model
from innersight.testing.checks import assert_close, subset_objective, tile_objective


@pytest.fixture(scope="module")
def ref() -> ReferenceAdapter:
    return reference_model("conv", seed=0)


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.random.default_rng(4).random((3, 12, 12, 3), dtype=np.float32)


def broken(base: ReferenceAdapter, **methods) -> ReferenceAdapter:
    """A ReferenceAdapter over the same network with some methods replaced."""
    cls = type("Broken", (ReferenceAdapter,), methods)
    return cls(base.network)


# -- passing --------------------------------------------------------------------------------
def test_every_check_passes_on_the_reference(ref, x):
    testing.check_protocol(ref)
    testing.check_layers(ref)
    testing.check_taps(ref, x)
    for mode in ("plain", "guided", "deconv"):
        testing.check_gradients(ref, x, relu=mode)
    testing.check_layer_gradients(ref, x)
    testing.check_unknown_layer(ref)
    testing.check_inputs_not_mutated(ref, x)
    testing.check_state_preserved(ref.network, ref, x)
    testing.check_matches_reference(ref, ReferenceAdapter(ref.network), x)


@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_check_adapter_passes_on_reference_models(kind):
    adapter = reference_model(kind, seed=2, input_shape=(10, 9, 2), num_classes=5)
    testing.check_adapter(adapter)
    testing.check_adapter(adapter.network, np.random.default_rng(0).random((2, 10, 9, 2)))


def test_explicit_objectives_and_capability_requirements(ref, x):
    testing.check_gradients(ref, x, [O.Neuron("pool1", [0, 50, 99]), O.Channel("relu1", 2, crop=4)])
    lin = reference_model("linear")
    lin.capabilities = frozenset({"forward"})  # instance attribute: this adapter only
    with pytest.raises(ConformanceError, match="does not declare input_gradients"):
        testing.check_gradients(lin, x)
    with pytest.raises(ConformanceError, match="does not declare layer_taps"):
        testing.check_taps(lin, x)


# -- check_protocol / check_layers --------------------------------------------------------------
def test_protocol_failures(ref):
    class NotAnAdapter:
        backend = "x"

    with pytest.raises(ConformanceError, match="missing capabilities, name, input_shape"):
        testing.check_protocol(NotAnAdapter())
    bad = broken(ref, capabilities=frozenset({"forward", "telepathy"}))
    with pytest.raises(ConformanceError, match=r"unknown capabilities \['telepathy'\]"):
        testing.check_protocol(bad)
    with pytest.raises(ConformanceError, match="backend must be a non-empty str"):
        testing.check_protocol(broken(ref, backend=""))
    with pytest.raises(ConformanceError, match="input_shape must be None or a tuple"):
        testing.check_protocol(broken(ref, input_shape=property(lambda self: [12, 12, 3])))


def test_duplicated_layer_name_fails(ref):
    def layers(self):
        infos = list(ReferenceAdapter.layers(self))
        return [*infos[:2], LayerInfo("conv1", "ReLU", infos[2].output_shape), *infos[3:]]

    with pytest.raises(ConformanceError, match=r"layer names are not unique: 'conv1' x2"):
        testing.check_layers(broken(ref, layers=layers))


def test_unstable_or_badly_typed_layers_fail(ref):
    calls = []

    def unstable(self):
        calls.append(1)
        return [LayerInfo(f"layer{len(calls)}", "Dense", (3,))]

    with pytest.raises(ConformanceError, match="layers\\(\\) is not stable"):
        testing.check_layers(broken(ref, layers=unstable))
    with pytest.raises(ConformanceError, match=r"num_params must be an int >= 0, got 1.5"):
        testing.check_layers(broken(ref, layers=lambda self: [LayerInfo("a", "Dense", (3,), 1.5)]))
    with pytest.raises(ConformanceError, match=r"output_shape must be a tuple"):
        testing.check_layers(broken(ref, layers=lambda self: [LayerInfo("a", "Dense", [3])]))


# -- check_taps -------------------------------------------------------------------------------
def _channels_first_forward(self, x, *, taps=()):
    fr = ReferenceAdapter.forward(self, x, taps=taps)
    acts = {k: (v.transpose(0, 3, 1, 2) if v.ndim == 4 else v) for k, v in fr.activations.items()}
    return ForwardResult(fr.outputs, acts)


def _taps_change_outputs(self, x, *, taps=()):
    fr = ReferenceAdapter.forward(self, x, taps=taps)
    return ForwardResult(fr.outputs + 0.01 * bool(tuple(taps)), fr.activations)


def _drops_last_tap(self, x, *, taps=()):
    fr = ReferenceAdapter.forward(self, x, taps=taps)
    return ForwardResult(fr.outputs, dict(list(fr.activations.items())[:-1]))


def _float64_outputs(self, x, *, taps=()):
    fr = ReferenceAdapter.forward(self, x, taps=taps)
    return ForwardResult(fr.outputs.astype(np.float64), fr.activations)


@pytest.mark.parametrize(
    ("forward", "message"),
    [
        (
            _channels_first_forward,
            r"activation of 'conv1' has shape \(3, 4, 10, 10\), expected \(3, 10, 10, 4\)",
        ),
        (_taps_change_outputs, "outputs with every layer tapped \\(vs. no taps\\) differs"),
        (_drops_last_tap, r"missing \['fc2'\]"),
        (_float64_outputs, "outputs has dtype float64, expected float32"),
    ],
    ids=["channels-first", "taps change outputs", "missing tap", "float64"],
)
def test_taps_failures(ref, x, forward, message):
    with pytest.raises(ConformanceError, match=message):
        testing.check_taps(broken(ref, forward=forward), x)


# -- check_gradients --------------------------------------------------------------------------
def _negated(self, x, objective, *, relu="plain"):
    v, g = ReferenceAdapter.value_and_grad(self, x, objective, relu=relu)
    return v, -g


def _rolled(self, x, objective, *, relu="plain"):
    v, g = ReferenceAdapter.value_and_grad(self, x, objective, relu=relu)
    return v, np.roll(g, 1, axis=0)


def _coupled(self, x, objective, *, relu="plain"):  # like BatchNorm left in training mode
    x = np.asarray(x, np.float32)
    return ReferenceAdapter.value_and_grad(self, x - x.mean(axis=0) + 0.5, objective, relu=relu)


def _coupled_forward(self, x, *, taps=()):
    x = np.asarray(x, np.float32)
    return ReferenceAdapter.forward(self, x - x.mean(axis=0) + 0.5, taps=taps)


def _batch_of_one_bug(self, x, objective, *, relu="plain"):
    v, g = ReferenceAdapter.value_and_grad(self, x, objective, relu=relu)
    return (v, g) if len(x) > 1 else (v, np.abs(g))


def _offset_values(self, x, objective, *, relu="plain"):
    v, g = ReferenceAdapter.value_and_grad(self, x, objective, relu=relu)
    return v + 1.0, g


def _guided_is_plain(self, x, objective, *, relu="plain"):
    return ReferenceAdapter.value_and_grad(self, x, objective, relu="plain")


def _half_grad(self, x, objective, *, relu="plain"):
    v, g = ReferenceAdapter.value_and_grad(self, x, objective, relu=relu)
    return v, g * 0.5


GRADIENT_BUGS = {
    "wrong sign": (
        _negated,
        r"gradient of Logit\(\[0, 1, 2\]\) w.r.t. the input disagrees with central",
    ),
    "other sample's gradient": (_rolled, "disagrees with central finite differences for sample 0"),
    "half gradient": (_half_grad, "disagrees with central finite differences"),
    "batch-of-one bug": (
        _batch_of_one_bug,
        r"gradient of Logit\(\[0, 1, 2\]\) for sample 0 run alone",
    ),
    "wrong values": (_offset_values, r"values of Logit\(\[0, 1, 2\]\) \(vs. objectives.evaluate"),
}


@pytest.mark.parametrize("bug", GRADIENT_BUGS)
def test_gradient_failures(ref, x, bug):
    method, message = GRADIENT_BUGS[bug]
    with pytest.raises(ConformanceError, match=message):
        testing.check_gradients(broken(ref, value_and_grad=method), x)


def test_samples_coupled_through_batch_statistics_fail(ref, x):
    adapter = broken(ref, value_and_grad=_coupled, forward=_coupled_forward)
    with pytest.raises(ConformanceError, match=r"run alone|finite differences"):
        testing.check_gradients(adapter, x)


def test_wrong_gradient_of_a_layer_objective_fails(ref, x):
    def wrong_channel(self, x, objective, *, relu="plain"):
        if isinstance(objective, O.Channel):  # the uncropped channel
            objective = O.Channel(objective.layer, objective.index, crop=0)
        return ReferenceAdapter.value_and_grad(self, x, objective, relu=relu)

    adapter = broken(ref, value_and_grad=wrong_channel)
    with pytest.raises(
        ConformanceError, match=r"values of Channel\('relu2', \[\d, \d, \d\], crop=1\)"
    ):
        testing.check_gradients(adapter, x)
    with pytest.raises(
        ConformanceError, match=r"values of Channel\('relu1', \[0, 1, 2\], crop=2\)"
    ):
        testing.check_gradients(adapter, x, [O.Channel("relu1", [0, 1, 2], crop=2)])


def test_relu_override_that_is_not_applied_fails(ref, x):
    with pytest.raises(
        ConformanceError, match=r"relu='deconv' gives exactly the plain gradient .*relu1, relu2"
    ):
        testing.check_gradients(broken(ref, value_and_grad=_guided_is_plain), x, relu="deconv")


def test_guided_silently_plain_is_caught_by_the_reference_comparison(ref, x):
    bad = broken(ref, value_and_grad=_guided_is_plain)
    with pytest.raises(
        ConformanceError, match=r"gradient of Logit\(\[0, 1, 2\]\) \(relu='guided', vs. reference\)"
    ):
        testing.check_matches_reference(bad, ref, x)


def test_logits_auto_convention_is_accepted(x):
    """A softmax model whose Logit values are the pre-softmax scores (logits='auto')."""
    from innersight.testing.reference_layers import Dense, Flatten, Layer

    class Softmax(Layer):
        kind = "Softmax"

        def output_shape(self, in_shape):
            return in_shape

        def forward(self, z):
            e = np.exp(z - z.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True), None

    rng = np.random.default_rng(0)
    logits = [Flatten("flatten"), Dense("fc", rng.standard_normal((432, 4)) * 0.05, np.zeros(4))]
    scores = testing.ReferenceNetwork(logits, (12, 12, 3))
    probs = testing.ReferenceNetwork([*logits, Softmax("softmax")], (12, 12, 3))

    class LogitsAuto(ReferenceAdapter):
        def value_and_grad(self, x, objective, *, relu="plain"):
            return ReferenceAdapter(scores).value_and_grad(x, objective, relu=relu)

    testing.check_gradients(LogitsAuto(probs), x, [O.Logit([0, 1, 3])])
    other = LogitsAuto(reference_model("linear", num_classes=4).network)  # scores of another model
    with pytest.raises(ConformanceError, match=r"vs. objectives.evaluate"):
        testing.check_gradients(other, x, [O.Logit(1)])


# -- check_layer_gradients --------------------------------------------------------------------
def _scaled_layer_grad(self, x, objective, layer, *, relu="plain"):
    v, a, g = ReferenceAdapter.layer_value_and_grad(self, x, objective, layer, relu=relu)
    return v, a, g * 2


def _ignores_crop(self, x, objective, layer, *, relu="plain"):
    if isinstance(objective, O.Channel):
        objective = O.Channel(objective.layer, objective.index)
    return ReferenceAdapter.layer_value_and_grad(self, x, objective, layer, relu=relu)


def _other_class(self, x, objective, layer, *, relu="plain"):
    v, a, g = ReferenceAdapter.layer_value_and_grad(self, x, objective, layer, relu=relu)
    if isinstance(objective, O.Logit):
        shifted = O.Logit((np.asarray(objective.index) + 1) % 3)
        _, _, g = ReferenceAdapter.layer_value_and_grad(self, x, shifted, layer, relu=relu)
    return v, a, g


LAYER_GRADIENT_BUGS = {
    "scaled": (
        _scaled_layer_grad,
        r"gradient from layer_value_and_grad\(x, Channel\('relu2', \[1, 4, 1\], "
        r"crop=1\), 'relu2'\) \(vs. the exact Channel mask\) differs at \(0, 1, 1, 1\): "
        r"got 2, expected 1",
    ),
    "crop ignored": (_ignores_crop, "exact Channel mask"),
    "another class": (
        _other_class,
        "w.r.t. the activations of 'relu2' disagrees with central finite",
    ),
}


@pytest.mark.parametrize("bug", LAYER_GRADIENT_BUGS)
def test_layer_gradient_failures(ref, x, bug):
    method, message = LAYER_GRADIENT_BUGS[bug]
    with pytest.raises(ConformanceError, match=message):
        testing.check_layer_gradients(broken(ref, layer_value_and_grad=method), x)


def test_missing_layer_value_and_grad_fails(ref, x):
    with pytest.raises(ConformanceError, match="has no layer_value_and_grad method"):
        testing.check_layer_gradients(broken(ref, layer_value_and_grad=None), x)


# -- check_unknown_layer ----------------------------------------------------------------------
def test_unknown_layer_failures(ref):
    def key_error(self, x, *, taps=()):
        raise KeyError(next(iter(taps)))

    with pytest.raises(ConformanceError, match=r"raised KeyError .* expected LayerNotFoundError"):
        testing.check_unknown_layer(broken(ref, forward=key_error))

    def terse(self, x, *, taps=()):
        raise LayerNotFoundError(f"no layer {next(iter(taps))}")

    with pytest.raises(
        ConformanceError, match=r"must name it and list the layers \('conv1', ...\)"
    ):
        testing.check_unknown_layer(broken(ref, forward=terse))

    def no_suggestion(self, x, *, taps=()):
        raise LayerNotFoundError(f"layer {next(iter(taps))!r} not found; layers: conv1, relu1, fc2")

    with pytest.raises(ConformanceError, match=r"near miss 'fc2x' must suggest 'fc2'"):
        testing.check_unknown_layer(broken(ref, forward=no_suggestion))

    def objective_error(self, x, objective, *, relu="plain"):
        raise ValueError("bad layer")

    with pytest.raises(
        ConformanceError,
        match=r"value_and_grad\(x, Channel\('no_such_layer', 0\)\) raised ValueError",
    ):
        testing.check_unknown_layer(broken(ref, value_and_grad=objective_error))


# -- check_inputs_not_mutated ------------------------------------------------------------------
def test_mutating_inputs_fails(ref, x):
    def mutating(self, x, *, taps=()):
        out = ReferenceAdapter.forward(self, x, taps=taps)
        if x.flags.writeable:
            x[..., 0] = 0
        return out

    with pytest.raises(
        ConformanceError,
        match="forward changed its float32 input in place \\(144 entries differ\\)",
    ):
        testing.check_inputs_not_mutated(broken(ref, forward=mutating), x[:1])


def test_writing_through_a_view_is_caught(ref, x):
    def through_base(self, x, objective, *, relu="plain"):
        if x.base is not None and x.base.flags.writeable:
            x.base[..., 1::2] = 0  # writes outside the view, into the caller's buffer
        return ReferenceAdapter.value_and_grad(self, x, objective, relu=relu)

    with pytest.raises(ConformanceError, match="changed its non-contiguous input in place"):
        testing.check_inputs_not_mutated(broken(ref, value_and_grad=through_base), x[:1])


def test_dtype_and_layout_handling_is_checked(ref, x):
    def float32_only(self, x, *, taps=()):
        if x.dtype != np.float32:
            raise TypeError(f"expected float32, got {x.dtype}")
        return ReferenceAdapter.forward(self, x, taps=taps)

    with pytest.raises(ConformanceError, match="forward on a float64 input raised TypeError"):
        testing.check_inputs_not_mutated(broken(ref, forward=float32_only), x[:1])

    def ignores_strides(self, x, *, taps=()):  # reinterprets the raw buffer as C order
        raw = np.frombuffer(np.asarray(x).tobytes(order="A"), dtype=x.dtype).reshape(x.shape)
        return ReferenceAdapter.forward(self, raw, taps=taps)

    with pytest.raises(
        ConformanceError, match=r"on a Fortran-ordered input \(vs. float32 input\) differs"
    ):
        testing.check_inputs_not_mutated(broken(ref, forward=ignores_strides), x[:1])


# -- check_state_preserved (reference; torch has its own module) --------------------------------
def test_state_change_on_success_fails(ref, x):
    net = reference_model(seed=5).network

    def leaves_attribute(self, x, *, taps=()):
        self.network.layers[0].cache = "left behind"
        return ReferenceAdapter.forward(self, x, taps=taps)

    adapter = broken(ReferenceAdapter(net), forward=leaves_attribute)
    with pytest.raises(
        ConformanceError, match=r"forward left the reference model changed:\n  layer 'conv1'"
    ):
        testing.check_state_preserved(net, adapter, x)


def test_state_change_on_error_fails(x):
    net = reference_model(seed=5).network

    class Leaky(ReferenceAdapter):
        def forward(self, x, *, taps=()):
            self.network.layers[1].busy = True
            out = ReferenceAdapter.forward(self, x, taps=taps)  # no finally: leaks on errors
            del self.network.layers[1].busy
            return out

    with pytest.raises(
        ConformanceError, match=r"(?s)after an injected RuntimeError.*added \['busy'\]"
    ):
        testing.check_state_preserved(net, Leaky(net), x, make_adapter=lambda: Leaky(net))
    del net.layers[1].busy


def test_swallowed_errors_fail(x):
    net = reference_model(seed=5).network

    class Swallows(ReferenceAdapter):
        def forward(self, x, *, taps=()):
            try:
                return ReferenceAdapter.forward(self, x, taps=taps)
            except BaseException:
                return ForwardResult(np.zeros((len(x), 3), np.float32), {})

    with pytest.raises(
        ConformanceError, match="forward returned normally although an injected RuntimeError"
    ):
        testing.check_state_preserved(net, Swallows(net), x, make_adapter=lambda: Swallows(net))

    class Converts(ReferenceAdapter):
        def value_and_grad(self, x, objective, *, relu="plain"):
            try:
                return ReferenceAdapter.value_and_grad(self, x, objective, relu=relu)
            except BaseException as err:
                raise RuntimeError("wrapped") from err

    with pytest.raises(
        ConformanceError, match="turned an injected KeyboardInterrupt into RuntimeError"
    ):
        testing.check_state_preserved(net, Converts(net), x, make_adapter=lambda: Converts(net))


def test_unknown_frameworks_warn_without_an_injector(ref, x):
    with pytest.warns(testing.ConformanceWarning, match="no error injector for object"):
        testing.check_state_preserved(object(), ref, x)
    testing.check_state_preserved(object(), ref, x, inject=False)


# -- check_adapter and check_matches_reference ---------------------------------------------------
def test_check_adapter_lists_every_failure(ref):
    def crashes(self, x, objective, layer, *, relu="plain"):
        raise ZeroDivisionError("oops")

    bad = broken(ref, value_and_grad=_negated, layer_value_and_grad=crashes)
    with pytest.raises(ConformanceError) as info:
        testing.check_adapter(bad)
    text = str(info.value)
    assert text.startswith("the numpy adapter for reference_conv fails 6 of 11 conformance checks:")
    assert (
        "\n- check_gradients(relu='plain'): the gradient of Logit([0, 1, 2]) w.r.t. the input"
        in text
    )
    assert "check_gradients(relu='guided')" not in text  # no finite differences for overrides
    assert "\n- check_layer_gradients: raised ZeroDivisionError: oops (at " in text
    assert (
        "\n- check_unknown_layer: layer_value_and_grad(x, Logit(0), 'no_such_layer') raised" in text
    )
    with pytest.raises(
        ConformanceError, match=r"(?s)fails 7 of 12 .*check_matches_reference: gradient"
    ):
        testing.check_adapter(bad, reference=ref)


def test_matches_reference_fails_for_another_network(ref, x):
    with pytest.raises(ConformanceError, match=r"outputs \(vs. the reference\) differs"):
        testing.check_matches_reference(reference_model(seed=9), ref, x)


def test_matches_reference_with_a_layer_map(ref, x):
    renamed = testing.ReferenceNetwork(
        [
            type(lay)(f"my_{lay.name}", **lay.params) if lay.params else type(lay)(f"my_{lay.name}")
            for lay in ref.network.layers
        ],
        (12, 12, 3),
    )
    mapping = {f"my_{n}": n for n in ("relu1", "pool1", "relu2", "fc1")}
    testing.check_matches_reference(ReferenceAdapter(renamed), ref, x, layer_map=mapping)
    with pytest.raises(
        ConformanceError, match=r"activation of 'my_relu1' \(vs. reference 'conv1'\)"
    ):
        testing.check_matches_reference(
            ReferenceAdapter(renamed), ref, x, layer_map={"my_relu1": "conv1"}
        )


# -- helpers ----------------------------------------------------------------------------------
def test_assert_close_messages():
    assert_close("c", "thing", np.ones(3), np.ones(3))
    with pytest.raises(
        ConformanceError, match=r"c: thing differs at \(1,\): got 2, expected 1 \(1 of 3"
    ):
        assert_close("c", "thing", [1.0, 2.0, 1.0], np.ones(3))
    with pytest.raises(ConformanceError, match=r"thing has shape \(2,\), expected \(3,\)"):
        assert_close("c", "thing", np.ones(2), np.ones(3))
    with pytest.raises(ConformanceError, match="contains 1 NaN/Inf"):
        assert_close("c", "thing", [1.0, np.nan, 1.0], np.ones(3))


def test_objective_slicing_helpers():
    obj = O.Channel("a", [1, 2, 3], crop=1)
    assert subset_objective(obj, [2]).index.tolist() == [3] and subset_objective(obj, [2]).crop == 1
    assert tile_objective(O.Logit(np.array([0, 1])), 2).index.tolist() == [0, 1, 0, 1]
    assert tile_objective(O.Neuron("a", (1, 2, 3)), 3).index == (1, 2, 3)
    assert subset_objective(O.Logit(4), [0]).index == 4

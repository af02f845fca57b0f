"""Plugin isolation through the public API: a plugin that breaks at import, at registration or
while explaining is named (plugin and distribution) and the other techniques keep working; a
plugin that returns a malformed Explanation is caught by ``explain`` before the user sees it."""

from __future__ import annotations

import types
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

import innersight as ins
from innersight.core import Explanation, Technique, hookimpl, manager
from innersight.core.errors import (
    InnersightError,
    InputError,
    PluginError,
    PluginLoadError,
    TechniqueNotFoundError,
)
from innersight.core.manager import InnersightPluginManager, PluginLoadWarning
from tests.reliability._common import batch

DIST = r"plugin '(\w+)' \(acme-plugins 2\.0\.1\)"


@dataclass
class _Dist:
    name: str = "acme-plugins"
    version: str = "2.0.1"


class _EntryPoint:
    """An entry point of the ``innersight`` group, from the distribution acme-plugins 2.0.1."""

    def __init__(self, name: str, target: Any) -> None:
        self.name, self.value, self._target, self.dist = name, f"acme.{name}", target, _Dist()

    def load(self) -> Any:
        if isinstance(self._target, BaseException):
            raise self._target
        return self._target


def plugin(tech: Technique) -> types.ModuleType:
    module = types.ModuleType(f"acme_{tech.name}")
    module.innersight_register_techniques = hookimpl(lambda: [tech])
    return module


def technique(name: str, body: Any, *, requires: frozenset[str] = frozenset()) -> Technique:
    """A technique whose ``explain(model, inputs)`` returns ``body(model, inputs)``."""

    class T(Technique):
        summary = "a test plugin"

        def explain(self, model: Any, inputs: np.ndarray) -> Any:
            return body(model, inputs)

    T.name, T.requires = name, requires
    return T()


def heatmap(name: str, values: Any, inputs: np.ndarray) -> Explanation:
    return Explanation(name, "heatmap", values, inputs)


@pytest.fixture
def install(monkeypatch):
    """Make a manager with the built-ins and the given entry points the process-wide one."""

    def make(*eps: _EntryPoint, **kw: Any) -> InnersightPluginManager:
        monkeypatch.setattr(manager.metadata, "entry_points", lambda group: list(eps))
        pm = InnersightPluginManager(**kw)
        pm.load_builtins()
        pm.load_entry_points()
        monkeypatch.setattr(manager, "_manager", pm)
        return pm

    return make


def _works(model: Any) -> None:
    """The built-ins still explain, through the public API."""
    x = batch()
    assert np.all(np.isfinite(ins.explain("saliency", model, x).values))
    assert ins.explain("activation_grid", model, x).values


# -- load time ----------------------------------------------------------------------------------
def test_plugin_failing_at_import_is_named_and_the_rest_works(install, net):
    _, model = net
    with pytest.warns(PluginLoadWarning, match=DIST + r" failed at import: ImportError: no acme"):
        pm = install(_EntryPoint("acme_import", ImportError("no acme")))
    assert [(f.plugin.name, f.plugin.distribution, f.stage) for f in pm.failures] == [
        ("acme_import", "acme-plugins", "import")
    ]
    _works(model)


def test_plugin_failing_at_registration_is_named_and_the_rest_works(install, net):
    _, model = net
    module = types.ModuleType("acme_register")

    @hookimpl
    def innersight_register_techniques():
        raise KeyError("missing config")
        yield  # pragma: no cover

    module.innersight_register_techniques = innersight_register_techniques
    ok = technique("acme_ok", lambda m, x: heatmap("acme_ok", x[..., 0], x))
    pm = install(_EntryPoint("acme_register", module), _EntryPoint("acme_ok", plugin(ok)))
    with pytest.warns(PluginLoadWarning, match=DIST + r" failed at innersight_register_"):
        names = set(ins.techniques())
    assert {"saliency", "acme_ok"} <= names
    assert pm.failures[0].plugin.name == "acme_register"
    _works(model)
    assert ins.explain("acme_ok", model, batch()).technique == "acme_ok"


def test_strict_mode_raises_naming_the_plugin(install):
    with pytest.raises(PluginLoadError, match=DIST + r" failed at import: ImportError"):
        install(_EntryPoint("acme_import", ImportError("no acme")), strict=True)


def test_unregistered_technique_of_a_broken_plugin_is_not_found(install, net):
    _, model = net
    with pytest.warns(PluginLoadWarning):
        install(_EntryPoint("acme_import", ImportError("no acme")))
    with pytest.raises(TechniqueNotFoundError, match=r"no technique named 'acme_tech'"):
        ins.explain("acme_tech", model, batch())


def test_provider_lookup_does_not_repeat_registration_failures(install):
    module = types.ModuleType("acme_register")

    def broken():
        raise KeyError("missing config")

    module.innersight_register_techniques = hookimpl(broken)
    pm = install(_EntryPoint("acme_register", module))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginLoadWarning)
        pm.techniques()
        pm.provider("saliency")
        pm.provider("saliency")
    assert len(pm.failures) == 1


# -- explain time -------------------------------------------------------------------------------
def _crash(model: Any, inputs: np.ndarray) -> Any:
    return 1 / 0


def test_plugin_crashing_in_explain_is_a_plugin_error_naming_it(install, net):
    _, model = net
    install(_EntryPoint("acme_crash", plugin(technique("acme_crash", _crash))))
    with pytest.raises(
        PluginError,
        match=r"technique 'acme_crash' from " + DIST + r" raised ZeroDivisionError: division by "
        r"zero \(at .*test_plugins\.py:\d+\)\. This is a bug or limitation of that plugin",
    ) as info:
        ins.explain("acme_crash", model, batch())
    assert isinstance(info.value.__cause__, ZeroDivisionError)  # the original, with its traceback
    assert isinstance(info.value, InnersightError)
    _works(model)


def test_plugin_user_errors_and_interrupts_pass_unchanged(install, net):
    _, model = net

    def user_error(m: Any, x: np.ndarray) -> Any:
        raise InputError("acme needs 2 samples")

    def interrupted(m: Any, x: np.ndarray) -> Any:
        raise KeyboardInterrupt

    install(
        _EntryPoint("acme_user", plugin(technique("acme_user", user_error))),
        _EntryPoint("acme_int", plugin(technique("acme_int", interrupted))),
    )
    with pytest.raises(InputError, match=r"^acme needs 2 samples$"):
        ins.explain("acme_user", model, batch())
    with pytest.raises(KeyboardInterrupt):
        ins.explain("acme_int", model, batch())


def test_model_errors_inside_a_plugin_are_not_blamed_on_it(install, torch_small):
    # The adapter ran the model and the model raised: the plugin is not at fault.
    def forward(m: Any, x: np.ndarray) -> Any:
        return heatmap("acme_fwd", m.forward(x).outputs, x)

    install(_EntryPoint("acme_fwd", plugin(technique("acme_fwd", forward))))

    def hook(module: Any, args: Any, out: Any) -> None:
        raise ValueError("the model's own bug")

    handle = torch_small.fc1.register_forward_hook(hook)
    try:
        with pytest.raises(ValueError, match="the model's own bug"):
            ins.explain("acme_fwd", torch_small, batch())
    finally:
        handle.remove()


def test_builtin_bugs_stay_visible(install, net, monkeypatch):
    _, model = net
    install()
    saliency = type(ins.techniques()["saliency"])
    monkeypatch.setattr(
        saliency, "explain", lambda self, model, inputs, **kw: _crash(model, inputs)
    )
    with pytest.raises(ZeroDivisionError):
        ins.explain("saliency", model, batch())


# -- malformed results --------------------------------------------------------------------------
MALFORMED = [
    ("not_an_explanation", lambda x: {"values": x}, r"returned dict, not an Explanation"),
    ("none", lambda x: None, r"returned NoneType, not an Explanation"),
    ("nan", lambda x: heatmap("t", np.full(x.shape[:3], np.nan), x), r"returned 288 NaN/Inf value"),
    (
        "inf",
        lambda x: heatmap("t", np.where(x > 0.5, np.inf, 0.0), x),
        r"NaN/Inf value\(s\) in values",
    ),
    ("one_for_all", lambda x: heatmap("t", x[:1, ..., 0], x), r"returned 1 results for 2 inputs"),
    (
        "too_many",
        lambda x: heatmap("t", np.concatenate([x, x])[..., 0], x),
        r"returned 4 results for 2",
    ),
    ("scalar", lambda x: heatmap("t", 3.0, x), r"returned a scalar, not results for 2 inputs"),
    (
        "object",
        lambda x: heatmap("t", np.array([{"a": 1}] * len(x), dtype=object), x),
        r"returned values of dtype object \(ndarray\); expected numbers",
    ),
    ("strings", lambda x: heatmap("t", ["hot", "cold"], x), r"values of dtype <U4 \(list\)"),
    ("ragged", lambda x: heatmap("t", [x[0], x[1, :3]], x), r"values that is not an array"),
    (
        "meta_not_a_dict",
        lambda x: Explanation("t", "heatmap", x[..., 0], x, meta=["backend"]),
        r"an Explanation whose meta or params is not a dict",
    ),
    (
        "empty_mapping",
        lambda x: Explanation("t", "layer_grid", {}, x),
        r"no values \(an empty mapping\)",
    ),
    (
        "bad_layer",
        lambda x: Explanation("t", "layer_grid", {"ok": x, "conv": x[:1]}, x),
        r"returned 1 results for 2 inputs in values\['conv'\]",
    ),
]


@pytest.mark.parametrize(("case", "make", "match"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_results_are_caught_naming_the_plugin(install, net, case, make, match):
    _, model = net
    install(_EntryPoint("acme_bad", plugin(technique("acme_bad", lambda m, x: make(x)))))
    with pytest.raises(
        PluginError, match=r"technique 'acme_bad' from " + DIST + r" .*" + match + r".*report this"
    ):
        ins.explain("acme_bad", model, batch())
    _works(model)


def test_a_wellformed_plugin_result_passes(install, net):
    _, model = net
    install(
        _EntryPoint(
            "acme_ok", plugin(technique("acme_ok", lambda m, x: heatmap("acme_ok", x.sum(-1), x)))
        )
    )
    ex = ins.explain("acme_ok", model, batch())
    np.testing.assert_allclose(ex.values, batch().sum(-1))
    assert ex.meta["backend"] == net[0]

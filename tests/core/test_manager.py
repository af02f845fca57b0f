from __future__ import annotations

import subprocess
import sys
import types
from dataclasses import dataclass

import pytest

import innersight as ins
from innersight.core import Explanation, Technique, hookimpl, manager
from innersight.core.manager import InnersightPluginManager, PluginLoadWarning


@dataclass
class FakeDist:
    name: str
    version: str


class FakeEntryPoint:
    def __init__(self, name, target, dist=("fake-dist", "1.2.3")):
        self.name, self.value, self._target = name, f"fake.{name}", target
        self.dist = FakeDist(*dist)

    def load(self):
        if isinstance(self._target, Exception):
            raise self._target
        return self._target


def technique_plugin(tech_name):
    class T(Technique):
        name = tech_name
        summary = "test"

        def explain(self, model, inputs):
            return Explanation(self.name, "heatmap", inputs[..., 0], inputs)

    module = types.ModuleType(f"plugin_{tech_name}")

    @hookimpl
    def innersight_register_techniques():
        yield T()

    module.innersight_register_techniques = innersight_register_techniques
    return module


@pytest.fixture
def fresh(monkeypatch):
    """A manager with built-ins and the given fake entry points."""

    def make(*eps, **kw):
        monkeypatch.setattr(manager.metadata, "entry_points", lambda group: list(eps))
        pm = InnersightPluginManager(**kw)
        pm.load_builtins()
        pm.load_entry_points()
        return pm

    return make


def test_builtins_register_through_the_plugin_api(fresh):
    pm = fresh()
    assert {"saliency", "guided_backprop", "activation_grid"} <= set(pm.techniques())
    assert set(pm.renderers()) >= {"heatmap", "layer_grid", "image_set", "embedding"}
    assert pm.provider("saliency").name == "innersight.plugins.saliency"
    assert not pm.failures


def test_entry_point_plugin_is_found(fresh):
    pm = fresh(FakeEntryPoint("mine", technique_plugin("my_tech")))
    assert "my_tech" in pm.techniques()
    assert pm.provider("my_tech").distribution == "fake-dist"


def test_broken_plugin_is_a_warning_naming_the_distribution(fresh):
    with pytest.warns(
        PluginLoadWarning,
        match=r"plugin 'broken' \(fake-dist 1.2.3\) failed at import: ImportError: boom",
    ):
        pm = fresh(FakeEntryPoint("broken", ImportError("boom")))
    assert [f.plugin.name for f in pm.failures] == ["broken"]
    assert "saliency" in pm.techniques()  # the host keeps working


def test_strict_mode_raises(fresh):
    with pytest.raises(ins.PluginLoadError, match="plugin 'broken' .fake-dist 1.2.3. failed"):
        fresh(FakeEntryPoint("broken", ImportError("boom")), strict=True)


def test_plugin_raising_at_registration_is_isolated(fresh):
    module = types.ModuleType("bad_register")

    @hookimpl
    def innersight_register_techniques():
        raise RuntimeError("cannot register")
        yield  # pragma: no cover

    module.innersight_register_techniques = innersight_register_techniques
    pm = fresh(FakeEntryPoint("badreg", module))
    with pytest.warns(PluginLoadWarning, match="badreg.*cannot register"):
        techs = pm.techniques()
    assert "saliency" in techs


def test_plugin_yielding_a_non_technique_is_reported(fresh):
    module = types.ModuleType("wrong_type")
    module.innersight_register_techniques = hookimpl(lambda: [object()])
    pm = fresh(FakeEntryPoint("wrongtype", module))
    with pytest.warns(PluginLoadWarning, match="returned object, expected a Technique"):
        pm.techniques()


def test_unknown_hook_name_is_a_load_failure(fresh):
    module = types.ModuleType("typo")
    module.innersight_register_technique = hookimpl(lambda: [])
    with pytest.warns(PluginLoadWarning, match="typo|unknown hook"):
        pm = fresh(FakeEntryPoint("typo", module))
    assert pm.failures


def test_duplicate_technique_names_name_both_providers(fresh):
    pm = fresh(
        FakeEntryPoint("one", technique_plugin("dup"), ("dist-a", "1.0")),
        FakeEntryPoint("two", technique_plugin("dup"), ("dist-b", "2.0")),
    )
    with pytest.raises(
        ins.PluginConflictError,
        match=r"'dup' is provided twice: by plugin 'one' \(dist-a 1.0\) and by plugin 'two' \(dist-b 2.0\)",
    ):
        pm.techniques()


def test_conflict_with_a_builtin_is_detected_whatever_the_order(fresh):
    pm = fresh(FakeEntryPoint("shadow", technique_plugin("saliency")))
    with pytest.raises(ins.PluginConflictError, match="'saliency' is provided twice"):
        pm.techniques()


def test_disabled_plugins_env(fresh, monkeypatch):
    monkeypatch.setenv("INNERSIGHT_DISABLED_PLUGINS", "mine, saliency")
    pm = fresh(FakeEntryPoint("mine", technique_plugin("my_tech")))
    assert "my_tech" not in pm.techniques()
    assert "saliency" not in pm.techniques()
    assert "guided_backprop" in pm.techniques()


def test_disable_autoload_env(fresh, monkeypatch):
    monkeypatch.setenv("INNERSIGHT_DISABLE_PLUGIN_AUTOLOAD", "1")
    pm = fresh(FakeEntryPoint("mine", technique_plugin("my_tech")))
    assert "my_tech" not in pm.techniques()
    assert "saliency" in pm.techniques()


def test_runtime_registration_and_unregistration():
    pm = InnersightPluginManager(autoload=False)
    pm.load_builtins()
    pm.register(technique_plugin("late"), name="late")
    assert "late" in pm.techniques()
    pm.unregister("late")
    assert "late" not in pm.techniques()


def test_example_plugin_is_discovered_through_its_entry_point():
    from importlib import metadata

    dist = metadata.distribution("innersight-example-plugin")
    (ep,) = [ep for ep in dist.entry_points if ep.group == "innersight"]
    declared = {t.name for t in ep.load().innersight_register_techniques()}
    pm = ins.get_plugin_manager()
    found = {n for n in ins.techniques() if pm.provider(n).distribution == dist.name}
    assert declared and found == declared


def test_no_backend_for_an_unknown_model():
    with pytest.raises(
        ins.BackendNotFoundError, match="no backend accepts a model of type builtins.object"
    ):
        ins.wrap(object())


def test_import_innersight_imports_no_framework():
    code = "import sys, innersight; innersight.techniques(); print(sorted(m for m in ('torch','tensorflow','keras') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_registration_hooks_pass_only_the_arguments_an_implementation_declares() -> None:
    """pluggy's promise: a hookspec may gain arguments; implementations written before (with
    fewer) still work, and one asking for an argument the hook lacks is a load failure."""
    import pluggy

    from innersight.core.manager import _call_impl

    hookimpl = pluggy.HookimplMarker("demo")
    hookspec = pluggy.HookspecMarker("demo")

    class Spec:
        @hookspec
        def things(self, size):  # a spec that gained ``size``
            """Provide things."""

    class Old:
        @hookimpl
        def things(self):
            return ["old"]

    class New:
        @hookimpl
        def things(self, size):
            return [f"new {size}"]

    pm = pluggy.PluginManager("demo")
    pm.add_hookspecs(Spec)
    pm.register(Old())
    pm.register(New())
    got = [
        item for impl in pm.hook.things.get_hookimpls() for item in _call_impl(impl, {"size": 3})
    ]
    assert sorted(got) == ["new 3", "old"]
    with pytest.raises(TypeError, match="argument\\(s\\) size that the hook does not provide"):
        _call_impl(pm.hook.things.get_hookimpls()[-1], {})

"""The plugin manager: built-ins and third-party plugins through one door.

Built-in backends, techniques, metrics and renderers are ordinary plugin modules registered with
:meth:`InnersightPluginManager.register`, exactly as a third party's module is when it is found
in the ``innersight`` entry-point group. A plugin that fails to import or to register is
recorded in :attr:`~InnersightPluginManager.failures` and reported as a warning naming its
distribution and version; with ``strict=True`` (or ``INNERSIGHT_STRICT_PLUGINS=1``) it raises
:class:`PluginLoadError` instead.

Environment (as in pytest / tox):

* ``INNERSIGHT_DISABLE_PLUGIN_AUTOLOAD=1``: do not load entry-point plugins.
* ``INNERSIGHT_DISABLED_PLUGINS=a,b``: skip plugins by entry-point or built-in name.
"""

from __future__ import annotations

import importlib
import os
import threading
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pluggy

from innersight.core import hookspecs
from innersight.core.errors import (
    BackendNotFoundError,
    InnersightError,
    InputError,
    PluginConflictError,
    PluginLoadError,
)
from innersight.core.markers import ENTRY_POINT_GROUP, PROJECT_NAME
from innersight.core.metric import Metric
from innersight.core.render import Renderer
from innersight.core.technique import Technique

__all__ = [
    "BUILTIN_METRICS",
    "BUILTIN_PLUGINS",
    "InnersightPluginManager",
    "PluginFailure",
    "PluginInfo",
    "PluginLoadWarning",
    "get_plugin_manager",
    "reset_plugin_manager",
]

#: The built-in metric modules (one metric per module, like the techniques).
BUILTIN_METRICS: tuple[str, ...] = (
    "innersight.metrics.deletion",
    "innersight.metrics.insertion",
    "innersight.metrics.randomization",
    "innersight.metrics.data_randomization",
    "innersight.metrics.infidelity",
    "innersight.metrics.max_sensitivity",
    "innersight.metrics.completeness",
    "innersight.metrics.road",
    "innersight.metrics.agreement",
)

BUILTIN_PLUGINS: tuple[str, ...] = (
    "innersight.backends.torch",
    "innersight.backends.keras",
    "innersight.backends.function",
    "innersight.plugins.renderers",
    "innersight.plugins.activation_grid",
    "innersight.plugins.saliency",
    "innersight.plugins.guided_backprop",
    "innersight.plugins.occlusion",
    "innersight.plugins.smoothgrad",
    "innersight.plugins.integrated_gradients",
    "innersight.plugins.grad_cam",
    "innersight.plugins.filter_maximization",
    "innersight.plugins.class_maximization",
    "innersight.plugins.embeddings",
    "innersight.plugins.input_x_gradient",
    "innersight.plugins.deconvolution",
    "innersight.plugins.guided_grad_cam",
    "innersight.plugins.noise_tunnel",
    "innersight.plugins.gradient_shap",
    "innersight.plugins.grad_cam_plus_plus",
    "innersight.plugins.score_cam",
    "innersight.plugins.layer_cam",
    "innersight.plugins.eigen_cam",
    "innersight.plugins.feature_ablation",
    "innersight.plugins.kernel_shap",
    "innersight.plugins.lime",
    "innersight.plugins.layer_attribution_renderer",
    "innersight.plugins.layer_gradient_x_activation",
    "innersight.plugins.layer_conductance",
    "innersight.plugins.neuron_gradient",
    "innersight.plugins.neuron_integrated_gradients",
    "innersight.plugins.layer_integrated_gradients",
    "innersight.plugins.deeplift",
    "innersight.plugins.deeplift_shap",
    "innersight.plugins.lrp",
    *BUILTIN_METRICS,
)


def _call_impl(impl: Any, kwargs: dict[str, Any]) -> list[Any]:
    """``impl.function`` with the arguments it declares, its items as a list."""
    missing = [name for name in impl.argnames if name not in kwargs]
    if missing:
        raise TypeError(
            f"{impl.plugin_name} implements {impl.function.__name__} with argument(s) "
            f"{', '.join(missing)} that the hook does not provide"
        )
    return list(impl.function(**{name: kwargs[name] for name in impl.argnames}) or ())


class PluginLoadWarning(UserWarning):
    """A plugin failed to load; innersight goes on without it."""


@dataclass(frozen=True)
class PluginInfo:
    """Where a plugin comes from: its registered name and its distribution (if any)."""

    name: str
    distribution: str = "innersight"
    version: str = ""

    def __str__(self) -> str:
        dist = f"{self.distribution} {self.version}".strip()
        return f"plugin '{self.name}' ({dist})"


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded or registered, and why."""

    plugin: PluginInfo
    stage: str
    error: str

    def __str__(self) -> str:
        return f"{self.plugin} failed at {self.stage}: {self.error}"


def _env_list(name: str) -> set[str]:
    return {p.strip() for p in os.environ.get(name, "").split(",") if p.strip()}


def _innersight_version() -> str:
    try:
        return metadata.version("innersight")
    except metadata.PackageNotFoundError:
        return ""


class InnersightPluginManager:
    """Holds the registered plugins and answers the hooks with isolation and conflict checks."""

    def __init__(self, *, strict: bool | None = None, autoload: bool | None = None) -> None:
        self.pm = pluggy.PluginManager(PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        env_strict = os.environ.get("INNERSIGHT_STRICT_PLUGINS", "") not in ("", "0")
        self.strict = env_strict if strict is None else strict
        env_autoload = os.environ.get("INNERSIGHT_DISABLE_PLUGIN_AUTOLOAD", "") in ("", "0")
        self.autoload = env_autoload if autoload is None else autoload
        self.disabled = _env_list("INNERSIGHT_DISABLED_PLUGINS")
        self.failures: list[PluginFailure] = []
        self.infos: dict[str, PluginInfo] = {}
        self._techniques: dict[str, Technique] | None = None
        self._providers: dict[str, PluginInfo] = {}
        self._metrics: dict[str, Metric] | None = None
        self._metric_providers: dict[str, PluginInfo] = {}
        self._renderers: dict[str, Renderer] | None = None
        self._lock = threading.RLock()

    # -- loading -----------------------------------------------------------------------------
    def load_builtins(self) -> None:
        version = _innersight_version()
        for module_name in BUILTIN_PLUGINS:
            short = module_name.rsplit(".", 1)[-1]
            if {module_name, short} & self.disabled:
                continue
            info = PluginInfo(module_name, "innersight", version)
            self._guarded(
                info,
                "import",
                lambda m=module_name, i=info: self._register(importlib.import_module(m), i),
            )

    def load_entry_points(self) -> None:
        if not self.autoload:
            return
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in self.disabled or ep.value in self.disabled:
                continue
            dist = getattr(ep, "dist", None)
            info = PluginInfo(ep.name, dist.name if dist else "?", dist.version if dist else "")
            if self.pm.get_plugin(ep.name) is not None:
                continue
            self._guarded(info, "import", lambda ep=ep, info=info: self._register(ep.load(), info))

    def register(self, plugin: Any, name: str | None = None, *, distribution: str = "") -> None:
        """Register a plugin object or module at run time (the same call built-ins go through)."""
        name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        self._register(plugin, PluginInfo(name, distribution or "(registered at run time)"))

    def unregister(self, name: str) -> None:
        with self._lock:
            self.pm.unregister(name=name)
            self.infos.pop(name, None)
            self._techniques = self._renderers = self._metrics = None

    def _register(self, plugin: Any, info: PluginInfo) -> None:
        with self._lock:
            self.pm.register(plugin, name=info.name)
            try:
                self.pm.check_pending()
            except pluggy.PluginValidationError:
                self.pm.unregister(plugin)
                raise
            self.infos[info.name] = info
            self._techniques = self._renderers = self._metrics = None

    def _guarded(self, info: PluginInfo, stage: str, action: Any) -> Any:
        try:
            return action()
        except InnersightError:
            raise
        except Exception as err:
            failure = PluginFailure(info, stage, f"{type(err).__name__}: {err}")
            if self.strict:
                raise PluginLoadError(str(failure)) from err
            self.failures.append(failure)
            warnings.warn(str(failure), PluginLoadWarning, stacklevel=3)
            return None

    # -- hooks, one implementation at a time so one bad plugin cannot take the others down ----
    def _impls(self, hook_name: str) -> list[Any]:
        # pluggy calls implementations last-registered first, tryfirst ones before the rest.
        return list(reversed(getattr(self.pm.hook, hook_name).get_hookimpls()))

    def _info_for(self, impl: Any) -> PluginInfo:
        return self.infos.get(impl.plugin_name, PluginInfo(impl.plugin_name, "?"))

    def _collect(
        self, hook_name: str, expected: type, **kwargs: Any
    ) -> list[tuple[PluginInfo, Any]]:
        """Every implementation's items, each implementation called with just the hook
        arguments it declares (``impl.argnames``): a hookspec may gain arguments, as pluggy
        promises, without breaking plugins written before."""
        found: list[tuple[PluginInfo, Any]] = []
        for impl in self._impls(hook_name):
            info = self._info_for(impl)
            items = self._guarded(
                info, f"{hook_name}()", lambda impl=impl: _call_impl(impl, kwargs)
            )
            for item in items or ():
                if not isinstance(item, expected):
                    self._guarded(info, hook_name, lambda item=item: _raise_type(item, expected))
                    continue
                found.append((info, item))
        return found

    def techniques(self) -> dict[str, Technique]:
        """Every registered technique by name; PluginConflictError on duplicate names."""
        with self._lock:
            if self._techniques is None:
                items = self._collect("innersight_register_techniques", Technique)
                self._techniques = self._unique(items, "technique")
                # Remembered so that naming a plugin in an error never re-runs registration.
                self._providers = {tech.name: info for info, tech in items}
            return dict(self._techniques)

    def metrics(self) -> dict[str, Metric]:
        """Every registered metric by name; PluginConflictError on duplicate names."""
        with self._lock:
            if self._metrics is None:
                items = self._collect("innersight_register_metrics", Metric)
                self._metrics = self._unique(items, "metric")
                self._metric_providers = {metric.name: info for info, metric in items}
            return dict(self._metrics)

    def metric_provider(self, metric_name: str) -> PluginInfo:
        """The plugin that provides ``metric_name`` (KeyError when none does)."""
        self.metrics()
        with self._lock:
            return self._metric_providers[metric_name]

    def renderers(self) -> dict[str, Renderer]:
        """Every registered renderer by kind; PluginConflictError on duplicate kinds."""
        with self._lock:
            if self._renderers is None:
                self._renderers = self._unique(
                    self._collect("innersight_register_renderers", Renderer),
                    "renderer",
                    attr="kind",
                )
            return dict(self._renderers)

    def renderer(self, kind: str) -> Renderer:
        """The renderer registered for ``kind``; InputError naming the known kinds otherwise."""
        renderers = self.renderers()
        if kind not in renderers:
            raise InputError(
                f"no renderer for kind {kind!r}; known kinds: {', '.join(sorted(renderers))}. "
                "A plugin that makes a new kind registers its renderer with "
                "innersight_register_renderers"
            )
        return renderers[kind]

    def provider(self, technique_name: str) -> PluginInfo:
        """The plugin that provides ``technique_name`` (KeyError when none does)."""
        self.techniques()
        with self._lock:
            return self._providers[technique_name]

    @staticmethod
    def _unique(
        items: Iterable[tuple[PluginInfo, Any]], what: str, attr: str = "name"
    ) -> dict[str, Any]:
        seen: dict[str, tuple[PluginInfo, Any]] = {}
        for info, item in items:
            key = getattr(item, attr)
            if key in seen:
                first, second = sorted([seen[key][0], info], key=lambda i: i.name)
                raise PluginConflictError(
                    f"{what} {key!r} is provided twice: by {first} and by {second}; uninstall one, "
                    f"or disable one with INNERSIGHT_DISABLED_PLUGINS={first.name} "
                    f"(or {second.name})"
                )
            seen[key] = (info, item)
        return {k: v[1] for k, v in seen.items()}

    def wrap(self, model: Any, options: Mapping[str, Any]) -> Any:
        """The first backend's adapter for ``model``; BackendNotFoundError when none accepts it."""
        for impl in self._impls("innersight_wrap_model"):
            kwargs = {"model": model, "options": dict(options)}
            try:
                adapter = impl.function(**{k: kwargs[k] for k in impl.argnames})
            except InnersightError:
                raise
            except Exception as err:
                raise PluginLoadError(
                    f"{self._info_for(impl)} failed to wrap {type(model).__name__}: {err}"
                ) from err
            if adapter is not None:
                return adapter
        backends = [i.plugin_name for i in self._impls("innersight_wrap_model")]
        raise BackendNotFoundError(
            "no backend accepts a model of type "
            f"{type(model).__module__}.{type(model).__qualname__}; installed backends: "
            f"{', '.join(backends) or 'none'}. Pass a torch nn.Module, a built Keras 3 model "
            "(pip install 'innersight[torch]' or 'innersight[keras]') or a Python function from "
            "a numpy batch to scores, or install a backend plugin for your framework"
        )


def _raise_type(item: Any, expected: type) -> None:
    raise TypeError(f"returned {type(item).__name__}, expected a {expected.__name__} instance")


_manager: InnersightPluginManager | None = None
_manager_lock = threading.Lock()


def get_plugin_manager() -> InnersightPluginManager:
    """The process-wide manager, created (built-ins + entry points) on first use."""
    global _manager
    with _manager_lock:
        if _manager is None:
            manager = InnersightPluginManager()
            manager.load_builtins()
            manager.load_entry_points()
            _manager = manager
        return _manager


def reset_plugin_manager() -> None:
    """Forget the process-wide manager (tests; after changing the environment variables)."""
    global _manager
    with _manager_lock:
        _manager = None

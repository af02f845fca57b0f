"""Every hook specification of innersight.

Specs only ever gain arguments; an implementation may accept any subset of them (pluggy passes
only the arguments an implementation names). Implementations are decorated with
``innersight.core.hookimpl`` and live in a module or object that the plugin manager registers:
built-ins are registered by the manager, third parties through the ``innersight`` entry-point
group::

    # pyproject.toml of a third-party package
    [project.entry-points.innersight]
    my_plugin = "my_package.plugin"
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from innersight.core.markers import hookspec

if TYPE_CHECKING:
    from innersight.core.adapter import ModelAdapter
    from innersight.core.metric import Metric
    from innersight.core.render import Renderer
    from innersight.core.technique import Technique


@hookspec
def innersight_register_techniques() -> Iterable[Technique]:
    """Provide techniques. Every registered plugin is asked; names must be unique.

    Example::

        import numpy as np
        from innersight.core import Explanation, Technique, hookimpl, objectives

        class InputTimesGradient(Technique):
            name = "my_input_x_gradient"
            summary = "Input times the gradient of the target score, summed over channels."
            requires = frozenset({"input_gradients"})

            def explain(self, model, inputs, *, target=None):
                target = model.predict_classes(inputs) if target is None else target
                _, grads = model.value_and_grad(inputs, objectives.Logit(target))
                return Explanation(technique=self.name, kind="heatmap",
                                   values=(inputs * grads).sum(-1), inputs=inputs,
                                   params={"target": target})

        @hookimpl
        def innersight_register_techniques():
            yield InputTimesGradient()

    Returns:
        An iterable of :class:`~innersight.core.technique.Technique` instances. Two techniques
        with one name, from any two plugins, raise ``PluginConflictError`` naming both.
    """


@hookspec(firstresult=True)
def innersight_wrap_model(model: Any, options: Mapping[str, Any]) -> ModelAdapter | None:
    """Wrap a native model in a ModelAdapter, or return None when it is not yours.

    The first non-None answer wins. Import your framework only when it is already in
    ``sys.modules`` (a model of that framework cannot exist otherwise), so that
    ``import innersight`` stays cheap. Use ``tryfirst=True`` when your models are also instances
    of another backend's type (Keras-on-torch models are ``nn.Module``s).

    Example::

        import sys
        from innersight.core import hookimpl

        @hookimpl
        def innersight_wrap_model(model, options):
            if "jax" not in sys.modules or not hasattr(model, "apply"):
                return None
            from my_backend.adapter import JaxAdapter
            return JaxAdapter(model, **options)

    Args:
        model: whatever the user passed to ``innersight.wrap`` / ``innersight.explain``.
        options: keyword options given to ``wrap`` (e.g. ``input_layout``, ``logits``); reject
            unknown ones with an ``InputError``.

    Returns:
        A ModelAdapter, or None to let other backends try.
    """


@hookspec
def innersight_register_renderers() -> Iterable[Renderer]:
    """Provide renderers that turn an Explanation of a given ``kind`` into an RGB image.

    Example::

        import numpy as np
        from innersight.core import hookimpl
        from innersight.core.render import Renderer

        class BarsRenderer(Renderer):
            kind = "bars"

            def render(self, explanation, **options):
                v = np.asarray(explanation.values, dtype=float)[0]
                img = np.zeros((32, len(v), 3), np.uint8)
                h = (32 * (v - v.min()) / (np.ptp(v) or 1)).astype(int)
                for col, height in enumerate(h):
                    img[32 - height:, col] = 255
                return img

        @hookimpl
        def innersight_register_renderers():
            yield BarsRenderer()

    Returns:
        An iterable of :class:`~innersight.core.render.Renderer`; one renderer per ``kind``.
    """


@hookspec
def innersight_register_metrics() -> Iterable[Metric]:
    """Provide metrics: numbers that say how far an explanation can be trusted.

    Every registered plugin is asked; names must be unique across plugins (built-in metrics
    included). A metric scores a heatmap Explanation on a ModelAdapter and returns an
    :class:`~innersight.core.metric.Evaluation` with one score per input.

    Example::

        import numpy as np
        from innersight.core import hookimpl
        from innersight.core.metric import Evaluation, Metric, attribution_maps

        class Sparsity(Metric):
            name = "sparsity"
            summary = "Share of the total |attribution| held by the top 10% of the pixels."
            higher_is_better = True
            reference = "(an illustration)"

            def evaluate(self, model, explanation, *, top=0.1):
                maps = attribution_maps(explanation, absolute=True)
                flat = np.sort(maps.reshape(len(maps), -1), axis=1)[:, ::-1]
                k = max(1, int(top * flat.shape[1]))
                total = flat.sum(axis=1)
                share = np.divide(flat[:, :k].sum(axis=1), total,
                                  out=np.full(len(flat), np.nan), where=total > 0)
                return Evaluation(metric=self.name, scores=share, params={"top": top})

        @hookimpl
        def innersight_register_metrics():
            yield Sparsity()

    Returns:
        An iterable of :class:`~innersight.core.metric.Metric` instances. Two metrics with one
        name, from any two plugins, raise ``PluginConflictError`` naming both; anything that is
        not a Metric is a load failure of that plugin (a warning; strict mode raises).
    """

"""Metric (what metric plugins implement) and Evaluation (the one result type of a metric).

A metric says how far an Explanation can be trusted: how faithful it is to the model (deletion,
insertion, infidelity, ROAD, completeness), whether it depends on the model at all (model
randomization), how stable it is (max-sensitivity), or how far two explanations agree. Metrics
are plugins, registered through ``innersight_register_metrics`` exactly like techniques, and
written against this module and the rest of :mod:`innersight.core` only.

The helpers below are the public toolkit of metric authors: :func:`attribution_maps` (the
per-pixel attributions of a heatmap Explanation), :func:`explained_targets` (the classes it
explains) and :func:`explain_again` (the same technique, with the same parameters, on other
inputs or another model).
"""

from __future__ import annotations

import inspect
import json
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from innersight.core.errors import InputError, TechniqueNotFoundError, did_you_mean
from innersight.core.technique import Explanation, resolve_target, to_jsonable

if TYPE_CHECKING:
    from innersight.core.adapter import ModelAdapter

__all__ = [
    "Curve",
    "Evaluation",
    "Metric",
    "attribution_maps",
    "explain_again",
    "explained_targets",
]


class Metric:
    """Base class of every metric, built-in or third-party.

    Subclasses set ``name`` (snake_case), ``summary``, ``requires`` (adapter capabilities),
    ``higher_is_better`` (True, False, or None when neither), ``reference`` (the paper that
    defines it) and ``kinds`` (the Explanation kinds it can evaluate), and implement
    ``evaluate(model, explanation, *, ...)`` with keyword-only, typed, defaulted parameters (the
    CLI reads them from the signature). ``model`` is a ModelAdapter and ``explanation`` an
    Explanation that holds its ``inputs``. Never import a framework here.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    requires: ClassVar[frozenset[str]] = frozenset()
    higher_is_better: ClassVar[bool | None] = None
    reference: ClassVar[str] = ""
    kinds: ClassVar[frozenset[str]] = frozenset({"heatmap"})

    # Declared with ``*args``/``**params`` so that subclasses' keyword-only signatures are valid
    # overrides (as Technique.explain).
    def evaluate(
        self, model: ModelAdapter, explanation: Explanation, /, *args: Any, **params: Any
    ) -> Evaluation:
        """Score ``explanation`` of ``model``: one score per input, in an Evaluation."""
        raise NotImplementedError

    def parameters(self) -> dict[str, inspect.Parameter]:
        """The keyword-only parameters of ``evaluate``, by name."""
        sig = inspect.signature(self.evaluate)
        return {
            p.name: p for p in sig.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY
        }

    def __repr__(self) -> str:
        return f"<Metric {self.name!r}: {self.summary}>"


@dataclass(repr=False)
class Curve:
    """One curve per input, sampled at shared positions.

    Attributes:
        x: (K,) positions, e.g. the fraction of pixels deleted, or 0..L randomised layers.
        y: (N, K) values, one row per input.
        x_label, y_label: axis titles.
        ticks: names of the K positions (e.g. the layers randomised so far); empty when the
            positions speak for themselves.
    """

    x: np.ndarray
    y: np.ndarray
    x_label: str = ""
    y_label: str = ""
    ticks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.x = np.asarray(self.x, dtype=np.float64)
        self.y = np.atleast_2d(np.asarray(self.y, dtype=np.float64))
        if self.y.shape[1] != self.x.shape[0]:
            raise InputError(f"a curve has {self.x.shape[0]} positions but y is {self.y.shape}")
        self.ticks = tuple(str(t) for t in self.ticks)

    def mean(self) -> np.ndarray:
        """The (K,) mean over inputs, NaNs ignored."""
        return _nan_reduce(np.nanmean, self.y)

    def std(self) -> np.ndarray:
        """The (K,) standard deviation over inputs (ddof 0), NaNs ignored."""
        return _nan_reduce(np.nanstd, self.y)


def _nan_reduce(fn: Any, y: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        if np.isnan(y).all(axis=0).any():  # nanmean warns on all-NaN columns
            return np.array([fn(c) if not np.isnan(c).all() else math.nan for c in y.T])
        return np.asarray(fn(y, axis=0))


@dataclass(repr=False)
class Evaluation:
    """The result of a metric on one explanation: one score per input, plus its curves.

    Attributes:
        metric: the metric's name.
        scores: (N,) float64, one number per input (NaN where undefined, e.g. the rank
            correlation of a constant map).
        curves: named curves (deletion: the score as pixels go; randomization: the similarity
            per randomised layer), each with one row per input.
        params: the parameters the metric ran with.
        meta: technique, backend, model, ``higher_is_better``, ``reference``, timings, and
            metric-specific facts.
    """

    metric: str
    scores: np.ndarray
    curves: dict[str, Curve] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def summary(self) -> dict[str, float]:
        """``n`` (inputs with a score), ``mean``, ``std`` (ddof 0), ``median``, ``min``, ``max``
        of the scores, NaNs left out (all NaN when no input has a score)."""
        finite = self.scores[~np.isnan(self.scores)]
        if finite.size == 0:
            nan = math.nan
            return {"n": 0.0, "mean": nan, "std": nan, "median": nan, "min": nan, "max": nan}
        return {
            "n": float(finite.size),
            "mean": float(finite.mean()),
            "std": float(finite.std()),
            "median": float(np.median(finite)),
            "min": float(finite.min()),
            "max": float(finite.max()),
        }

    def describe(self) -> str:
        """One line: ``deletion of saliency: 0.123 ± 0.045 over 4 inputs (lower is better)``."""
        s = self.summary()
        technique = self.meta.get("technique")
        what = f"{self.metric} of {technique}" if technique else self.metric
        direction = self.meta.get("higher_is_better")
        better = ""
        if direction is True or direction is False:
            better = " (higher is better)" if direction else " (lower is better)"
        if s["n"] == 0:
            return f"{what}: undefined for all {len(self)} inputs"
        return f"{what}: {s['mean']:.4g} ± {s['std']:.2g} over {int(s['n'])} inputs{better}"

    # -- rendering (core.evaluation_render draws; Pillow and matplotlib optional) --------------
    def to_image(self, **options: Any) -> np.ndarray:
        """Render the curves (or the scores, for metrics without curves) to (H, W, 3) uint8."""
        from innersight.core.evaluation_render import render_evaluation

        return render_evaluation(self, **options)

    def to_pil(self, **options: Any) -> Any:
        """Render to a ``PIL.Image`` (needs Pillow: ``pip install innersight[viz]``)."""
        from innersight.core.render import to_pil

        return to_pil(self.to_image(**options))

    def plot(self, ax: Any = None, **options: Any) -> Any:
        """A matplotlib Figure of the curves (mean ± std, and each input), or of the scores."""
        from innersight.core.evaluation_render import plot_evaluation

        return plot_evaluation(self, ax=ax, **options)

    def _repr_png_(self) -> bytes:
        from innersight.core.render import png_bytes

        return png_bytes(self.to_image())

    def _repr_html_(self) -> str:
        """Jupyter: the summary line, a table of the scores per input, and the curves."""
        from innersight.core.evaluation_render import evaluation_html

        return evaluation_html(self)

    def __repr__(self) -> str:
        return f"<Evaluation {self.describe()}>"

    # -- persistence ------------------------------------------------------------------------
    def save(self, path: str | Path, **options: Any) -> Path:
        """Write ``.png`` (rendered), ``.npz`` (scores, curves + JSON header) or ``.json``."""
        path = Path(path)
        suffix = path.suffix.lower()
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".png":
            from innersight.core.render import png_bytes

            path.write_bytes(png_bytes(self.to_image(**options)))
        elif suffix == ".npz":
            arrays = {"scores": self.scores}
            for name, curve in self.curves.items():
                arrays[f"curves/{name}/x"], arrays[f"curves/{name}/y"] = curve.x, curve.y
            arrays["__meta__"] = np.frombuffer(self._header().encode(), dtype=np.uint8)
            np.savez_compressed(path, **arrays)  # type: ignore[arg-type]
        elif suffix == ".json":
            path.write_text(self._header(indent=2, with_scores=True))
        else:
            raise InputError(f"cannot save {path.name!r}: use a .png, .npz or .json file name")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Evaluation:
        """Read an Evaluation written by ``save(... .npz)``."""
        with np.load(Path(path), allow_pickle=False) as data:
            header = json.loads(bytes(data["__meta__"]).decode())
            arrays = {k: data[k] for k in data.files if k != "__meta__"}
        curves = {
            name: Curve(
                arrays[f"curves/{name}/x"],
                arrays[f"curves/{name}/y"],
                info.get("x_label", ""),
                info.get("y_label", ""),
                tuple(info.get("ticks", ())),
            )
            for name, info in header.get("curves", {}).items()
        }
        return cls(header["metric"], arrays["scores"], curves, header["params"], header["meta"])

    def _header(self, indent: int | None = None, with_scores: bool = False) -> str:
        head: dict[str, Any] = {"metric": self.metric, "summary": self.summary()}
        if with_scores:
            head["scores"] = self.scores.tolist()
        head["curves"] = {
            name: {"x_label": c.x_label, "y_label": c.y_label, "ticks": list(c.ticks)}
            | ({"x": c.x.tolist(), "y": c.y.tolist()} if with_scores else {})
            for name, c in self.curves.items()
        }
        head["params"] = to_jsonable(self.params)
        head["meta"] = to_jsonable(self.meta)
        return json.dumps(_strict(head), indent=indent)


def _strict(obj: Any) -> Any:
    """NaN and infinities as None: strict JSON, readable by any parser."""
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_strict(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# -- the toolkit of metric authors -------------------------------------------------------------
def attribution_maps(
    explanation: Explanation, *, channels: bool = False, absolute: bool = False
) -> np.ndarray:
    """The attributions of a ``heatmap`` Explanation, at the inputs' resolution, float64.

    Args:
        explanation: a heatmap Explanation with its ``inputs``.
        channels: True: (N, H, W, C), a map without channels spread evenly over them; False:
            (N, H, W), the sum over channels (a pixel's total attribution).
        absolute: take ``|value|`` first (rank by magnitude, whatever the sign).

    Raises:
        InputError: another kind of Explanation, no inputs, or maps of another size.
    """
    x = _inputs_of(explanation)
    if explanation.kind != "heatmap" or isinstance(explanation.values, Mapping):
        raise InputError(
            f"metrics evaluate per-pixel attribution maps (kind 'heatmap'); technique "
            f"{explanation.technique!r} gives kind {explanation.kind!r}: evaluate saliency, "
            "occlusion, integrated_gradients, grad_cam or another heatmap technique"
        )
    values = np.asarray(explanation.values, dtype=np.float64)
    spatial = x.shape[1:-1] if x.ndim >= 3 else x.shape[1:]
    full = values.shape[1:] == x.shape[1:]
    if not (full or values.shape[1:] == spatial) or len(values) != len(x):
        raise InputError(
            f"technique {explanation.technique!r} gave maps of shape {values.shape} for inputs "
            f"{x.shape}; metrics need one map per input at the inputs' resolution, "
            f"{(len(x), *spatial)} or {x.shape}"
        )
    if absolute:
        values = np.abs(values)
    if channels:
        return values if full or x.ndim < 3 else np.repeat(values[..., None], x.shape[-1], -1)
    return values.sum(axis=-1) if full and x.ndim >= 3 else values


def _inputs_of(explanation: Explanation) -> np.ndarray:
    if not isinstance(explanation, Explanation):
        raise InputError(
            f"expected an Explanation, got {type(explanation).__name__}; run "
            "innersight.explain(...) first, or pass a technique name and inputs"
        )
    if explanation.inputs is None:
        raise InputError(
            f"the {explanation.technique!r} Explanation holds no inputs, which metrics need; "
            "use the Explanation returned by innersight.explain (or Explanation.load of its .npz)"
        )
    return np.asarray(explanation.inputs, dtype=np.float32)


def explained_targets(explanation: Explanation, model: ModelAdapter) -> np.ndarray:
    """(N,) int64: the class each map explains (``meta``/``params`` ``"target"``), else the
    class the model predicts for each input."""
    x = _inputs_of(explanation)
    target = explanation.meta.get("target", explanation.params.get("target"))
    return resolve_target(model, x, target)


def explain_again(
    explanation: Explanation,
    model: ModelAdapter,
    inputs: np.ndarray | None = None,
    **overrides: Any,
) -> Explanation:
    """Run the technique that made ``explanation`` again, with its parameters, on ``model`` and
    ``inputs`` (default: its own inputs); ``overrides`` replace parameters.

    Parameters (recorded or overriding) that the technique does not take are dropped:
    ``params`` may record derived facts, and a metric may pass ``target=`` to every technique;
    ``progress`` is switched off. Warnings the technique raises are collected, not shown, in
    ``meta["rerun_warnings"]`` of the result. Used by metrics that perturb the inputs
    (max-sensitivity) or the model (randomization).

    Raises:
        TechniqueNotFoundError: the technique is not registered (any more).
        InputError: it gave a different number of maps than inputs.
    """
    from innersight.core.manager import get_plugin_manager

    registry = get_plugin_manager().techniques()
    tech = registry.get(explanation.technique)
    if tech is None:
        raise TechniqueNotFoundError(
            f"this metric re-runs technique {explanation.technique!r}, which is not registered; "
            f"registered: {', '.join(sorted(registry))}"
            f"{did_you_mean(explanation.technique, registry)}. Install its plugin"
        )
    x = _inputs_of(explanation) if inputs is None else np.asarray(inputs, dtype=np.float32)
    valid = tech.parameters()
    params = {k: v for k, v in explanation.params.items() if k in valid}
    params.update({k: v for k, v in overrides.items() if k in valid})
    if "progress" in valid:
        params["progress"] = False
    with warnings.catch_warnings(record=True) as caught:
        # A technique's warnings about a perturbed input or a randomised model (e.g. a
        # quadrature that does not converge there) are facts of the metric, not news for the
        # user: they go to meta["rerun_warnings"].
        warnings.simplefilter("always")
        result = tech.run(model, x, **params)
    values: Any = getattr(result, "values", None)
    if not isinstance(result, Explanation) or np.shape(values)[:1] != (len(x),):
        raise InputError(
            f"technique {tech.name!r} gave {np.shape(values)} values for {len(x)} inputs when "
            "run again; a metric needs one map per input"
        )
    if caught:
        result.meta["rerun_warnings"] = sorted({str(w.message) for w in caught})
    return result

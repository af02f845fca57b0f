"""Noise tunnel (Captum's ``NoiseTunnel``): any attribution technique averaged over noisy copies.

Each input ``x`` gets ``nt_samples`` copies ``x + N(0, stdevs^2)`` (``stdevs`` is an absolute
standard deviation, as in Captum, not a fraction of the range as in ``smoothgrad``); the
``base`` technique explains the copies, and with ``a_k`` the base's map of copy ``k``:

* ``nt_type="smoothgrad"``: ``mean_k a_k`` (SmoothGrad, Smilkov et al., 2017);
* ``nt_type="smoothgrad_sq"``: ``mean_k a_k ** 2`` (SmoothGrad-Squared, Hooker et al., 2019);
* ``nt_type="vargrad"``: ``mean_k a_k ** 2 - (mean_k a_k) ** 2`` (VarGrad, Adebayo et al.,
  2018).

The base is any registered technique, by name, whose ``explain`` returns one map per input
(kind ``"heatmap"``): saliency, input_x_gradient, integrated_gradients, guided_backprop,
deconvolution, guided_grad_cam, or a third-party plugin's technique: nothing here knows which.
All ``N * nt_samples`` copies stream through :class:`~innersight.core.BatchPlanner`, and each
chunk of copies is ONE call of the base technique (``base.run(model, copies, target=...,
**base_params)``), never one call per copy. Copy ``k`` of input ``i`` draws its noise from
``numpy.random.default_rng([seed, i, k])``; sums are accumulated in float64 in a fixed order, so
for a deterministic base the result does not depend on ``batch_size``. A base that draws random
numbers itself gets a seed per chunk derived from ``seed`` (unless ``base_params`` sets one).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from innersight.core import (
    BatchPlanner,
    Explanation,
    InputError,
    ModelAdapter,
    PresetContext,
    ProgressArg,
    Technique,
    TechniqueNotFoundError,
    bytes_per_sample,
    get_plugin_manager,
    hookimpl,
    missing_capabilities,
    require_capabilities,
    resolve_targets,
    validate,
)
from innersight.core.errors import did_you_mean
from innersight.core.targets import TargetArg, Targets
from innersight.plugins._gradients import chunk_seed, copy_generator
from innersight.plugins._presets import only_set

NT_TYPES = ("smoothgrad", "smoothgrad_sq", "vargrad")
DEFAULT_BASE = "saliency"


def noisy_copies(
    inputs: np.ndarray, owner: np.ndarray, copy: np.ndarray, stdevs: float, seed: int
) -> np.ndarray:
    """Row ``r``: ``inputs[owner[r]]`` plus its noise, drawn (float32) from
    ``default_rng([seed, owner[r], copy[r]])``."""
    batch = inputs[owner].astype(np.float32)
    if stdevs > 0:
        for row, (i, k) in enumerate(zip(owner, copy, strict=True)):
            noise = stdevs * copy_generator(seed, i, k).standard_normal(inputs.shape[1:])
            batch[row] += noise.astype(np.float32)
    return batch


def find_base(name: Any) -> Technique:
    """The registered technique ``name`` that noise_tunnel can run over."""
    if not isinstance(name, str):
        raise InputError(
            f"base must be a technique's name (str), got {type(name).__name__}; pass e.g. "
            "base='saliency'"
        )
    registry = get_plugin_manager().techniques()
    if name not in registry:
        raise TechniqueNotFoundError(
            f"noise_tunnel: no technique named {name!r} to use as base; available: "
            f"{', '.join(sorted(registry))}{did_you_mean(name, registry)}"
        )
    tech = registry[name]
    if not tech.needs_inputs or tech.accepts_datasets:
        raise InputError(
            f"noise_tunnel: base={name!r} does not explain a batch of inputs one map per input; "
            "use an attribution technique, e.g. base='saliency' or base='integrated_gradients'"
        )
    return tech


def check_base_params(tech: Technique, params: Any) -> dict[str, Any]:
    """``params`` as a dict of parameters ``tech`` takes, ``target`` excepted."""
    if params is None:
        return {}
    if not isinstance(params, Mapping) or not all(isinstance(k, str) for k in params):
        raise InputError(
            f"base_params must be a dict of the base technique's parameters, got "
            f"{type(params).__name__}; pass e.g. base_params={{'reduce_channels': None}}"
        )
    valid = tech.parameters()
    for key in params:
        if key == "target":
            raise InputError(
                "base_params must not set 'target': pass target= to noise_tunnel itself, which "
                "gives every noisy copy the target of its input"
            )
        if key not in valid:
            raise InputError(
                f"base_params: technique {tech.name!r} has no parameter {key!r}; valid "
                f"parameters: {', '.join(k for k in valid if k != 'target') or 'none'}"
                f"{did_you_mean(key, valid)}"
            )
    return dict(params)


def smooth(total: np.ndarray, total_sq: np.ndarray, samples: int, nt_type: str) -> np.ndarray:
    """The noise tunnel's statistic from the float64 sums over each input's copies."""
    mean, mean_sq = total / samples, total_sq / samples
    if nt_type == "smoothgrad":
        return mean
    if nt_type == "smoothgrad_sq":
        return mean_sq
    return mean_sq - mean * mean


class NoiseTunnel(Technique):
    """A base technique's maps averaged (or their spread measured) over noisy input copies."""

    name = "noise_tunnel"
    summary = "Any attribution averaged over noisy copies: SmoothGrad, SmoothGrad², VarGrad."
    requires = frozenset({"forward"})
    input_kinds = frozenset({"image", "sequence", "tabular", "several"})
    order = 45

    def presets(self, ctx: PresetContext) -> dict[str, Any]:
        """Parameters for reports (``"report"``) and ``compare --all`` (``"quick"``)."""
        return only_set(nt_samples={"report": 10, "quick": 8}.get(ctx.profile))

    def missing_capabilities(self, adapter: ModelAdapter) -> list[str]:
        """What the adapter lacks for noise_tunnel with its default base (saliency)."""
        needs = set(self.requires)
        base = get_plugin_manager().techniques().get(DEFAULT_BASE)
        if base is not None:
            needs |= set(base.requires)
        return missing_capabilities(needs, adapter)

    def explain(
        self,
        model: ModelAdapter,
        inputs: np.ndarray,
        *,
        base: str = DEFAULT_BASE,
        base_params: Mapping[str, Any] | None = None,
        target: TargetArg = None,
        nt_type: str = "smoothgrad",
        nt_samples: int = 25,
        stdevs: float = 0.15,
        seed: int | None = 0,
        batch_size: int | str = "auto",
        progress: ProgressArg = None,
    ) -> Explanation:
        """Run the base technique on noisy copies of each input and smooth its maps.

        Args:
            base: the technique to smooth, by name (any registered technique that returns one
                map per input: "saliency", "input_x_gradient", "integrated_gradients", ...).
            base_params: the base technique's own parameters (not ``target``), e.g.
                ``{"reduce_channels": None}``.
            target: class per sample (an int, one int per sample, or None: the predicted class of
                the clean input), or a score function of the scores (see
                ``innersight.core.targets``); every copy of an input explains its input's
                target.
            nt_type: "smoothgrad" (mean), "smoothgrad_sq" (mean of squares) or "vargrad"
                (variance) of the base's maps over the copies.
            nt_samples: noisy copies per input.
            stdevs: standard deviation of the Gaussian noise, in the inputs' own units (absolute,
                as Captum's ``stdevs``); 0 repeats the base's map.
            seed: seed of the noise; None draws one (recorded in ``meta["seed"]``).
            batch_size: copies per call of the base technique, or "auto" (timed, under the
                memory budget).
            progress: None (a bar on a terminal), True, False, or a ``callback(done, total)``.
        """
        tech = find_base(base)
        extra = check_base_params(tech, base_params)
        require_capabilities(f"noise_tunnel's base technique {base!r}", tech.requires, model)
        validate.choice("nt_type", nt_type, NT_TYPES)
        samples = validate.positive_int("nt_samples", nt_samples, example=25)
        sigma = validate.number("stdevs", stdevs, low=0.0, example=0.15)
        seed = validate.seed(seed)
        targets = resolve_targets(model, inputs, target)
        run = _Runner(model, inputs, tech, extra, targets, samples, sigma, seed)
        layer_shapes = [info.output_shape for info in model.layers()]
        BatchPlanner().map(
            run,
            len(inputs) * samples,
            per_sample=bytes_per_sample(inputs.shape[1:], layer_shapes, grads=True),
            batch_size=batch_size,
            key=("noise_tunnel", base, model.backend, model.name, inputs.shape[1:]),
            progress=progress,
            desc=f"{self.name}({base})",
        )
        values = run.statistic(nt_type).astype(np.float32)
        return Explanation(
            technique=self.name,
            kind="heatmap",
            values=values,
            inputs=inputs,
            params={
                "base": base,
                "base_params": extra,
                "target": targets.for_meta(),
                "nt_type": nt_type,
                "nt_samples": samples,
                "stdevs": sigma,
                "seed": seed,
            },
            meta={"base": base, "target": targets.for_meta(), "seed": seed, "stdevs": sigma},
        )


class _Runner:
    """Explains one chunk of noisy copies with one call of the base; sums the maps per input."""

    def __init__(
        self,
        model: ModelAdapter,
        inputs: np.ndarray,
        tech: Technique,
        params: dict[str, Any],
        targets: Targets,
        samples: int,
        stdevs: float,
        seed: int,
    ) -> None:
        self.model, self.inputs, self.tech, self.params = model, inputs, tech, params
        self.targets, self.samples, self.stdevs, self.seed = targets, samples, stdevs, seed
        self.takes = tech.parameters()
        self.total: np.ndarray | None = None  # (N, *map shape) float64, once a map is seen
        self.total_sq: np.ndarray | None = None

    def __call__(self, start: int, stop: int) -> np.ndarray:
        items = np.arange(start, stop)
        owner, copy = items // self.samples, items % self.samples
        batch = noisy_copies(self.inputs, owner, copy, self.stdevs, self.seed)
        params: dict[str, Any] = {"progress": False, "seed": chunk_seed(self.seed, start)}
        if "target" in self.takes:
            params["target"] = self.targets.argument(owner)
        maps = self._maps(self.tech.run(self.model, batch, **{**params, **self.params}), batch)
        if self.total is None or self.total_sq is None:
            shape = (len(self.inputs), *maps.shape[1:])
            self.total, self.total_sq = np.zeros(shape), np.zeros(shape)
        np.add.at(self.total, owner, maps)  # in item order, whatever the chunking
        np.add.at(self.total_sq, owner, np.square(maps))
        return np.zeros(len(items))

    def statistic(self, nt_type: str) -> np.ndarray:
        """The noise tunnel's ``nt_type`` statistic once every copy has been explained."""
        if self.total is None or self.total_sq is None:
            raise RuntimeError("noise_tunnel: no noisy copy was explained")  # nt_samples >= 1
        return smooth(self.total, self.total_sq, self.samples, nt_type)

    def _maps(self, result: Any, batch: np.ndarray) -> np.ndarray:
        values = getattr(result, "values", None)
        kind = getattr(result, "kind", None)
        if kind != "heatmap" or not isinstance(values, np.ndarray) or len(values) != len(batch):
            shape = np.shape(values) if isinstance(values, np.ndarray) else type(values).__name__
            raise InputError(
                f"noise_tunnel: base technique {self.tech.name!r} returned kind {kind!r} with "
                f"values {shape} for {len(batch)} inputs; noise_tunnel smooths techniques "
                "that return one map per input (kind 'heatmap'), e.g. base='saliency'"
            )
        return np.asarray(values, dtype=np.float64)


@hookimpl
def innersight_register_techniques() -> Any:
    yield NoiseTunnel()

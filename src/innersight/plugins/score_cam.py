"""Score-CAM (Wang et al., 2020): each activation map, as a mask on the input, scored.

For a spatial layer with activations ``A`` (h, w, C) and the target score ``y``:

    M_c       = minmax(upsample(A_c))                 # (H, W) in [0, 1]
    s_c       = y(x * M_c)                            # the input masked by channel c
    weights   = softmax over c of s_c
    cam       = relu(sum_c weights_c * A_c)

pytorch-grad-cam's ``ScoreCAM``, exactly: its masks are upsampled bilinearly with the corners
aligned (``torch.nn.UpsamplingBilinear2d``) and min-max normalised with ``1e-8`` in the
denominator; each masked input is scored by the raw target output (a logit for torch models)
and the softmax is taken over the channels. The paper's baseline score ``y(0)`` is left out as
there: softmax over channels does not change when every score moves by the same amount.
``score="probability"`` scores with the softmax over classes instead (the paper's choice).

No gradients: one forward pass for the activations, then ``N x C`` masked inputs, one stream
scored by batched forwards in chunks under the memory budget
(:class:`~innersight.core.BatchPlanner`): pytorch-grad-cam runs one loop per input and chunks
of 16. ``max_channels=k`` scores only the k channels whose maps vary most (largest variance
over the map, per input; Faster Score-CAM's choice), the softmax taken over those; the others
get weight 0. Layer, token ``reshape``, upsampling of the map and ``meta`` follow Grad-CAM
(:mod:`innersight.plugins.grad_cam`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from innersight.core import (
    LOGITS,
    BatchPlanner,
    Explanation,
    InputError,
    LayerNotFoundError,
    ModelAdapter,
    PresetContext,
    ProgressArg,
    Technique,
    bytes_per_sample,
    hookimpl,
    resolve_targets,
    validate,
)
from innersight.core.targets import TargetArg, Targets
from innersight.plugins._cam import (
    activation_grids,
    align_corners_matrix,
    cam_explanation,
    cam_params,
    check_arguments,
    choose_layer,
)
from innersight.plugins._tokens import ReshapeArg

SCORES = ("logit", "probability")
#: Channels scored per input by the presets (``"full"``: a bound for very wide layers only).
PRESET_CHANNELS = {"report": 32, "quick": 16, "full": 256}
#: pytorch-grad-cam's constant in the masks' min-max normalisation.
MASK_EPS = 1e-8


class ScoreCAM(Technique):
    """Where the target's evidence sits, from the scores of the input masked by each map."""

    name = "score_cam"
    summary = "Activation maps as input masks, weighted by the target's score (Score-CAM)."
    requires = frozenset({"forward", "layer_taps"})
    input_kinds = frozenset({"image"})
    order = 76

    def presets(self, ctx: PresetContext) -> dict[str, Any]:
        """At most 32 channels per input in reports, 16 in ``compare --all``, 256 in full."""
        return {"max_channels": PRESET_CHANNELS[ctx.profile]}

    def explain(
        self,
        model: ModelAdapter,
        inputs: np.ndarray,
        *,
        layer: str | None = None,
        target: TargetArg = None,
        relu: bool = True,
        reshape: ReshapeArg = None,
        score: str = "logit",
        max_channels: int | None = None,
        batch_size: int | str = "auto",
        progress: ProgressArg = None,
    ) -> Explanation:
        """Weight activation maps by the target score of the input each one masks.

        Args:
        layer: a layer with a spatial (H, W, C) output, or tokens (see ``reshape``); None
            (default) picks Grad-CAM's default layer (``meta["layer_rule"]`` says which).
        target: class per sample (an int, one int per sample, or None: the predicted class),
            or a score function of the scores, called on numpy arrays (see
            ``innersight.core.targets``; with ``score="probability"`` it receives the softmax
            over the last axis, the classes).
        relu: keep only positive evidence (pytorch-grad-cam does); False gives the signed map.
        reshape: tokens (N, T, D) to a grid (N, h, w, D), as Grad-CAM's: None (auto), True,
            False or a callable applied to the activations.
        score: what scores a masked input: "logit" (the adapter's logits tap: the
            pre-activation of a final softmax/sigmoid where it finds one, else the outputs,
            as pytorch-grad-cam) or "probability" (softmax over the classes of that score).
        max_channels: score only this many channels per input, those whose maps vary most;
            None scores every channel.
        batch_size: masked inputs per forward, or "auto" (timed, within the memory budget).
        progress: None (a bar on a terminal), False (silent), True, or a callback(done, total).

        Returns:
            A ``heatmap`` Explanation, values (N, H, W) float32; ``meta``: ``layer``,
            ``layer_rule``, ``reshape``, ``target``, ``score`` (the unmasked inputs' scores),
            ``score_source``, ``channels`` (N, K: the channels scored), ``channel_scores``
            (N, K), ``weights`` (N, C; 0 for channels not scored), ``masked_inputs``
            (N * K), ``forwards`` (the batched forwards that scored them; the activations
            take one more, ``target=None`` another), ``batch_size`` and ``cam`` (N, h, w).
        """
        relu = check_arguments(self.name, inputs, layer, relu, reshape)
        validate.choice("score", score, SCORES)
        if max_channels is not None:
            max_channels = validate.positive_int("max_channels", max_channels, example=32)
        _check_batch_size(batch_size)
        targets = resolve_targets(model, inputs, target)
        choice = choose_layer(model, inputs, layer, reshape, targets)
        scorer = _Scorer(model, score, targets)
        raw, unmasked = scorer.first_pass(inputs, choice.tap)
        acts, how = activation_grids(self.name, raw, model, inputs, choice, reshape)
        base = scorer.select(unmasked, slice(None))  # checks the targets before the long part
        channels = top_channels(acts, max_channels)
        scores = _masked_scores(model, inputs, acts, channels, scorer, batch_size, progress)
        cam, weights = _combine(acts, channels, scores, relu)
        meta = {
            "target": targets.for_meta(),
            "score": base.tolist(),
            "score_source": scorer.source,
            "channels": channels.tolist(),
            "channel_scores": scores.tolist(),
            "weights": weights.astype(np.float32).tolist(),
            **scorer.meta(channels.size),
        }
        params = {
            **cam_params(choice.name, targets, relu, reshape),
            "score": score,
            "max_channels": max_channels,
            "batch_size": batch_size,
        }
        return cam_explanation(self.name, inputs, cam, choice, how, params, meta)


def _combine(
    acts: np.ndarray, channels: np.ndarray, scores: np.ndarray, relu: bool
) -> tuple[np.ndarray, np.ndarray]:
    """``(cam (N, h, w), weights (N, C))``: the scored channels' maps weighted by the softmax
    of their scores; the channels not scored weigh 0."""
    weights = _softmax(scores)
    chosen = np.take_along_axis(acts, channels[:, None, None, :], axis=3)
    cam = np.einsum("nhwk,nk->nhw", chosen, weights)
    full = np.zeros((len(acts), acts.shape[-1]))
    np.put_along_axis(full, channels, weights, axis=1)
    return (np.maximum(cam, 0.0) if relu else cam), full


def _check_batch_size(batch_size: Any) -> None:
    if isinstance(batch_size, str) and batch_size == "auto":
        return
    if not validate.is_int(batch_size) or batch_size < 1:
        raise InputError(
            f"batch_size must be a positive int or 'auto', got {batch_size!r}; pass e.g. "
            "batch_size=32"
        )


def top_channels(acts: np.ndarray, limit: int | None) -> np.ndarray:
    """(N, K) channel indices per input, ascending: all C channels, or the ``limit`` whose
    maps have the largest variance over (h, w) (ties: the lower index)."""
    n, count = acts.shape[0], acts.shape[-1]
    if limit is None or limit >= count:
        return np.broadcast_to(np.arange(count), (n, count)).copy()
    spread = acts.reshape(n, -1, count).var(axis=1)
    picked = np.argsort(-spread, axis=1, kind="stable")[:, :limit]
    return np.sort(picked, axis=1)


def _masked_scores(
    model: ModelAdapter,
    inputs: np.ndarray,
    acts: np.ndarray,
    channels: np.ndarray,
    scorer: _Scorer,
    batch_size: int | str,
    progress: ProgressArg,
) -> np.ndarray:
    """(N, K) target scores of the inputs masked by each chosen channel's map: one stream of
    N * K masked inputs, built chunk by chunk and scored by one forward per chunk."""
    per_input = channels.shape[1]
    maps = np.ascontiguousarray(acts.transpose(0, 3, 1, 2))  # (N, C, h, w)
    rows = align_corners_matrix(inputs.shape[1], maps.shape[2])
    cols_t = align_corners_matrix(inputs.shape[2], maps.shape[3]).T

    def chunk(start: int, stop: int) -> np.ndarray:
        image, k = np.divmod(np.arange(start, stop), per_input)
        masks = rows @ (maps[image, channels[image, k]] @ cols_t)  # (B, H, W)
        low = masks.min(axis=(1, 2), keepdims=True)
        high = masks.max(axis=(1, 2), keepdims=True)
        masks = (masks - low) / (high - low + MASK_EPS)
        batch = (inputs[image] * masks[..., None]).astype(np.float32)
        return scorer.select(scorer(batch), image)

    shapes = [info.output_shape for info in model.layers()]
    hw = inputs.shape[1] * inputs.shape[2]
    per_sample = bytes_per_sample(inputs.shape[1:], shapes) + inputs[0].nbytes + 16 * hw
    key = ("score_cam", model.backend, type(model).__name__, model.name, inputs.shape[1:])
    scores = BatchPlanner().map(
        chunk,
        channels.size,
        per_sample=per_sample,
        batch_size=batch_size,
        key=key,
        progress=progress,
        desc="score_cam",
    )
    return scores.reshape(channels.shape)


def _softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


class _Scorer:
    """Scores batches the same way for the whole call: the logits tap where the adapter
    serves it (else the outputs), then softmax for ``score="probability"``."""

    def __init__(self, model: ModelAdapter, score: str, targets: Targets) -> None:
        self.model, self.score, self.targets = model, score, targets
        self.tap = True
        self.forwards = 0
        self.sizes: Counter[int] = Counter()

    def first_pass(self, inputs: np.ndarray, layer: str) -> tuple[np.ndarray, np.ndarray]:
        """``(activations of layer, (N, K) scores)`` of the unmasked inputs, one forward."""
        try:
            result = self.model.forward(inputs, taps=[layer, LOGITS])
        except LayerNotFoundError:
            result = self.model.forward(inputs, taps=[layer])  # raises for an unknown layer
            self.tap = False
        logits = result.activations[LOGITS] if self.tap else result.outputs
        return np.asarray(result.activations[layer]), self._transform(logits)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.forwards += 1
        self.sizes[len(batch)] += 1
        if self.tap:
            return self._transform(self.model.forward(batch, taps=[LOGITS]).activations[LOGITS])
        return self._transform(self.model.forward(batch).outputs)

    def _transform(self, logits: Any) -> np.ndarray:
        """The scores, channels-last as the tap gives them; for "probability" the softmax
        over the classes (the last axis for a score function, every value for classes)."""
        values = np.asarray(logits, np.float64)
        if self.score == "logit":
            return values
        if self.targets.is_custom:
            return _softmax(values.reshape(-1, values.shape[-1])).reshape(values.shape)
        return _softmax(values.reshape(len(values), -1))

    def select(self, scores: np.ndarray, rows: np.ndarray | slice) -> np.ndarray:
        """(B,) the target scores of samples ``rows`` (ObjectiveError for a target out of
        range or a score function that fails on numpy arrays)."""
        return self.targets.scores(scores, rows)

    @property
    def source(self) -> str:
        where = "the logits tap" if self.tap else "the outputs (the adapter serves no logits tap)"
        return where if self.score == "logit" else f"softmax over the classes of {where}"

    def meta(self, masked: int) -> dict[str, Any]:
        size = max(self.sizes, key=lambda s: (self.sizes[s], s)) if self.sizes else 0
        return {"masked_inputs": masked, "forwards": self.forwards, "batch_size": size}


@hookimpl
def innersight_register_techniques() -> Any:
    yield ScoreCAM()

"""Issue 13's techniques against the peer library that defines each one, timed in ONE process.

    python benchmarks/bench_peers.py [--quick] [--repeats R] [--budget S] [--only g1,g2]
                                     [--threads N] [--out FILE]

Every row runs innersight (``innersight.explain`` on the torch model, numpy NHWC in and out) and
its peer (from a ready NCHW tensor) on the same model, inputs and settings: Captum 0.9 for the
gradient family, the noise tunnel, GradientShap, feature ablation, KernelSHAP and LIME; shap's
``KernelExplainer`` for exact KernelSHAP; and, for the CAM family, a transcription of
pytorch-grad-cam's recipe (``BaseCAM.__call__`` with one target layer: its hooks,
``loss.backward``, the method's weights, ``scale_cam_image`` with ``cv2.resize``), because
pytorch-grad-cam itself needs torchvision, which does not load beside the CPU torch wheel.
Models: the demo digits CNN (``innersight.models.digits_cnn("torch")``, 32x32x1, trained) on test
digits (``digits_data()``), each explained for its true label; and (group ``seed``) the seeds'
convnet (``seed_convnet("torch")``, 150x150x3) on one photo.

Both sides are warmed by one untimed call, then timed interleaved (innersight, then each peer
setting; every other round in reverse order) for at least R rounds and until the case has run
``--budget`` seconds (at most 100 rounds); the table gives medians, the ratio innersight / peer
of the medians (goal: <= 1.0) and of the fastest calls (load only adds time: on a shared machine
the best calls are the least disturbed), and the max relative difference
``max |ours - peer| / max |peer|`` of the two results. Where a method draws random
numbers (noise, baselines, coalitions), the timed peer call draws its own, as many, and the
agreement comes from one more, untimed, call of the peer fed innersight's draws (the replay the
tests use). Captum's perturbation methods are timed at their default ``perturbations_per_eval=1``
(one forward per perturbed input) and at the setting that gives their forwards innersight's
chunk size.

The process is a plain one (as users run: no ``GLIBC_TUNABLES``; the script re-runs itself
without it when it is set); the machine's load is printed before and after. ``--threads N`` sets
torch's and the BLAS libraries' threads (numpy's SVD and least squares) for both sides: on a
loaded machine, threads that wait for each other make timings noise. ``--quick`` (the smoke
test's mode): two inputs and few samples per method, digits only.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import io
import os
import statistics
import subprocess
import sys
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import torch  # before tensorflow, should anything import it

import innersight as ins

PLUGINS = (
    "input_x_gradient",
    "deconvolution",
    "guided_grad_cam",
    "noise_tunnel",
    "gradient_shap",
    "grad_cam_plus_plus",
    "score_cam",
    "layer_cam",
    "eigen_cam",
    "feature_ablation",
    "kernel_shap",
    "lime",
    "deeplift",
    "deeplift_shap",
    "layer_integrated_gradients",
)
MAX_ROUNDS = 100
#: Marks the peer setting whose forwards take innersight's chunk size.
CHUNK = " (innersight's chunk)"


# -- set-up ----------------------------------------------------------------------------------
def register_missing() -> list[str]:
    """Register the issue-13 technique modules the plugin manager does not list yet (through
    its public ``register``); nothing for those already registered. Returns the ones added."""
    manager = ins.get_plugin_manager()
    added = []
    for name in PLUGINS:
        module = importlib.import_module(f"innersight.plugins.{name}")
        if name in manager.techniques() or manager.pm.is_registered(module):
            continue
        manager.register(module, module.__name__, distribution="innersight")
        added.append(name)
    return added


@dataclass(frozen=True)
class Sizes:
    """How much work each method gets (full run or ``--quick``)."""

    gradient: int = 16  # inputs of the gradient methods and the gradient CAMs
    noise: int = 8  # inputs of the noise tunnel and GradientShap
    samples: int = 10  # their noisy copies / draws per input
    score_cam: int = 8  # inputs of Score-CAM (one masked input per channel)
    ablation: int = 8  # inputs of feature ablation
    grid: int = 8  # its grid: 64 groups
    regress: int = 4  # inputs of KernelSHAP and LIME
    coalitions: int = 256  # their coalitions per input (4x4 grid: 16 groups)
    exact: int = 4  # inputs of exact KernelSHAP against shap (3x3 grid, all 512 coalitions)


QUICK = Sizes(gradient=2, noise=2, samples=3, score_cam=1, ablation=2, grid=4, regress=1,
              coalitions=40, exact=1)  # fmt: skip
#: The seeds' convnet: one 150x150 photo.
SEED = Sizes(gradient=1, score_cam=1, ablation=1)


@dataclass
class Setup:
    """The model and data a group of cases shares."""

    model: torch.nn.Module
    x: np.ndarray  # (N, H, W, C) inputs
    y: np.ndarray  # (N,) their targets
    dist: np.ndarray  # (8, H, W, C) GradientShap's baseline distribution
    layer: str  # the CAM layer (the last spatial one: Grad-CAM's default)
    what: str  # the inputs, for the table: "digits", ...

    def batch(self, n: int) -> tuple[np.ndarray, list[int], torch.Tensor]:
        """The first ``n`` inputs (NHWC numpy), their targets and an NCHW tensor of them."""
        return self.x[:n], self.y[:n].tolist(), nchw(self.x[:n])

    def describe(self, n: int) -> str:
        return f"{n} {self.what}, {self.x.shape[1]}x{self.x.shape[2]}x{self.x.shape[3]}"


def digits_setup() -> Setup:
    from innersight.models import digits_cnn, digits_data

    data = digits_data()
    return Setup(digits_cnn("torch"), data.x_test[:32], data.y_test[:32], data.x_train[:8],
                 "relu3", "digits")  # fmt: skip


def seed_setup() -> Setup:
    """The seeds' convnet (seeded weights) on scikit-learn's sample photo at 150x150."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    from innersight.models import seed_convnet

    photo = Image.fromarray(load_sample_images().images[0]).resize(
        (150, 150), Image.Resampling.BILINEAR
    )
    x = (np.asarray(photo, np.float32) / 255.0)[None]
    return Setup(seed_convnet("torch"), x, np.zeros(1, np.int64), x, "relu4", "photo")


def nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def nhwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().transpose(0, 2, 3, 1)


def rel(ours: Any, peer: Any) -> float:
    """``max |ours - peer| / max |peer|`` in float64."""
    a, b = np.asarray(ours, np.float64), np.asarray(peer, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def copies(n: int, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Input and copy index of every row, in Captum's ``repeat_interleave`` order."""
    return np.repeat(np.arange(n), samples), np.tile(np.arange(samples), n)


# -- cases -----------------------------------------------------------------------------------
@dataclass
class Peer:
    """One timed setting of a peer: ``run()`` computes its result; ``check(ex, result)`` the
    max relative difference from innersight's Explanation ``ex``."""

    label: str
    run: Callable[[], Any]
    check: Callable[[Any, Any], float]


@dataclass
class Case:
    """One method: innersight's call and its peers (built from innersight's warm result, which
    gives the chunk size the batched peer settings use)."""

    method: str
    settings: str
    ours: Callable[[], Any]
    peers: Callable[[Any], list[Peer]]


def explain(s: Setup, method: str, n: int, **params: Any) -> Callable[[], Any]:
    """``innersight.explain(method, ...)`` on the first ``n`` inputs, for their targets, without
    a progress bar (a common parameter: techniques without one ignore it)."""
    x, t, _ = s.batch(n)
    if method != "eigen_cam":  # the one without a target
        params["target"] = t
    return lambda: ins.explain(method, s.model, x, progress=False, **params)


def one_peer(label: str, run: Callable[[], Any], check: Callable[[Any, Any], float]) -> Any:
    return lambda _ex: [Peer(label, run, check)]


def same_map(ex: Any, out: Any) -> float:
    return rel(ex.values, nhwc(out))


def gradient_cases(s: Setup, z: Sizes) -> list[Case]:
    """Input x gradient, deconvolution, guided Grad-CAM: Captum on the same batch."""
    from captum.attr import Deconvolution, GuidedGradCam, InputXGradient

    _, t, xt = s.batch(z.gradient)
    layer = s.model.get_submodule(s.layer)
    guided = {"layer": s.layer, "interpolate_mode": "nearest"}
    table: list[tuple[str, dict[str, Any], str, Callable[[], Any]]] = [
        ("input_x_gradient", {}, "InputXGradient",
         lambda: InputXGradient(s.model).attribute(xt, target=t)),
        ("deconvolution", {}, "Deconvolution",
         lambda: Deconvolution(s.model).attribute(xt, target=t)),
        ("guided_grad_cam", guided, "GuidedGradCam",
         lambda: GuidedGradCam(s.model, layer).attribute(xt, target=t, interpolate_mode="nearest")),
    ]  # fmt: skip
    cases = []
    for method, params, name, run in table:
        settings = s.describe(z.gradient) + (f", layer {s.layer}, nearest" if params else "")
        ours = explain(s, method, z.gradient, **params)
        cases.append(Case(method, settings, ours, one_peer(f"captum {name}", run, same_map)))
    return cases


def noise_tunnel_case(s: Setup, z: Sizes) -> Case:
    from captum.attr import NoiseTunnel, Saliency

    from innersight.plugins.noise_tunnel import noisy_copies

    x, t, xt = s.batch(z.noise)
    kw = {"nt_type": "smoothgrad", "nt_samples": z.samples, "stdevs": 0.1}
    ours = explain(s, "noise_tunnel", z.noise, base="saliency",
                   base_params={"reduce_channels": None}, seed=0, **kw)  # fmt: skip
    peer: Callable[[], Any] = lambda: NoiseTunnel(Saliency(s.model)).attribute(xt, target=t, **kw)  # noqa: E731

    def check(ex: Any, _out: Any) -> float:
        noisy = nchw(noisy_copies(x, *copies(len(x), z.samples), 0.1, 0))
        with mock.patch.object(NoiseTunnel, "_add_noise_to_input",
                               staticmethod(lambda _i, _s, _n: noisy)):  # fmt: skip
            return rel(ex.values, nhwc(peer()))

    settings = f"{s.describe(z.noise)}, {z.samples} copies each, SmoothGrad, stdevs 0.1"
    return Case("noise_tunnel", settings, ours,
                one_peer("captum NoiseTunnel(Saliency)", peer, check))  # fmt: skip


def gradient_shap_case(s: Setup, z: Sizes) -> Case:
    from captum.attr import GradientShap, NoiseTunnel

    from innersight.plugins.gradient_shap import draw

    x, t, xt = s.batch(z.noise)
    bt = nchw(s.dist)
    ours = explain(s, "gradient_shap", z.noise, baseline=s.dist, n_samples=z.samples, seed=0)
    peer: Callable[[], Any] = lambda: GradientShap(s.model).attribute(  # noqa: E731
        xt, bt, n_samples=z.samples, target=t
    )

    def check(ex: Any, _out: Any) -> float:
        owner, copy = copies(len(x), z.samples)
        d = draw(0, owner, copy, x.shape[1:], len(s.dist), 0.0)
        noisy = nchw(x[owner] + d.noise)
        with (
            mock.patch.object(np.random, "choice", lambda _n, _size: d.pick.copy()),
            mock.patch.object(np.random, "uniform", lambda _lo, _hi, _size: d.alpha.astype(float)),
            mock.patch.object(
                NoiseTunnel, "_add_noise_to_input", staticmethod(lambda _i, _s, _n: noisy)
            ),  # fmt: skip
        ):
            return rel(ex.values, nhwc(peer()))

    settings = f"{s.describe(z.noise)}, {z.samples} draws each, 8 training digits as baselines"
    return Case("gradient_shap", settings, ours, one_peer("captum GradientShap", peer, check))


# -- the CAM family: pytorch-grad-cam's recipe, transcribed ------------------------------------
def resize(img: np.ndarray, target_size: tuple[int, int]) -> np.ndarray:
    """``cv2.resize(img, (width, height))`` as pytorch-grad-cam calls it; without OpenCV
    (pytorch-grad-cam's dependency, not innersight's), torch's bilinear resize with half-pixel
    centres, the same numbers when upsampling."""
    cv2 = opencv()
    if cv2 is None:
        t = torch.from_numpy(np.float32(img))[None, None]
        size = (target_size[1], target_size[0])
        return torch.nn.functional.interpolate(t, size=size, mode="bilinear")[0, 0].numpy()
    return cv2.resize(np.float32(img), target_size)


@functools.cache
def opencv() -> Any:
    """The ``cv2`` module, or None when OpenCV is not installed."""
    try:
        return importlib.import_module("cv2")
    except ImportError:
        return None


def scale_cam_image(cam: np.ndarray, target_size: tuple[int, int] | None = None) -> np.ndarray:
    """pytorch-grad-cam's ``utils.image.scale_cam_image`` (2-D maps), verbatim."""
    result = []
    for img in cam:
        img = img - np.min(img)
        img = img / (1e-7 + np.max(img))
        if target_size is not None:
            img = resize(img, target_size)
        result.append(img)
    return np.asarray(result, dtype=np.float32)  # np.float32(result) there


def plus_plus_weights(_r: Any, acts: np.ndarray, grads: np.ndarray, _t: Any) -> np.ndarray:
    """``GradCAMPlusPlus.get_cam_weights``."""
    grads_power_2 = grads**2
    grads_power_3 = grads_power_2 * grads
    sum_activations = np.sum(acts, axis=(2, 3))
    aij = grads_power_2 / (2 * grads_power_2 + sum_activations[:, :, None, None] * grads_power_3
                           + 0.000001)  # fmt: skip
    aij = np.where(grads != 0, aij, 0)
    return np.sum(np.maximum(grads, 0) * aij, axis=(2, 3))


def score_cam_weights(r: CamRecipe, acts: np.ndarray, _g: Any, targets: list[int]) -> np.ndarray:
    """``ScoreCAM.get_cam_weights``: a loop per input, chunks of ``batch_size`` (16), tqdm."""
    import tqdm

    with torch.no_grad():
        size = (int(r.input.shape[-2]), int(r.input.shape[-1]))
        upsampled = torch.nn.UpsamplingBilinear2d(size=size)(torch.from_numpy(acts))
        maxs = upsampled.view(upsampled.size(0), upsampled.size(1), -1).max(dim=-1)[0]
        mins = upsampled.view(upsampled.size(0), upsampled.size(1), -1).min(dim=-1)[0]
        maxs, mins = maxs[:, :, None, None], mins[:, :, None, None]
        upsampled = (upsampled - mins) / (maxs - mins + 1e-8)
        input_tensors = r.input[:, None, :, :] * upsampled[:, :, None, :, :]
        scores = []
        for target, tensor in zip(targets, input_tensors, strict=True):
            for i in tqdm.tqdm(range(0, tensor.size(0), r.batch_size), file=r.bar):
                batch = tensor[i : i + r.batch_size, :]
                scores.extend([o[target].cpu().item() for o in r.model(batch)])
        scores_t = torch.Tensor(scores).view(acts.shape[0], acts.shape[1])
        return torch.nn.Softmax(dim=-1)(scores_t).numpy()


def get_2d_projection(activation_batch: np.ndarray) -> np.ndarray:
    """``utils.svd_on_activations.get_2d_projection``, verbatim (EigenCAM's map)."""
    activation_batch = activation_batch.copy()
    activation_batch[np.isnan(activation_batch)] = 0
    projections = []
    for activations in activation_batch:
        reshaped = activations.reshape(activations.shape[0], -1).transpose()
        reshaped = reshaped - reshaped.mean(axis=0)
        _, _, vt = np.linalg.svd(reshaped, full_matrices=True)
        projections.append((reshaped @ vt[0, :]).reshape(activations.shape[1:]))
    return np.asarray(projections, dtype=np.float32)  # np.float32(projections) there


WEIGHTS = {"grad_cam_plus_plus": plus_plus_weights, "score_cam": score_cam_weights}


class CamRecipe:
    """pytorch-grad-cam's ``BaseCAM.__call__`` for one target layer, no augmentation: the
    ``ActivationsAndGradients`` hooks (registered per call here, so that innersight's timed
    calls never run them), ``zero_grad`` and ``loss.backward`` for gradient methods, the
    method's ``get_cam_image``, ``compute_cam_per_layer`` and ``aggregate_multi_layers``."""

    def __init__(self, method: str, model: torch.nn.Module, layer: str, batch_size: int = 16):
        self.method, self.model, self.batch_size = method, model, batch_size
        self.layer = model.get_submodule(layer)
        self.uses_gradients = method in ("grad_cam_plus_plus", "layer_cam")
        self.bar = io.StringIO()  # ScoreCAM's tqdm bars, written (not shown)
        self.input = torch.empty(0)

    def __call__(self, input_tensor: torch.Tensor, targets: list[int]) -> np.ndarray:
        acts: list[torch.Tensor] = []
        grads: list[torch.Tensor] = []

        def save_gradient(_m: Any, _i: Any, output: torch.Tensor) -> None:
            if output.requires_grad:
                output.register_hook(lambda g: grads.insert(0, g.cpu().detach()))  # type: ignore[no-untyped-call]

        handles = [
            self.layer.register_forward_hook(lambda _m, _i, o: acts.append(o.cpu().detach())),
            self.layer.register_forward_hook(save_gradient),
        ]
        try:
            self.input = input_tensor
            outputs = self.model(input_tensor)
            if self.uses_gradients:
                self.model.zero_grad()
                loss = sum(output[t] for t, output in zip(targets, outputs, strict=True))
                loss.backward(retain_graph=True)
            return self._cams(acts[0].numpy(), grads[0].numpy() if grads else None, targets)
        finally:
            for handle in handles:
                handle.remove()

    def _cams(self, acts: np.ndarray, grads: Any, targets: list[int]) -> np.ndarray:
        if self.method == "eigen_cam":
            cam = get_2d_projection(acts)
        elif self.method == "layer_cam":
            cam = (np.maximum(grads, 0) * acts).sum(axis=1)
        else:
            weights = WEIGHTS[self.method](self, acts, grads, targets)
            cam = (weights[:, :, None, None] * acts).sum(axis=1)
        cam = np.maximum(cam, 0)
        size = (self.input.size(-1), self.input.size(-2))
        per_layer = [scale_cam_image(cam, size)[:, None, :]]
        result = np.mean(np.maximum(np.concatenate(per_layer, axis=1), 0), axis=1)
        return scale_cam_image(result)


CAMS = ("grad_cam_plus_plus", "layer_cam", "eigen_cam", "score_cam")


def cam_cases(s: Setup, z: Sizes, methods: tuple[str, ...] = CAMS) -> list[Case]:
    """The CAM family against the transcribed recipe, at the setup's last spatial layer."""
    cases = []
    for method in methods:
        n = z.score_cam if method == "score_cam" else z.gradient
        _, t, xt = s.batch(n)
        params: dict[str, Any] = {"layer": s.layer}
        if method == "eigen_cam":
            params["sign"] = "svd"  # pytorch-grad-cam's EigenCAM keeps the SVD's sign
        settings = f"{s.describe(n)}, layer {s.layer}" + (", sign svd" if "sign" in params else "")
        peers = lambda ex, m=method, xt=xt, t=t: cam_peers(s, m, xt, t, ex)  # noqa: E731
        cases.append(Case(method, settings, explain(s, method, n, **params), peers))
    return cases


def cam_peers(s: Setup, method: str, xt: torch.Tensor, t: list[int], ex: Any) -> list[Peer]:
    """pytorch-grad-cam's output against innersight's map scaled the same way (min-max per
    image: ``scale_cam_image`` of the upsampled map is the recipe's up to its 1e-7)."""
    check = lambda ex, out: rel(scale_cam_image(ex.values), out)  # noqa: E731
    sizes = [16]
    if method == "score_cam" and ex.meta["batch_size"] != 16:
        sizes.append(int(ex.meta["batch_size"]))
    out = []
    for size in sizes:
        recipe = CamRecipe(method, s.model, s.layer, batch_size=size)
        how = "cv2" if opencv() is not None else "torch resize"
        label = f"pytorch-grad-cam (transcribed, {how})" + (
            "" if len(sizes) == 1 else f", batch_size={size}" + CHUNK * (size != 16)
        )
        out.append(Peer(label, functools.partial(recipe, xt, t), check))
    return out


# -- perturbation methods ----------------------------------------------------------------------
def grid_mask(s: Setup, cells: int) -> torch.Tensor:
    """Captum's (1, 1, H, W) feature mask for innersight's ``grid=cells``."""
    from innersight.plugins._masks import grid_labels

    return torch.from_numpy(grid_labels(s.x.shape[1:3], (cells, cells)))[None, None]


def replay(rows: np.ndarray) -> Callable[..., Iterator[torch.Tensor]]:
    """A Captum perturbation generator that yields ``rows`` (innersight's coalitions)."""

    def generator(_inp: Any, **_kwargs: Any) -> Iterator[torch.Tensor]:
        for row in rows:
            yield torch.from_numpy(row.astype(np.int64))[None]

    return generator


def feature_ablation_case(s: Setup, z: Sizes) -> Case:
    from captum.attr import FeatureAblation

    x, t, xt = s.batch(z.ablation)
    mask = grid_mask(s, z.grid)
    ours = explain(s, "feature_ablation", z.ablation, grid=z.grid, baseline=0.0)
    check = lambda ex, r: rel(ex.values, r.detach().numpy()[:, 0])  # noqa: E731

    def peers(ex: Any) -> list[Peer]:
        # Captum ablates one group in every input of the batch at once: a forward of
        # perturbations_per_eval x N inputs, so innersight's chunk is ppe = chunk // N.
        out = []
        for ppe in sorted({1, max(1, int(ex.meta["batch_size"]) // len(x))}):
            run = lambda p=ppe: FeatureAblation(s.model).attribute(  # noqa: E731
                xt, target=t, feature_mask=mask, baselines=0.0, perturbations_per_eval=p
            )
            label = f"captum FeatureAblation, perturbations_per_eval={ppe}" + CHUNK * (ppe > 1)
            out.append(Peer(label, run, check))
        return out

    perturbed = len(x) * (z.grid * z.grid + 1)
    settings = f"{s.describe(len(x))}, {z.grid}x{z.grid} grid, {perturbed} perturbed inputs"
    return Case("feature_ablation", settings, ours, peers)


def regression_case(s: Setup, z: Sizes, method: str) -> Case:
    """KernelSHAP or LIME against Captum: stock sampling timed, innersight's rows replayed."""
    from captum.attr import KernelShap, Lime

    _, t, xt = s.batch(z.regress)
    peer_class = {"kernel_shap": KernelShap, "lime": Lime}[method]
    ours = explain(s, method, z.regress, grid=4, n_samples=z.coalitions, seed=0)
    kw = {"target": t, "feature_mask": grid_mask(s, 4), "baselines": 0.0, "n_samples": z.coalitions}
    memo: dict[int, float] = {}

    def replayed(ex: Any) -> float:
        if id(ex) not in memo:
            results = [
                replay_peer(s.model, method, rows).attribute(
                    xt[i : i + 1], **{**kw, "target": t[i]}
                )
                for i, rows in enumerate(ex.meta["coalitions"])
            ]
            memo[id(ex)] = rel(
                ex.values, np.concatenate([r.detach().numpy()[:, 0] for r in results])
            )
        return memo[id(ex)]

    def peers(ex: Any) -> list[Peer]:
        out = []
        for ppe in sorted({1, int(ex.meta["batch_size"])}):
            run = lambda p=ppe: peer_class(s.model).attribute(xt, perturbations_per_eval=p, **kw)  # noqa: E731
            label = f"captum {peer_class.__name__}, perturbations_per_eval={ppe}" + CHUNK * (
                ppe > 1
            )
            out.append(Peer(label, run, lambda ex, _r: replayed(ex)))
        return out

    settings = f"{s.describe(z.regress)}, 4x4 grid, {z.coalitions} coalitions each"
    return Case(method, settings, ours, peers)


def replay_peer(model: torch.nn.Module, method: str, rows: np.ndarray) -> Any:
    """Captum's KernelShap / Lime drawing ``rows``, as the tests replay them: KernelShap's
    end-point weight 1e7 instead of 1e6 (the theory's is infinite), Lime's Lasso run to
    convergence (its default tolerance stops early)."""
    from captum._utils.models.linear_model import SkLearnLasso
    from captum.attr import KernelShap, Lime

    if method == "kernel_shap":
        peer = KernelShap(model)
        peer.inf_weight = 1e7
        peer.perturb_func = replay(rows)
        return peer
    lasso = SkLearnLasso(alpha=0.01, tol=1e-12, max_iter=100_000)
    return Lime(model, interpretable_model=lasso, perturb_func=replay(rows))


def shap_case(s: Setup, z: Sizes) -> Case:
    """Exact KernelSHAP (3x3 grid: all 2**9 coalitions) against shap's KernelExplainer, which
    explains one image at a time with its own function of the coalitions."""
    import shap

    from innersight.plugins._masks import grid_labels

    x, t, xt = s.batch(z.exact)
    labels = torch.from_numpy(grid_labels(x.shape[1:3], (3, 3)).ravel())
    ours = explain(s, "kernel_shap", z.exact, grid=3, n_samples=512)

    def scorer(i: int) -> Callable[[np.ndarray], np.ndarray]:
        def f(coalitions: np.ndarray) -> np.ndarray:
            keep = torch.from_numpy(np.asarray(coalitions, np.float32))[:, labels]
            with torch.no_grad():
                return s.model(xt[i] * keep.view(-1, 1, *x.shape[1:3]))[:, t[i]].numpy()

        return f

    def peer() -> np.ndarray:
        out = []
        for i in range(len(x)):
            explainer = shap.KernelExplainer(scorer(i), np.zeros((1, 9)))
            phi = explainer.shap_values(np.ones((1, 9)), nsamples=512, l1_reg=False, silent=True)
            out.append(np.asarray(phi).reshape(9)[labels.numpy()].reshape(x.shape[1:3]))
        return np.stack(out)

    settings = f"{s.describe(z.exact)}, 3x3 grid, all 512 coalitions (exact), l1_reg=False"
    check = lambda ex, out: rel(ex.values, out)  # noqa: E731
    return Case("kernel_shap", settings, ours, one_peer("shap KernelExplainer", peer, check))


def same_layer_map(ex: Any, out: Any) -> float:
    """A layer's map: innersight's channels-last against Captum's NCHW."""
    return rel(ex.values, out.detach().numpy().transpose(0, 2, 3, 1))


class Clone(torch.nn.Module):
    """``x.clone()``: a module between two hooked ones."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()


def clone_before_pools(model: torch.nn.Module) -> torch.nn.Module:
    """The same layers (shared, not copied) with a :class:`Clone` between each ReLU and the
    max pool right after it: the workaround for captum issue #1104 (Captum 0.9 loses its own
    max-pool rule when a hooked ReLU feeds the pool; fixed after 0.9). Other models as they
    are."""
    if not isinstance(model, torch.nn.Sequential):
        return model
    children = list(model.named_children())
    layers: list[tuple[str, torch.nn.Module]] = []
    for (name, m), (_, after) in zip(children, [*children[1:], ("", None)], strict=True):
        layers.append((name, m))
        if isinstance(m, torch.nn.ReLU) and isinstance(after, torch.nn.MaxPool2d):
            layers.append((f"{name}_clone", Clone()))
    return torch.nn.Sequential(OrderedDict(layers)).eval()


def reference_cases(s: Setup, z: Sizes) -> list[Case]:
    """DeepLift, DeepLiftShap (8 baselines) and layer integrated gradients (50 Gauss-Legendre
    points at the CAM layer): Captum on the same batch and baselines. Captum's DeepLift gets
    the digits CNN with a clone between each ReLU and its max pool (:func:`clone_before_pools`),
    without which Captum 0.9 drops its max-pool rule and its maps do not add up."""
    from captum.attr import DeepLift, DeepLiftShap, LayerIntegratedGradients

    _, t, xt = s.batch(z.gradient)
    dist = nchw(s.dist)
    layer = s.model.get_submodule(s.layer)
    lift = clone_before_pools(s.model)
    table: list[tuple[str, dict[str, Any], str, Callable[[], Any], Any]] = [
        ("deeplift", {"baseline": 0.0}, "DeepLift",
         lambda: DeepLift(lift).attribute(xt, baselines=0.0, target=t), same_map),
        ("deeplift_shap", {"baseline": s.dist}, "DeepLiftShap",
         lambda: DeepLiftShap(lift).attribute(xt, baselines=dist, target=t), same_map),
        ("layer_integrated_gradients", {"layer": s.layer, "baseline": 0.0, "steps": 50},
         "LayerIntegratedGradients",
         lambda: LayerIntegratedGradients(s.model, layer).attribute(
             xt, baselines=0.0, target=t, n_steps=50, method="gausslegendre"),
         same_layer_map),
    ]  # fmt: skip
    cases = []
    for method, params, name, run, check in table:
        ours = explain(s, method, z.gradient, **params)
        cases.append(
            Case(method, s.describe(z.gradient), ours, one_peer(f"captum {name}", run, check))
        )
    return cases


def seed_cases(s: Setup, z: Sizes) -> list[Case]:
    """The seeds' convnet: one gradient method, Score-CAM and feature ablation on a photo."""
    grads = [c for c in gradient_cases(s, z) if c.method == "input_x_gradient"]
    return grads + cam_cases(s, z, ("score_cam",)) + [feature_ablation_case(s, z)]


#: Groups of cases (``--only``): their builder and whether they run on the seeds' convnet.
GROUPS: dict[str, tuple[Callable[[Setup, Sizes], list[Case]], bool]] = {
    "gradient": (gradient_cases, False),
    "noise_tunnel": (lambda s, z: [noise_tunnel_case(s, z)], False),
    "gradient_shap": (lambda s, z: [gradient_shap_case(s, z)], False),
    "cam": (cam_cases, False),
    "feature_ablation": (lambda s, z: [feature_ablation_case(s, z)], False),
    "kernel_shap": (lambda s, z: [regression_case(s, z, "kernel_shap"), shap_case(s, z)], False),
    "lime": (lambda s, z: [regression_case(s, z, "lime")], False),
    "reference": (reference_cases, False),
    "seed": (seed_cases, True),
}


# -- measuring -----------------------------------------------------------------------------------
@dataclass
class Row:
    """One line of the table: the timings (seconds) of both sides, round by round."""

    method: str
    peer: str
    settings: str
    ours_times: list[float]
    peer_times: list[float]
    diff: float

    @property
    def ours(self) -> float:
        return statistics.median(self.ours_times)

    @property
    def theirs(self) -> float:
        return statistics.median(self.peer_times)

    @property
    def rounds(self) -> int:
        return len(self.ours_times)

    @property
    def ratio(self) -> float:
        """Median over median."""
        return self.ours / self.theirs

    @property
    def best_ratio(self) -> float:
        """Fastest over fastest: load only ever adds time, so the best calls are the least
        disturbed ones."""
        return min(self.ours_times) / min(self.peer_times)


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(case: Case, repeats: int, budget: float) -> list[Row]:
    """Warm both sides and check agreement; then interleaved rounds (at least ``repeats``,
    more while the case has run less than ``budget`` seconds, at most 100), every other round
    in reverse order (so that neither side always runs right after the other); medians."""
    ex = case.ours()
    peers = case.peers(ex)
    diffs = [p.check(ex, p.run()) for p in peers]
    calls = [case.ours, *(p.run for p in peers)]
    times: list[list[float]] = [[] for _ in calls]
    start = time.perf_counter()
    while len(times[0]) < repeats or (
        time.perf_counter() - start < budget and len(times[0]) < max(repeats, MAX_ROUNDS)
    ):
        order = range(len(calls)) if len(times[0]) % 2 == 0 else reversed(range(len(calls)))
        for i in order:
            times[i].append(timed(calls[i]))
    return [
        Row(case.method, p.label, case.settings, times[0], ts, d)
        for p, ts, d in zip(peers, times[1:], diffs, strict=True)
    ]


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Peers' chatter off: Captum's ReLU-hook and scikit-learn's convergence warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def run(
    quick: bool = False, repeats: int = 5, only: list[str] | None = None, budget: float = 0.0
) -> list[Row]:
    """Every chosen group's rows (``only``: keys of :data:`GROUPS`; quick: digits only)."""
    register_missing()
    chosen = [g for g in GROUPS if (g in only if only else not (quick and GROUPS[g][1]))]
    setups: dict[bool, Setup] = {}
    rows: list[Row] = []
    with quiet():
        for group in chosen:
            build, on_seed = GROUPS[group]
            s = setups.setdefault(on_seed, seed_setup() if on_seed else digits_setup())
            sizes = SEED if on_seed else QUICK if quick else Sizes()
            for case in build(s, sizes):
                print(f"  {case.method} ...", file=sys.stderr, flush=True)
                rows.extend(measure(case, repeats, budget))
                s.model.zero_grad(set_to_none=True)  # the recipe's backward filled .grad
    return rows


def table(rows: list[Row]) -> str:
    lines = [
        "| method | peer | settings | innersight ms | peer ms | ratio | ratio of best "
        "| max rel diff | rounds |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.method} | {r.peer} | {r.settings} | {1e3 * r.ours:.1f} | "
            f"{1e3 * r.theirs:.1f} | {r.ratio:.2f} | {r.best_ratio:.2f} | {r.diff:.1e} "
            f"| {r.rounds} |"
        )
    return "\n".join(lines)


def machine() -> str:
    """This machine and the versions that matter here (TensorFlow is not imported: unused)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    cpu = platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    parts = [f"{os.cpu_count()} CPUs ({cpu})", f"Python {platform.python_version()}",
             f"torch {torch.__version__} (threads {torch.get_num_threads()})"]  # fmt: skip
    for package in ("numpy", "captum", "shap", "opencv-python-headless", "innersight"):
        with contextlib.suppress(PackageNotFoundError):
            parts.append(f"{package} {version(package)}")
    state = "set" if os.environ.get("GLIBC_TUNABLES") else "unset"
    return ", ".join(parts) + f", GLIBC_TUNABLES {state}"


def load() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load average: " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="two inputs, few samples, digits")
    parser.add_argument("--repeats", type=int, default=None, help="least rounds (5; quick: 1)")
    parser.add_argument("--budget", type=float, default=None, help="seconds per case (4; quick: 0)")
    parser.add_argument("--only", default=None, help=f"comma-separated of {', '.join(GROUPS)}")
    parser.add_argument("--threads", type=int, default=None, help="torch and BLAS threads")
    parser.add_argument("--out", type=Path, default=None, help="also write the text here")
    args = parser.parse_args()
    unknown = set((args.only or "").split(",")) - set(GROUPS) - {""}
    if unknown:
        parser.error(f"unknown groups {sorted(unknown)}; choose from {', '.join(GROUPS)}")
    return args


def main() -> int:
    if os.environ.get("GLIBC_TUNABLES"):  # glibc reads it once, at start: a plain process
        env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
        return subprocess.run([sys.executable, *sys.argv], env=env).returncode
    args = parse_args()
    limits = contextlib.nullcontext()
    if args.threads:
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        limits = threadpool_limits(args.threads)
    repeats = args.repeats or (1 if args.quick else 5)
    budget = args.budget if args.budget is not None else (0.0 if args.quick else 4.0)
    before, t0 = load(), time.perf_counter()
    with limits:
        rows = run(args.quick, repeats, args.only.split(",") if args.only else None, budget)
    text = (
        f"Machine: {machine()}, plain process.\n\nLoad before: {before}\nLoad after: {load()}\n\n"
        f"Run: {time.perf_counter() - t0:.0f} s. Medians of interleaved timed calls (rounds) "
        "after one untimed call of each side; ratio: innersight / peer of the medians, ratio "
        "of best: of the fastest calls.\n\n" + table(rows) + "\n"
    )
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

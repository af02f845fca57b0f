"""The benchmark cases of issue 3, on the seeds' cats-vs-dogs convnet (150x150x3)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from timing import Row, best_throughput, keras_forward, median_time, torch_forward

import innersight as ins
from innersight.models import seed_convnet, seed_convnet_spec, torch_name

SHAPE = (150, 150, 3)
SPEC = seed_convnet_spec()


DEVICE = "cpu"  # run.py --device cuda: torch on the GPU, Keras left out


def models() -> dict[str, object]:
    """The reference convnet in both frameworks, same seeded weights (torch only on a GPU)."""
    if DEVICE != "cpu":
        return {"torch": seed_convnet("torch").to(DEVICE)}
    return {"torch": seed_convnet("torch"), "keras": seed_convnet("keras")}


def layer(backend: str, keras_name: str) -> str:
    return torch_name(SPEC, keras_name) if backend == "torch" else keras_name


def image() -> np.ndarray:
    """A real photo (scikit-learn's sample image of a temple) at 150x150, values 0..1."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photo = load_sample_images().images[0]
    small = Image.fromarray(photo).resize(SHAPE[:2], Image.BILINEAR)
    return (np.asarray(small, np.float32) / 255.0)[None]


def positions(size: int, window: int, stride: int) -> int:
    """Window positions along one axis, with the extra edge-aligned window innersight adds."""
    count = (size - window) // stride + 1
    return count + (1 if (count - 1) * stride + window < size else 0)


def floors(nets: dict[str, object]) -> dict[str, tuple[float, int]]:
    """Best forward throughput (img/s, batch) of each framework's plain model."""
    makers: dict[str, Callable[[object], Callable[[np.ndarray], object]]] = {
        "torch": torch_forward,
        "keras": keras_forward,
    }
    return {b: best_throughput(makers[b](m), SHAPE) for b, m in nets.items()}


def occlusion(nets: dict[str, object], floor: dict[str, tuple[float, int]]) -> list[Row]:
    x = image()
    n = positions(SHAPE[0], 15, 8) * positions(SHAPE[1], 15, 8) + 1
    rows = []
    for backend, model in nets.items():
        t = median_time(
            lambda: ins.explain(
                "occlusion", model, x, target=0, window=15, stride=8, progress=False
            )
        )
        ips = floor[backend][0]
        rows.append(
            Row("occlusion 15x15/8, 1 image", backend, t, n / ips, "floor", 1.15, f"{n} forwards")
        )
    rows.extend(_captum_occlusion(nets["torch"], x, floor["torch"][0]))
    return rows


def _captum_occlusion(model: object, x: np.ndarray, ips: float) -> list[Row]:
    try:
        from captum.attr import Occlusion
    except ImportError:
        return [Row("captum Occlusion", "torch", float("nan"), notes="captum not installed")]
    import copy

    import torch

    fast = copy.deepcopy(model).to(memory_format=torch.channels_last)  # type: ignore[attr-defined]
    device = next(fast.parameters()).device

    def wrapped(t: object) -> object:
        with torch.no_grad():
            return fast(t.contiguous(memory_format=torch.channels_last))  # type: ignore[attr-defined]

    occ = Occlusion(wrapped)
    t_nchw = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).to(device)
    n = ((SHAPE[0] - 15) // 8 + 1) * ((SHAPE[1] - 15) // 8 + 1) + 1
    best = (float("inf"), 0)
    for ppe in (1, 8, 16, 32, 64):
        run = lambda: occ.attribute(  # noqa: E731  (.cpu(): wait for the GPU)
            t_nchw,
            sliding_window_shapes=(3, 15, 15),
            strides=(3, 8, 8),
            target=0,
            baselines=0.0,
            perturbations_per_eval=ppe,
        ).cpu()
        best = min(best, (median_time(run, repeats=2), ppe))
    return [
        Row(
            "captum Occlusion (best perturbations_per_eval)",
            "torch",
            best[0],
            n / ips,
            "floor",
            notes=f"{n} forwards (no edge windows), perturbations_per_eval={best[1]}",
        )
    ]


def saliency(nets: dict[str, object]) -> list[Row]:
    x = image()
    rows = []
    for backend, model in nets.items():
        t = median_time(lambda: ins.explain("saliency", model, x, target=0), repeats=7)
        rows.append(
            Row("saliency, 1 image", backend, t, _fwd_bwd(backend, model, x), "fwd+bwd", 1.1)
        )
    return rows


def _fwd_bwd(backend: str, model: object, x: np.ndarray) -> float:
    if backend == "torch":
        import torch

        device = next(model.parameters()).device  # type: ignore[attr-defined]

        def run() -> object:
            t = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).to(device).requires_grad_(True)
            model(t)[:, 0].sum().backward()  # type: ignore[operator]
            return t.grad.cpu()  # type: ignore[union-attr]

    else:
        import tensorflow as tf

        spec = tf.TensorSpec((None, *SHAPE), tf.float32)

        @tf.function(input_signature=[spec])
        def grad(t: object) -> object:
            with tf.GradientTape() as tape:
                tape.watch(t)
                score = tf.reduce_sum(model(t, training=False)[:, 0])  # type: ignore[operator]
            return tape.gradient(score, t)

        run = lambda: grad(x).numpy()  # noqa: E731
    return median_time(run, repeats=7)


def activation_grid(nets: dict[str, object]) -> list[Row]:
    x = image()
    rows = []
    makers = {"torch": torch_forward, "keras": keras_forward}
    for backend, model in nets.items():
        taps = [layer(backend, f"{k}{i}") for i in range(1, 5) for k in ("conv", "pool")]
        t = median_time(lambda: ins.explain("activation_grid", model, x, layers=taps), repeats=5)
        fwd = makers[backend](model)
        rows.append(
            Row(
                "activation grid, 8 conv/pool layers",
                backend,
                t,
                median_time(lambda: fwd(x), repeats=7),
                "1 forward",
            )
        )
    return rows


def maximization(nets: dict[str, object]) -> list[Row]:
    rows = []
    for backend, model in nets.items():
        common = {"steps": 30, "progress": False, "size": SHAPE}
        fm = {"layer": layer(backend, "conv1"), **common}
        batched = median_time(lambda: ins.explain("filter_maximization", model, **fm), repeats=1)
        single = median_time(
            lambda: ins.explain("filter_maximization", model, batch_size=1, **fm), repeats=1
        )
        rows.append(
            Row(
                "filter max, 32 filters conv1, 30 steps: batched vs 1 at a time",
                backend,
                batched,
                single,
                "1 at a time",
            )
        )
        cm = {"classes": [0, 1], **common}
        batched = median_time(lambda: ins.explain("class_maximization", model, **cm), repeats=1)
        single = median_time(
            lambda: ins.explain("class_maximization", model, batch_size=1, **cm), repeats=1
        )
        rows.append(
            Row(
                "class max, 2 classes, 30 steps: batched vs 1 at a time",
                backend,
                batched,
                single,
                "1 at a time",
            )
        )
    return rows


def embeddings() -> list[Row]:
    """The plugin's t-SNE (openTSNE: Barnes-Hut below 10,000 points, FFT from there) vs
    scikit-learn's TSNE, on clustered 512-d features like the penultimate layer of a CNN."""
    from sklearn.manifold import TSNE

    from innersight.plugins._projection import tsne

    rows = []
    for n in (2_000, 10_000):
        rng = np.random.default_rng(0)
        centres = rng.normal(0, 4, (10, 512))
        feats = (centres[rng.integers(0, 10, n)] + rng.normal(0, 1, (n, 512))).astype(np.float32)
        method = {}
        ours = median_time(
            lambda: method.update(tsne(feats, perplexity=30, seed=0)[1]), repeats=1, warmup=0
        )
        sk = median_time(
            lambda: TSNE(random_state=0, init="pca").fit_transform(feats), repeats=1, warmup=0
        )
        rows.append(
            Row(
                f"t-SNE {n} x 512: innersight (openTSNE) vs sklearn",
                "-",
                ours,
                sk,
                "sklearn TSNE",
                notes=f"openTSNE {method.get('negative_gradient_method')}, "
                f"{method.get('n_jobs')} jobs",
            )
        )
    return rows

"""Exact incremental occlusion against naive occlusion and the forward floor (issue 16, item 3).

    python benchmarks/bench_incremental.py [--rounds 5] [--configs 15/8,8/4] [--device cuda]
                        [--models seed_convnet,seed_convnet_keras,resnet18_half]

``benchmarks/run.py`` runs it as the case ``incremental`` (:func:`case`).

For each model (the seeds' convnet in torch and in Keras, and a ResNet-18 layout at half width
in torch; 150x150x3) every round measures, for each window/stride, interleaved: the forward
floor ((windows + 1) x seconds per image of the framework's fastest plain forward,
:func:`timing.torch_forward` or :func:`timing.keras_forward`, at the batch size
:func:`timing.best_throughput` found best, timed right before and after, the faster kept),
``occlusion(method="naive")`` and ``occlusion(method="incremental")`` (in alternating order).
Warm timings: one untimed call of each comes first, which also gives the cold first call
of the incremental path (tracing, shape pass, kernel set-up) and the largest difference
between the two maps, relative to the naive map's largest value, next to the difference
float32 alone makes between two naive runs at different batch sizes.

Printed: the medians over rounds of the times and of the ratios computed within each round
(the machine may be shared and loaded: only ratios from the same round are compared).
:func:`rows` gives the same numbers as :class:`timing.Row` for ``run.py``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).parent))

import numpy as np
import torch
from timing import Row, best_throughput, keras_forward, machine, per_image, torch_forward

import innersight as ins
from innersight.models import seed_convnet

SHAPE = (150, 150, 3)
CONFIGS = ((15, 8), (8, 4))
GOALS = {(15, 8): 3.0, (8, 4): 5.0}  # issue 16: at least this much below the naive floor


def resnet18_half(classes: int = 2, seed: int = 0) -> torch.nn.Module:
    """torchvision's ResNet-18 layout (7x7/2 stem, 3x3/2 max pool, four stages of two
    BasicBlocks, global average pool, fc) at half width (32..256), seeded, BN statistics set."""
    from torch import nn

    class Basic(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
                )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            out += identity
            return self.relu(out)

    widths = (32, 64, 128, 256)
    torch.manual_seed(seed)
    layers: list[nn.Module] = [
        nn.Conv2d(3, widths[0], 7, 2, 3, bias=False),
        nn.BatchNorm2d(widths[0]),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, 1),
    ]
    cin = widths[0]
    for i, width in enumerate(widths):
        layers += [Basic(cin, width, 1 if i == 0 else 2), Basic(width, width, 1)]
        cin = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes)]
    model = nn.Sequential(*layers)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return model.eval()


MODELS = {
    "seed_convnet": lambda: seed_convnet("torch"),
    "seed_convnet_keras": lambda: seed_convnet("keras"),
    "resnet18_half": resnet18_half,
}


def backend_of(name: str) -> str:
    return "keras" if name.endswith("_keras") else "torch"


def image() -> np.ndarray:
    """A real photo at 150x150 (scikit-learn's sample image), or seeded noise without it."""
    try:
        from cases import image as photo

        return photo()
    except ImportError:
        return np.random.default_rng(0).random((1, *SHAPE), dtype=np.float32)


def occlude(
    model: object, x: np.ndarray, config: tuple[int, int], method: str, batch: int | str = "auto"
) -> tuple:
    """Wall seconds of one occlusion call, and its Explanation."""
    t0 = time.perf_counter()
    ex = ins.explain(
        "occlusion", model, x, target=0, window=config[0], stride=config[1],
        progress=False, method=method, batch_size=batch,
    )  # fmt: skip
    return time.perf_counter() - t0, ex


def measure(
    model: object, x: np.ndarray, rounds: int, configs: tuple, backend: str = "torch"
) -> dict:
    """Per config: lists of per-round times and ratios, plus the warm-up facts.

    The floor's batch size is the best of :func:`timing.best_throughput`, measured once; each
    round then times that forward right before and right after the occlusion calls and takes
    the faster (the best throughput of that moment): on a shared machine the load changes
    within seconds, and a floor measured minutes apart would compare different machines.
    """
    out: dict = {}
    for config in configs:
        _, naive = occlude(model, x, config, "naive")
        cold, inc = occlude(model, x, config, "incremental")
        scale = float(np.abs(naive.values).max())
        _, other = occlude(model, x, config, "naive", batch=7)  # float32 noise between batches
        out[config] = {
            "windows": naive.meta["windows"],
            "cold": cold,
            "max_rel_diff": float(np.abs(inc.values - naive.values).max()) / scale,
            "noise": float(np.abs(other.values - naive.values).max()) / scale,
            "reason": inc.meta["method_reason"],
            "auto": occlude(model, x, config, "auto")[1].meta["method"],
            "floor": [], "naive": [], "incremental": [], "batch": [],
        }  # fmt: skip
    forward = (keras_forward if backend == "keras" else torch_forward)(model)
    ips, batch = best_throughput(forward, SHAPE)
    out["best"] = (ips, batch)
    for r in range(rounds):
        for config in configs:
            rec = out[config]
            before = per_image(forward, batch)
            order = ("naive", "incremental") if r % 2 == 0 else ("incremental", "naive")
            for method in order:
                seconds, ex = occlude(model, x, config, method)
                rec[method].append(seconds)
                if method == "incremental":
                    rec["batch"].append(ex.meta["batch_size"])
            best = min(before, per_image(forward, batch))
            rec["floor"].append((rec["windows"] + 1) * best)
    return out


def rows(name: str, results: dict, backend: str = "torch") -> list[Row]:
    """One Row per config: incremental time against the naive floor, with the other ratios."""
    table = []
    for config, rec in results.items():
        if config == "best":
            continue
        below = [f / i for f, i in zip(rec["floor"], rec["incremental"], strict=True)]
        naive = [n / i for n, i in zip(rec["naive"], rec["incremental"], strict=True)]
        naive_floor = [n / f for n, f in zip(rec["naive"], rec["floor"], strict=True)]
        win, step = config
        table.append(
            Row(
                case=f"occlusion incremental {win}x{win}/{step}, {name}",
                backend=backend,
                seconds=statistics.median(rec["incremental"]),
                reference=statistics.median(rec["floor"]),
                reference_name="naive floor",
                goal=1.0 / GOALS[config] if name.startswith("seed_convnet") else None,
                notes=(
                    f"{statistics.median(below):.1f}x below the floor (rounds: "
                    f"{', '.join(f'{b:.1f}' for b in below)}); naive occlusion "
                    f"{statistics.median(naive):.1f}x slower ({statistics.median(naive_floor):.2f}"
                    f"x its floor); {rec['windows']} windows; batch "
                    f"{statistics.median(rec['batch']):.0f}; cold first call "
                    f"{rec['cold']:.2f} s; max |inc - naive| / max |naive| "
                    f"{rec['max_rel_diff']:.1e} (naive at batch 7 vs auto: {rec['noise']:.1e}); "
                    f"auto picks {rec['auto']}"
                ),
                extra={
                    "below_floor": statistics.median(below),
                    "vs_naive": statistics.median(naive),
                    "naive_s": statistics.median(rec["naive"]),
                },
            )
        )
    return table


def case(
    rounds: int = 3, device: str = "cpu", models: tuple[str, ...] = tuple(MODELS)
) -> list[Row]:
    """The rows of ``run.py``'s ``incremental`` case (Keras left out on a GPU)."""
    x = image()
    out: list[Row] = []
    for name in models:
        backend = backend_of(name)
        if backend == "keras" and device != "cpu":
            continue
        model = MODELS[name]()
        if backend == "torch":
            model = model.to(device)  # type: ignore[attr-defined]
        out.extend(rows(name, measure(model, x, rounds, CONFIGS, backend), backend))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--configs", default="15/8,8/4", help="window/stride pairs")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    args = parser.parse_args()
    configs = tuple(tuple(int(v) for v in c.split("/")) for c in args.configs.split(","))
    print(machine(), flush=True)
    x = image()
    lines = [
        "| case | incremental s | naive floor s | below floor | vs naive | goal | notes |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name in args.models.split(","):
        model = MODELS[name]()
        if backend_of(name) == "torch":
            model = model.to(args.device)  # type: ignore[attr-defined]
        results = measure(model, x, args.rounds, configs, backend_of(name))
        ips, batch = results["best"]
        print(f"{name}: best forward {ips:.0f} img/s at batch {batch}", flush=True)
        for config in configs:
            print(f"{name} {config}: {results[config]['reason']}", flush=True)
        for row in rows(name, results, backend_of(name)):
            goal = "" if row.goal is None else f">= {1 / row.goal:.0f}x"
            lines.append(
                f"| {row.case} | {row.seconds:.3f} | {row.reference:.3f} | "
                f"{row.extra['below_floor']:.1f}x | {row.extra['vs_naive']:.1f}x | {goal} | "
                f"{row.notes} |"
            )
    print("\n".join(lines))


if __name__ == "__main__":
    main()

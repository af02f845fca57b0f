"""Reproduce the shipped demo weights: ``python -m innersight.models.train_digits``.

Trains the digits CNN in PyTorch (seeded, CPU, about a minute), writes the weights in Keras
layout, then checks the test accuracy of BOTH the torch and the Keras builds of those weights.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from innersight.models.architectures import DIGITS_SPEC
from innersight.models.digits import build, digits_data, weights_from_torch


def train(
    seed: int = 0, epochs: int = 30, lr: float = 2e-3, batch: int = 32
) -> dict[str, np.ndarray]:
    """Adam on cross-entropy with +-2 pixel random shifts; returns Keras-layout weights."""
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    split = digits_data()
    net = build(DIGITS_SPEC, "torch", DIGITS_SPEC.init_weights(seed)).train()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    x_all = split.x_train.transpose(0, 3, 1, 2)
    for _ in range(epochs):
        order = rng.permutation(len(x_all))
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            xb = _shift(x_all[idx], rng)
            loss = torch.nn.functional.cross_entropy(
                net(torch.from_numpy(xb)), torch.from_numpy(split.y_train[idx])
            )
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
        sched.step()
    return weights_from_torch(DIGITS_SPEC, net.eval())


def _shift(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    dy, dx = rng.integers(-2, 3, size=2)
    return np.ascontiguousarray(np.roll(x, (int(dy), int(dx)), axis=(2, 3)))


def accuracy(backend: str, weights: dict[str, np.ndarray]) -> float:
    """Held-out accuracy of ``backend``'s build of ``weights``."""
    split = digits_data()
    model = build(DIGITS_SPEC, backend, weights)
    if backend == "torch":
        import torch

        with torch.no_grad():
            logits = model(torch.from_numpy(split.x_test.transpose(0, 3, 1, 2))).numpy()
    else:
        logits = np.asarray(model(split.x_test))
    return float((logits.argmax(1) == split.y_test).mean())


def main() -> None:
    # Not the shipped file by default: compare a retrained copy with it instead of replacing it.
    default = Path("digits_cnn.npz")
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=default)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    t0 = time.perf_counter()
    weights = train(args.seed, args.epochs)
    print(f"trained in {time.perf_counter() - t0:.1f} s")
    np.savez_compressed(args.out, **weights)  # type: ignore[arg-type]
    for backend in ("torch", "keras"):
        print(f"{backend} test accuracy: {accuracy(backend, weights):.4f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

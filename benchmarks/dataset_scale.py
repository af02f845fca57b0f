"""How embed_dataset scales: N augmented 32x32 digits -> CNN features -> PCA -> 2-D t-SNE map.

The images are scikit-learn's digits (the demo's 32x32 version, all 1,797), each shifted by
up to 2 pixels and given Gaussian noise (sigma 0.05), generated on the fly per block of 1,024
from a seed: any worker can make any slice, and no size is ever held in memory whole. Each
size runs in a fresh process, so its peak resident memory (``ru_maxrss`` of the process and
of any worker processes) is its own.

    python benchmarks/dataset_scale.py                       # 10k, 100k, 1M
    python benchmarks/dataset_scale.py --sizes 10000,100000  # a subset
    python benchmarks/dataset_scale.py --one 100000          # one size, in this process

Prints a Markdown table: seconds per stage (features, PCA, map = t-SNE fit on a 10,000-point
sample + openTSNE transform of the rest, quality, projector), total seconds, peak RSS, and
the trustworthiness (5 neighbours) of the map on a 10,000-point subsample.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from innersight.dataset.sources import IndexedSource, Sample

BLOCK = 1024
SIZES = (10_000, 100_000, 1_000_000)


class AugmentedDigits(IndexedSource):
    """``n`` digits, image ``i`` = base image ``i % 1797`` shifted and noised (seeded per block
    of :data:`BLOCK`, so any slice can be made on its own, in any worker)."""

    kind = "augmented digits"
    labelled = True

    def __init__(self, n: int, seed: int = 0) -> None:
        from innersight.models import digits_data

        split = digits_data()
        self.base = np.concatenate([split.x_train, split.x_test])
        self.labels = np.concatenate([split.y_train, split.y_test])
        self.n, self.seed = int(n), int(seed)

    def __len__(self) -> int:
        return self.n

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "count": self.n, "seed": self.seed}

    def _block(self, b: int) -> np.ndarray:
        if getattr(self, "_cached", (None,))[0] == b:  # sorted single reads hit one block
            return self._cached[1]
        rng = np.random.default_rng([self.seed, b])
        idx = np.arange(b * BLOCK, min(self.n, (b + 1) * BLOCK))
        imgs = self.base[idx % len(self.base)].copy()
        shifts = rng.integers(-2, 3, size=(len(idx), 2))
        for k, (dy, dx) in enumerate(shifts):
            imgs[k] = np.roll(imgs[k], (dy, dx), axis=(0, 1))
        imgs += rng.normal(0, 0.05, imgs.shape).astype(np.float32)
        self._cached = (b, np.clip(imgs, 0, 1))
        return self._cached[1]

    def read(self, start: int, stop: int, model: Any = None) -> list[Sample]:
        out = []
        for b in range(start // BLOCK, (stop - 1) // BLOCK + 1):
            imgs = self._block(b)
            lo, hi = max(start, b * BLOCK), min(stop, (b + 1) * BLOCK)
            for i in range(lo, hi):
                label = int(self.labels[i % len(self.labels)])
                out.append(Sample(str(i), imgs[i - b * BLOCK].copy(), label, None, i))
        return out


def run_one(n: int, args: argparse.Namespace) -> dict[str, Any]:
    """One size in this process; returns its timings, memory and quality."""
    import torch

    import innersight as ins
    from innersight.models import digits_cnn

    del torch  # imported first: torch before TensorFlow
    out = Path(tempfile.mkdtemp(prefix=f"dataset-scale-{n}-", dir=args.tmp))
    t0 = time.perf_counter()
    try:
        run = ins.embed_dataset(
            digits_cnn("torch"),
            AugmentedDigits(n),
            out=out,
            method=args.method,
            sample=10_000,
            quality_samples=10_000,
            engine=args.engine,
            workers=args.workers,
            progress=False,
        )
        total = time.perf_counter() - t0
        stages = run.manifest.stages
        return {
            "images": n,
            "features": run.manifest.info["features_seconds"],
            **{k: stages[k]["seconds"] for k in ("pca", "map", "quality", "projector")},
            "total": total,
            "peak_rss_gb": _peak_rss_gb(),
            "trustworthiness": stages["quality"]["trustworthiness"],
            "knn_accuracy": stages["quality"].get("knn_accuracy"),
            "disk_mb": sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20,
        }
    finally:
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)


def _peak_rss_gb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, workers) / 2**20  # KiB -> GiB


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| images | features s | PCA s | map s | quality s | projector s | total s | peak RSS GiB "
        "| trustworthiness (10k) | 5-NN accuracy | disk MiB |"
    )
    lines = [head, "|" + "---:|" * 11]
    for r in rows:
        lines.append(
            f"| {r['images']:,} | {r['features']:.1f} | {r['pca']:.1f} | {r['map']:.1f} "
            f"| {r['quality']:.1f} | {r['projector']:.1f} | {r['total']:.1f} "
            f"| {r['peak_rss_gb']:.2f} | {r['trustworthiness']:.4f} | {r['knn_accuracy']:.4f} "
            f"| {r['disk_mb']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--one", type=int, help="run one size in this process (JSON out)")
    parser.add_argument("--method", default="tsne", choices=("tsne", "pca"))
    parser.add_argument("--engine", default="local", choices=("local", "ray"))
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--tmp", default=None, help="folder for the runs (default: $TMPDIR)")
    parser.add_argument("--keep", action="store_true", help="keep each run's out folder")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args)))
        return
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        cmd = [sys.executable, __file__, "--one", str(n), "--method", args.method]
        cmd += ["--engine", args.engine] + (
            ["--workers", str(args.workers)] if args.workers else []
        )
        cmd += (["--tmp", args.tmp] if args.tmp else []) + (["--keep"] if args.keep else [])
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{n:,} images: {rows[-1]['total']:.1f} s", file=sys.stderr, flush=True)
    print(table(rows))


if __name__ == "__main__":
    main()

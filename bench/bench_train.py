"""Training throughput: microcli train against the plain PyTorch loop, same images, same size, one run.

    python bench/bench_train.py [--data ../shared/datasets/neu-det] [--per-class 200] [--size 200]

Both train on the same files at the same input size. The plain loop (bench/_plain.py) reads RGB JPEGs
with PIL in 2 DataLoader workers, as a hand-written script would. microcli is timed as the whole CLI
command (start-up, decoding into the cache, per-epoch validation, report and plots included) and per
epoch (from its metrics.csv).
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import _plain  # noqa: E402

NEU = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "neu-det"


def items_from(root: Path, per_class: int):
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    items = []
    for i, c in enumerate(classes):
        files = sorted((root / c).glob("*.jpg"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))[:per_class]
        items += [(str(f), i) for f in files]
    return classes, items


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(NEU))
    ap.add_argument("--per-class", type=int, default=200)
    ap.add_argument("--size", type=int, default=200)
    ap.add_argument("--lenet-epochs", type=int, default=8)
    ap.add_argument("--resnet-epochs", type=int, default=1)
    ap.add_argument("--resnet-per-class", type=int, default=60)
    args = ap.parse_args()
    classes, items = items_from(Path(args.data), args.per_class)
    print(f"data: {args.data}, {len(items)} images (resnet18: {args.resnet_per_class}/class), {args.size} px, cores: {os.cpu_count()}, torch threads: "
          f"{__import__('torch').get_num_threads()}")
    print(f"{'model':10} {'plain loop':>12} {'microcli/epoch':>15} {'microcli/run':>13} {'ratio epoch':>12} {'ratio run':>10}")
    for arch, epochs, per_class in (("lenet", args.lenet_epochs, args.per_class),
                                    ("resnet18", args.resnet_epochs, args.resnet_per_class)):
        _, sub = items_from(Path(args.data), per_class)
        plain = _plain.train(sub, arch, len(classes), args.size, epochs)
        with tempfile.TemporaryDirectory() as tmp:
            manifest = Path(tmp) / "m.csv"
            with open(manifest, "w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(["path", "label", "split"])
                w.writerows((p, classes[y], "train") for p, y in sub)
                w.writerows((p, classes[y], "val") for p, y in sub[:: max(1, len(sub) // 60)])
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "microcli", "train", str(manifest), "-o", f"{tmp}/run",
                            "--arch", arch, "--epochs", str(epochs), "--img-size", str(args.size)],
                           check=True, capture_output=True)
            wall = time.perf_counter() - t0
            rows = list(csv.DictReader(open(f"{tmp}/run/metrics.csv")))
        per_epoch = sum(float(r["images_per_s"]) for r in rows) / len(rows)
        run = len(sub) * epochs / wall
        print(f"{arch:10} {plain:9.1f}/s {per_epoch:12.1f}/s {run:10.1f}/s {per_epoch / plain:11.2f}x {run / plain:9.2f}x")


if __name__ == "__main__":
    main()

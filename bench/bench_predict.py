"""Prediction throughput: microcli predict against the plain PyTorch loop over the same >= 1000 images.

    python bench/bench_predict.py [--data ../shared/datasets/neu-det] [--size 200] [--repeat 3]

The plain loop (bench/_plain.py): a Dataset of the files with the default ImageFolder loader (RGB),
torchvision Resize/ToTensor/Normalize, DataLoader with 2 workers, model.eval() under no_grad. microcli
is timed as the whole `microcli predict` process (start-up included), paths on stdin, rows to a file.
Both use the same architecture and input size. microcli runs with the torch engine (bench_engines.py
measures the others), fp32 on CPU, then once with --precision bf16, counting the images whose predicted
class changes.
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


def microcli_predict(model: Path, paths: list[str], out: Path, *extra: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "microcli", "predict", str(model), "-", "-o", str(out), *extra],
                   input="\n".join(paths) + "\n", text=True, check=True, capture_output=True)
    return len(paths) / (time.perf_counter() - t0)


def classes_of(path: Path) -> list[str]:
    return [r["class"] for r in csv.DictReader(open(path))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(NEU))
    ap.add_argument("--size", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3, help="feed the file list this many times (lenet)")
    ap.add_argument("--resnet-images", type=int, default=1000)
    args = ap.parse_args()
    files = sorted(str(p) for p in Path(args.data).glob("*/*.jpg"))
    classes = sorted({Path(f).parent.name for f in files})
    print(f"data: {args.data}, {len(files)} images, {args.size} px, cores: {os.cpu_count()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = tmp / "m.csv"
        with open(manifest, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["path", "label", "split"])
            w.writerows((f, Path(f).parent.name, "train" if i % 10 else "val") for i, f in enumerate(files))
        print(f"{'model':10} {'images':>7} {'plain loop':>12} {'microcli':>12} {'ratio':>7} {'microcli bf16':>14}"
              f"  bf16 vs fp32 classes   (best of 2 runs each)")
        for arch, n in (("lenet", len(files) * args.repeat), ("resnet18", args.resnet_images)):
            # a briefly trained bundle, so that the bf16 check compares real decisions
            subprocess.run([sys.executable, "-m", "microcli", "train", str(manifest), "-o", str(tmp / arch), "--arch",
                            arch, "--epochs", "1", "--img-size", str(args.size)], check=True, capture_output=True)
            paths = (files * args.repeat)[:n] if arch == "lenet" else files[:: max(1, len(files) // n)][:n]
            plain = ours = 0.0
            for _ in range(2):  # alternate, keep the best: this machine's speed wanders by 10-20 %
                plain = max(plain, _plain.predict(paths, arch, len(classes), args.size))
                ours = max(ours, microcli_predict(tmp / arch / "best.pt", paths, tmp / f"{arch}.csv", "--engine",
                                                  "torch"))
            bf16 = microcli_predict(tmp / arch / "best.pt", paths, tmp / f"{arch}bf16.csv", "--engine", "torch",
                                    "--precision", "bf16")
            a, b = classes_of(tmp / f"{arch}.csv"), classes_of(tmp / f"{arch}bf16.csv")
            diff = sum(x != y for x, y in zip(a, b))
            print(f"{arch:10} {len(paths):7d} {plain:9.1f}/s {ours:9.1f}/s {ours / plain:6.2f}x {bf16:11.1f}/s"
                  f"  {diff} of {len(a)} differ")


if __name__ == "__main__":
    main()

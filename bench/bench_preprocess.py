"""Time `microcli preprocess --op canny` over a folder against a plain sequential scikit-image loop.

    python bench/bench_preprocess.py [--n 600] [--size 256] [--jobs 0]

Both read the same PNGs and write one PNG per input; the plain loop is what a lab script would do:
skimage.io.imread, rgb2gray/img_as_float, feature.canny, skimage.io.imsave.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def plain_loop(files, out_dir, sigma):
    from skimage import feature, io, util

    out_dir.mkdir(parents=True)
    for f in files:
        img = util.img_as_float(io.imread(f))
        edges = feature.canny(img, sigma=sigma)
        io.imsave(out_dir / f.name, util.img_as_ubyte(edges), check_contrast=False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=600, help="images (>= 500 for the issue's figure)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--jobs", type=int, default=0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        from microcli.synth import SynthSpec, write_dataset

        per_class = -(-args.n // 6)
        files = sorted(write_dataset(tmp / "in", SynthSpec(per_class=per_class, size=args.size, seed=0)))
        t0 = time.perf_counter()
        plain_loop(files, tmp / "plain", 2.0)
        plain = time.perf_counter() - t0
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "microcli", "preprocess", str(tmp / "in"), "-o", str(tmp / "ours"),
               "--op", "canny:sigma=2", "-q", "-j", str(args.jobs)]
        subprocess.run(cmd, check=True, capture_output=True)
        ours = time.perf_counter() - t0
        # Same edges as the plain loop, or the comparison means nothing.
        from PIL import Image

        a = np.asarray(Image.open(tmp / "plain" / files[0].name))
        b = np.asarray(Image.open(tmp / "ours" / files[0].parent.name / files[0].name))
        assert np.array_equal(a, b), "microcli and the plain loop disagree"
    n = len(files)
    print(f"images: {n} ({args.size}x{args.size} px), cores: {os.cpu_count()}")
    print(f"plain skimage loop : {plain:6.2f} s  {n / plain:7.1f} img/s")
    print(f"microcli preprocess: {ours:6.2f} s  {n / ours:7.1f} img/s  (whole CLI process, start-up included)")
    print(f"ratio              : {plain / ours:.2f}x")


if __name__ == "__main__":
    main()

"""What `microcli explain` (a heat-map PNG per image) costs next to `microcli predict` on the same images.

    python bench/bench_explain.py [--data ../shared/datasets/neu-det] [--images 100] [--size 64] [--threads 1]

On NEU-DET with a ResNet-18: a briefly trained bundle (1 epoch on 10 images per class at --size px, the
recipe's other choices; accuracy does not matter for speed), then the same --images files through
`microcli predict` (rows to a file) and `microcli explain` (a PNG per image and its row), as whole
processes (start-up included, what a user waits for) and in-process (the library calls alone, start-up
excluded). Best of 2 alternating runs each, in wall-clock seconds and in CPU seconds (user + system, all
threads): on a shared machine the wall clock follows the neighbours' load, the CPU time much less.

--threads 1 (the default) runs torch on one thread in every measurement: on a busy machine two OpenMP
threads spin-wait for each other, and the same work then took anywhere between 3.7 and 13 CPU seconds
here; one thread measures the work itself. `--threads 0` uses every core, as the commands do by default.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NEU = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "neu-det"


def run(*args: str, stdin: str | None = None) -> tuple[float, float]:
    """Wall-clock and CPU seconds of one microcli process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "microcli", *args], input=stdin, text=True, check=True, capture_output=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def timed(fn) -> tuple[float, float]:
    """Wall-clock and CPU seconds (all threads of this process) of fn()."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def best(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    return min(a[0], b[0]), min(a[1], b[1])


def line(label: str, p: tuple[float, float], e: tuple[float, float], extra: str = "") -> str:
    return (f"  {label:14} predict {p[0]:5.1f} s ({p[1]:5.1f} s CPU)   explain {e[0]:5.1f} s ({e[1]:5.1f} s CPU)   "
            f"explain / predict: {e[0] / p[0]:.2f}x wall, {e[1] / p[1]:.2f}x CPU{extra}")


def speed(data: Path, n: int, size: int, threads: int, tmp: Path) -> None:
    files = sorted(str(p) for p in data.glob("*/*.jpg"))
    manifest = tmp / "train.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "split"])
        by_class: dict[str, int] = {}
        for f in files:
            c = Path(f).parent.name
            by_class[c] = by_class.get(c, 0) + 1
            if by_class[c] <= 10:
                w.writerow([f, c, "val" if by_class[c] % 5 == 0 else "train"])
    t, _ = run("train", str(manifest), "-o", str(tmp / "r18"), "--arch", "resnet18", "--epochs", "1", "--img-size",
               str(size), "--workers", "0")
    model = tmp / "r18" / "best.pt"
    paths = files[:: max(1, len(files) // n)][:n]
    stdin = "\n".join(paths) + "\n"

    from microcli.checkpoint import load_bundle

    spec = load_bundle(model).input
    print(f"NEU-DET: ResNet-18 trained 1 epoch on 60 images at {size} px, fit={spec.fit} ({t:.0f} s); "
          f"{len(paths)} images (200x200 JPEG); torch threads: {threads or os.cpu_count()}")
    opts = ("--threads", str(threads), "--workers", "0" if threads == 1 else "-1")
    best_p = best_e = (float("inf"), float("inf"))
    for i in range(2):
        best_p = best(best_p, run("predict", str(model), "-", "-o", str(tmp / "p.csv"), "--force", *opts, stdin=stdin))
        best_e = best(best_e, run("explain", str(model), "-", "-o", str(tmp / f"cams{i}"), *opts, stdin=stdin))
    print(line("whole process", best_p, best_e))

    from microcli.checkpoint import load_bundle
    from microcli.explain import CamExplainer, explain_stream, render_explanation
    from microcli.inference import Predictor, set_threads
    from microcli.outputs import PictureFolder
    from microcli.predict import predict_stream

    set_threads(threads)
    workers = 0 if threads == 1 else 2
    bundle = load_bundle(model)
    pred = Predictor(bundle)
    explainer = CamExplainer(Predictor(bundle))
    lib_p = lib_e = (float("inf"), float("inf"))
    pictures = float("inf")
    for i in range(2):
        lib_p = best(lib_p, timed(lambda: [None for _ in predict_stream(pred, paths, workers=workers)]))
        folder = PictureFolder(tmp / f"lib{i}", suffix="_cam.png")
        spent = [0.0]

        def explain_all():
            for ex in explain_stream(explainer, paths, workers=workers):
                t1 = time.process_time()
                folder.write(ex.path, render_explanation(ex, bundle.classes))
                spent[0] += time.process_time() - t1

        lib_e = best(lib_e, timed(explain_all))
        pictures = min(pictures, spent[0])
    print(line("in-process", lib_p, lib_e, f"   (drawing and writing the PNGs: {pictures:.1f} s CPU)"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(NEU))
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: all cores)")
    args = ap.parse_args()
    if not Path(args.data).is_dir():
        sys.exit(f"{args.data} not found")
    with tempfile.TemporaryDirectory() as tmp:
        speed(Path(args.data), args.images, args.size, args.threads, Path(tmp))


if __name__ == "__main__":
    main()

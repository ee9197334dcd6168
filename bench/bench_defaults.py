"""What `microcli train DATA -o RUN` with no tuning flags gives, next to the defaults of version 0.1.

    python bench/bench_defaults.py neu [--time 10] [--seed N]  # NEU-DET, file-number split, test accuracy
    python bench/bench_defaults.py tiles [--time 20]           # magnetic-tile, grouped 5-fold cross-validation

neu: trains the default recipe within --time minutes on files 1-240 of each class (201-240 validate)
and tests on files 241-300 (360 images), as bench/neu_det.py does, without and with test-time
augmentation (--seed: another seed than microcli's 0, for the spread between runs). tiles: grouped
5-fold cross-validation of the default recipe (--folds 5 --time MIN) and of version 0.1's defaults
(LeNet, 30 epochs, no sampling, no EMA, no preprocessing; --no-v01 skips it), and prints out-of-fold
macro-F1 and balanced accuracy with their 95 % intervals over folds.
Data: ../shared/datasets (never copied into the project).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
# microcli 0.1's defaults, spelled out (it had no recipe, sampler or EMA).
V01 = ["--arch", "lenet", "--epochs", "30", "--batch-size", "64", "--fit", "resize", "--preprocess", "none",
       "--sampler", "uniform", "--no-ema"]


def microcli(*args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "microcli", *args], check=True)
    return (time.perf_counter() - t0) / 60


def neu(out: Path, minutes: float, seed: int | None = None) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from neu_det import write_manifest

    manifest = write_manifest(out / "neu-manifest.csv")
    run = out / "neu-default"
    took = microcli("train", str(manifest), "-o", str(run), "--force", "--time", str(minutes),
                    *([] if seed is None else ["--seed", str(seed)]))
    for tta in ([], ["--tta"]):
        report = run / f"test_report{'_tta' if tta else ''}.json"
        microcli("evaluate", str(run), str(manifest), "--split", "test", "--json", str(report), *tta)
        o = json.loads(report.read_text())["overall"]
        lo, hi = o["ci95"]["accuracy"]
        print(f"NEU-DET, default recipe, --time {minutes:g}{'' if seed is None else f' --seed {seed}'}"
              f"{', evaluate --tta' if tta else ''}: test accuracy "
              f"{100 * o['accuracy']:.2f} % (95 % interval {100 * lo:.1f}-{100 * hi:.1f}), macro-F1 "
              f"{o['macro_f1']:.4f}; train {took:.1f} min (whole command)", flush=True)


def tiles(out: Path, minutes: float, *, v01: bool = True) -> None:
    root = SHARED / "magnetic-tile"
    manifest = out / "tiles-manifest.csv"
    with open(root / "manifest.csv") as src, open(manifest, "w", newline="") as dst:
        w = csv.writer(dst)
        w.writerow(["path", "label", "group"])
        w.writerows([str(root / r["path"]), r["label"], r["group"]] for r in csv.DictReader(src))
    rows = []
    runs = [("default recipe", ["--time", str(minutes)])] + ([("version 0.1 defaults", V01)] if v01 else [])
    for name, extra in runs:
        run = out / ("tiles-" + name.split()[0])
        took = microcli("train", str(manifest), "-o", str(run), "--force", "--folds", "5", *extra)
        rep = json.loads((run / "cv_report.json").read_text())
        rows.append((name, rep, took))
    print("\nmagnetic-tile, grouped 5-fold cross-validation (out-of-fold, mean over folds and 95 % interval)")
    for name, rep, took in rows:
        s = rep["folds"]["summary"]
        cells = [f"{m} {s[m]['mean']:.3f} ({s[m]['ci95'][0]:.3f}-{s[m]['ci95'][1]:.3f})"
                 for m in ("macro_f1", "balanced_accuracy")]
        print(f"  {name:22} {'; '.join(cells)}; pooled accuracy {100 * rep['overall']['accuracy']:.1f} %; "
              f"{took:.1f} min")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("which", choices=["neu", "tiles"])
    ap.add_argument("--time", type=float, default=None, help="minutes (neu: 10; tiles: 20 for all 5 folds)")
    ap.add_argument("--seed", type=int, default=None, help="neu: the training seed (default: microcli's, 0)")
    ap.add_argument("-o", "--out", default="runs/bench-defaults")
    ap.add_argument("--no-v01", action="store_true", help="tiles: skip the version 0.1 defaults' cross-validation")
    args = ap.parse_args()
    data = SHARED / ("neu-det" if args.which == "neu" else "magnetic-tile")
    if not data.is_dir():
        sys.exit(f"{data} not found: this bench needs ../shared/datasets")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.which == "neu":
        neu(out, args.time or 10, args.seed)
    else:
        tiles(out, args.time or 20, v01=not args.no_v01)


if __name__ == "__main__":
    main()

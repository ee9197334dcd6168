"""Train and test on NEU-DET (../shared/datasets/neu-det) with its file-number split, and time it.

    python bench/neu_det.py --arch resnet18 --img-size 128 --epochs 25 -o runs/neu-r18

Split by file-number ranges, as the data set's SOURCE.md advises (neighbouring numbers are often
overlapping crops): files 1-200 of each class train, 201-240 validate, 241-300 test (360 images, the
split of the Ultralytics baseline). The manifest is written next to the run folder; the images stay
where they are and are never copied into the project.
"""

from __future__ import annotations

import argparse
import csv
import re
import subprocess
import sys
import time
from pathlib import Path

NEU = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "neu-det"


def write_manifest(path: Path, root: Path = NEU) -> Path:
    rows = []
    for img in sorted(root.glob("*/*.jpg")):
        n = int(re.search(r"_(\d+)\.jpg$", img.name).group(1))
        split = "train" if n <= 200 else "val" if n <= 240 else "test"
        rows.append((str(img), img.parent.name, split))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "split"])
        w.writerows(rows)
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--tta", action="store_true", help="also evaluate with test-time augmentation")
    args, extra = ap.parse_known_args()  # everything else goes on to microcli train
    if not NEU.is_dir():
        sys.exit(f"{NEU} not found")
    out = Path(args.out)
    manifest = write_manifest(out.with_name(out.name + "-manifest.csv"))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "microcli", "train", str(manifest), "-o", str(out), "--force",
                    *extra], check=True)
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "microcli", "evaluate", str(out / "best.pt"), str(manifest),
                    "--split", "test", "--json", str(out / "test_report.json"), "--plot", str(out / "test_confusion.png"),
                    "--misclassified", str(out / "test_misclassified.csv")], check=True)
    eval_s = time.perf_counter() - t1
    import json

    rep = json.loads((out / "test_report.json").read_text())
    o = rep["overall"]
    print(f"NEU-DET test (files 241-300, {o['images']} images): accuracy {100 * o['accuracy']:.2f} %, "
          f"macro-F1 {o['macro_f1']:.4f}; train {train_s / 60:.1f} min (wall, whole CLI), evaluate {eval_s:.1f} s")
    print("most confused:", rep["most_confused"][:5])
    if args.tta:
        subprocess.run([sys.executable, "-m", "microcli", "evaluate", str(out / "best.pt"), str(manifest), "--split",
                        "test", "--tta", "--json", str(out / "test_report_tta.json")], check=True, capture_output=True)
        o = json.loads((out / "test_report_tta.json").read_text())["overall"]
        print(f"with --tta: accuracy {100 * o['accuracy']:.2f} %, macro-F1 {o['macro_f1']:.4f}")


if __name__ == "__main__":
    main()

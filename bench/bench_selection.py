"""Does the epoch that training picks on its validation set score on the test set close to the best epoch?

    python bench/bench_selection.py [--data magnetic-tile|neu-det] [--time MIN] [--no-ema-too]

Trains the default recipe (optionally with a time budget) on a grouped train/val/test split and, after
every epoch, scores the saved weights (last.pt: the moving average with EMA on) on the test part. It
prints each epoch's validation and test macro-F1, the epoch best.pt came from, its test score, and the
best test score any epoch reached (known only in hindsight). With --no-ema-too it repeats the run with
--no-ema, side by side. Data: ../shared/datasets (never copied into the project).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def manifest(name: str, out: Path) -> Path:
    """A train/val/test manifest: NEU-DET by file number (its SOURCE.md), magnetic-tile by group."""
    from microcli.data import Item
    from microcli.splits import stratified_group_split

    root = SHARED / name
    rows = list(csv.DictReader(open(root / "manifest.csv")))
    if name == "neu-det":
        import re

        def side(file: str) -> str:
            n = int(re.search(r"_(\d+)\.jpg$", file).group(1))
            return "train" if n <= 200 else "val" if n <= 240 else "test"

        parts = [(str(root / r["file"]), r["label"], "", side(r["file"])) for r in rows]
    else:
        items = [Item(str(root / r["path"]), r["label"], r["group"]) for r in rows]
        split = stratified_group_split(items, val=0.2, test=0.2, seed=0)
        parts = [(it.path, it.label, it.group, s) for s, its in split.splits().items() for it in its]
    path = out / f"{name}-manifest.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "group", "split"])
        w.writerows(parts)
    return path


def run(data: Path, out: Path, *, ema: bool, minutes: float | None) -> dict:
    from microcli.config import TrainConfig
    from microcli.evaluate import evaluate
    from microcli.train import train_model

    test_f1: dict[int, float] = {}

    def on_event(e) -> None:
        if e.kind == "epoch_end":
            rep = evaluate(out / "last.pt", data, split="test", workers=1).report["overall"]
            test_f1[e.epoch] = rep["macro_f1"]
            r = e.row
            print(f"  epoch {e.epoch:>3}: val macro-F1 {r['val_macro_f1']:.3f}  test macro-F1 {rep['macro_f1']:.3f}",
                  flush=True)

    t0 = time.perf_counter()
    result = train_model(TrainConfig(data=str(data), out=str(out), force=True, ema=ema, time=minutes),
                         on_event=on_event)
    best = evaluate(out / "best.pt", data, split="test", workers=1).report["overall"]
    return {"ema": ema, "chosen_epoch": result.best_epoch, "chosen_test_f1": best["macro_f1"],
            "chosen_test_acc": best["accuracy"], "best_test_f1": max(test_f1.values()),
            "best_test_epoch": max(test_f1, key=test_f1.get), "epochs": len(test_f1),
            "minutes": (time.perf_counter() - t0) / 60}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="magnetic-tile", choices=["magnetic-tile", "neu-det"])
    ap.add_argument("--time", type=float, default=None, help="minutes per run (default: the recipe's length)")
    ap.add_argument("--no-ema-too", action="store_true", help="repeat with --no-ema, side by side")
    ap.add_argument("-o", "--out", default="runs/bench-selection")
    args = ap.parse_args()
    if not (SHARED / args.data).is_dir():
        sys.exit(f"{SHARED / args.data} not found: this bench needs ../shared/datasets")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = manifest(args.data, out)
    results = []
    for ema in ([True, False] if args.no_ema_too else [True]):
        print(f"{args.data}, default recipe, EMA {'on' if ema else 'off'}:", flush=True)
        results.append(run(data, out / ("ema" if ema else "no-ema"), ema=ema, minutes=args.time))
    print(f"\n{'':10} {'chosen epoch':>12} {'its test F1':>11} {'best test F1 (epoch)':>21} {'gap':>6} {'min':>5}")
    for r in results:
        print(f"{'EMA ' + ('on' if r['ema'] else 'off'):10} {r['chosen_epoch']:>12} {r['chosen_test_f1']:>11.3f} "
              f"{r['best_test_f1']:>14.3f} ({r['best_test_epoch']:>3}) {r['best_test_f1'] - r['chosen_test_f1']:>6.3f} "
              f"{r['minutes']:>5.1f}")


if __name__ == "__main__":
    main()

"""Does the epoch that training picks on its validation set score on the test set close to the best epoch?

    python bench/bench_selection.py [--data magnetic-tile|neu-det] [--time MIN] [--seed N] [--patience P]
                                    [--no-ema-too] [-o OUT]

Trains the default recipe (optionally with a time budget, a seed and another --patience; --patience 0
trains the whole schedule) on a train/val/test split: magnetic-tile by group (60/20/20), NEU-DET by
file number (1-200 train, 201-240 validate, 241-300 test). After every epoch it keeps a copy of the
saved weights (last.pt: the moving average with EMA on); once training has ended it scores each copy on
the test part, so the scoring does not count against the time budget. It prints each epoch's
validation and test figures, then the epoch best.pt came from and its test score, against the best
test score any epoch reached (known only in hindsight), the last epoch and the mean over the second
half of the epochs; with --patience 0, also the epoch that --patience 10 would have picked. For
`--fit crop` ResNets it scores each epoch twice: on the whole image where it fits (microcli's way,
`InputSpec.whole`) and on tiles of the crop side, averaged (the way of bundles saved without `whole`);
the test column is the model's own way. With --no-ema-too it repeats the run with
--no-ema, side by side. Data: ../shared/datasets (never copied into the project).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def manifest(name: str, out: Path) -> Path:
    """A train/val/test manifest: NEU-DET by file number (its SOURCE.md), magnetic-tile by group."""
    from microcli.data import Item
    from microcli.splits import stratified_group_split

    root = SHARED / name
    rows = list(csv.DictReader(open(root / "manifest.csv")))
    if name == "neu-det":
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


def train(data: Path, out: Path, *, ema: bool, minutes: float | None, seed: int, patience: int) -> tuple[list, float]:
    """Train the recipe into out/run, keeping each epoch's last.pt as out/epochs/NNN.pt."""
    from microcli.config import TrainConfig
    from microcli.train import train_model

    (out / "epochs").mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []

    def on_event(e) -> None:
        if e.kind == "epoch_end":
            shutil.copyfile(out / "run" / "last.pt", out / "epochs" / f"{e.epoch:03d}.pt")
            rows.append({"epoch": e.epoch, "val_f1": e.row["val_macro_f1"], "planned": int(e.text)})

    t0 = time.perf_counter()
    train_model(TrainConfig(data=str(data), out=str(out / "run"), force=True, ema=ema, time=minutes, seed=seed,
                            patience=patience), on_event=on_event)
    return rows, (time.perf_counter() - t0) / 60


def early_stop(rows: list[dict], patience: int = 10) -> tuple[int, int]:
    """(stop epoch, picked epoch) that training with `patience` would have reached on this validation
    curve: the library's own EarlyStopping, its floor re-set to half the plan after each epoch as the
    time planner does. Only meaningful for a run trained with --patience 0 (the whole schedule)."""
    from microcli.train import EarlyStopping

    stopper = EarlyStopping(patience)
    for r in rows:
        stopper.min_epochs = r["planned"] // 2
        stopper.update(r["epoch"], r["val_f1"])
        if stopper.should_stop:
            break
    return stopper.epoch, stopper.best_epoch


def with_whole(bundle, whole: int):
    """The bundle evaluating images of up to `whole` px whole (0: always tiles of the crop side)."""
    return dataclasses.replace(bundle, input=dataclasses.replace(bundle.input, whole=whole))


def score(data: Path, out: Path, rows: list[dict]) -> dict:
    """Test macro-F1 and accuracy of every kept epoch (whole images and tiles, where they differ)."""
    from microcli.checkpoint import load_bundle
    from microcli.data import Item
    from microcli.dataset import decode_items
    from microcli.engines import Predictor
    from microcli.inputs import CROP_WHOLE
    from microcli.metrics import confusion_report
    from microcli.models import get_model_info

    best = load_bundle(out / "run" / "best.pt")
    test = [r for r in csv.DictReader(open(data)) if r["split"] == "test"]
    decoded = decode_items([Item(r["path"], r["label"]) for r in test], best.input, keep=True)
    arrays = decoded.arrays
    y = [best.classes.index(it.label) for it in decoded.items]
    both = best.input.fit == "crop" and get_model_info(best.arch).any_size
    whole = CROP_WHOLE * best.input.img_size

    def figures(probs: np.ndarray) -> tuple[float, float]:
        o = confusion_report(y, probs, best.classes, intervals=False)["overall"]
        return o["macro_f1"], o["accuracy"]

    for row in rows:
        bundle = load_bundle(out / "epochs" / f"{row['epoch']:03d}.pt")
        if not both:
            row["test_f1"], row["test_acc"] = figures(Predictor(bundle).predict_arrays(arrays))
        else:
            row["whole_f1"], row["whole_acc"] = figures(Predictor(with_whole(bundle, whole)).predict_arrays(arrays))
            row["tiles_f1"], row["tiles_acc"] = figures(Predictor(with_whole(bundle, 0)).predict_arrays(arrays))
            own = "whole" if bundle.input.whole else "tiles"
            row["test_f1"], row["test_acc"] = row[f"{own}_f1"], row[f"{own}_acc"]
        print(f"  epoch {row['epoch']:>3}: val macro-F1 {row['val_f1']:.3f}  test macro-F1 {row['test_f1']:.3f}  "
              f"accuracy {100 * row['test_acc']:.2f} %" +
              (f"  whole {100 * row['whole_acc']:.2f} %, tiles {100 * row['tiles_acc']:.2f} %" if both else ""),
              flush=True)
    chosen = next(r for r in rows if r["epoch"] == best.metrics["epoch"])
    top = max(rows, key=lambda r: r["test_f1"])
    late = rows[len(rows) // 2:]
    return {"rows": rows, "chosen": chosen, "best": top, "last": rows[-1], "late_f1": float(np.mean([r["test_f1"] for r in late])),
            "late_acc": float(np.mean([r["test_acc"] for r in late])), "both": both,
            **({f"late_{k}_acc": float(np.mean([r[f"{k}_acc"] for r in late])) for k in ("whole", "tiles")}
               if both else {}),
            "epochs": len(rows)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="magnetic-tile", choices=["magnetic-tile", "neu-det"])
    ap.add_argument("--time", type=float, default=None, help="minutes per run (default: the recipe's length)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--patience", type=int, default=10, help="early stopping's patience (0: the whole schedule)")
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
        print(f"{args.data}, default recipe, EMA {'on' if ema else 'off'}, seed {args.seed}, "
              f"patience {args.patience}:", flush=True)
        part = out / ("ema" if ema else "no-ema")
        rows, minutes = train(data, part, ema=ema, minutes=args.time, seed=args.seed, patience=args.patience)
        results.append({"ema": ema, "minutes": minutes, **score(data, part, rows)})
    print(f"\n{'':8} {'epochs':>6} {'chosen: epoch, test F1, acc':>28} {'best test F1 (epoch)':>21} {'gap':>6} "
          f"{'last: F1, acc':>15} {'2nd half: F1, acc':>18} {'min':>5}")
    for r in results:
        c, b, last = r["chosen"], r["best"], r["last"]
        print(f"{'EMA ' + ('on' if r['ema'] else 'off'):8} {r['epochs']:>6} {c['epoch']:>9} {c['test_f1']:>8.3f} "
              f"{100 * c['test_acc']:>7.2f} % {b['test_f1']:>13.3f} ({b['epoch']:>3}) {b['test_f1'] - c['test_f1']:>6.3f} "
              f"{last['test_f1']:>7.3f} {100 * last['test_acc']:>5.1f} % {r['late_f1']:>9.3f} {100 * r['late_acc']:>5.1f} % "
              f"{r['minutes']:>5.1f}")
        if args.patience == 0:
            stop, pick = early_stop(r["rows"])
            p = next(x for x in r["rows"] if x["epoch"] == pick)
            print(f"{'':8} --patience 10 would have stopped at epoch {stop} and picked epoch {pick}: test macro-F1 "
                  f"{p['test_f1']:.3f}, accuracy {100 * p['test_acc']:.2f} %" +
                  (f" (whole {100 * p['whole_acc']:.2f} %, tiles {100 * p['tiles_acc']:.2f} %)" if r["both"] else ""))
        if r["both"]:
            for k in ("whole", "tiles"):
                print(f"{'':8} {k}: chosen {100 * c[f'{k}_acc']:.2f} %, last {100 * last[f'{k}_acc']:.2f} %, "
                      f"2nd half {100 * r[f'late_{k}_acc']:.2f} %")


if __name__ == "__main__":
    main()

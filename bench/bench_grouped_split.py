"""How much a random split overstates accuracy and macro-F1 on magnetic-tile, against a grouped split.

    python bench/bench_grouped_split.py [--k 5] [--seed 0] [--size 32] [--features pixels|defect]

magnetic-tile (../shared/datasets/magnetic-tile, see its SOURCE.md) photographs each tile region about
six times, once per lighting set-up; its manifest's `group` column ties those siblings together. Both
protocols run the same k-fold cross-validation with the same features and classifiers; only the folds
differ: random folds (each image its own group, stratified by class) or grouped folds
(`microcli.splits.stratified_group_kfold`, whole groups). The gap is what the leak is worth.

Cheap on purpose (seconds on 2 cores, no CNN): features are the image resized to SIZE x SIZE plus a
32-bin grey-level histogram; classifiers are 1-nearest-neighbour and a class-balanced logistic
regression on 64 principal components (scikit-learn), fitted on each training fold, next to the
majority class ("free", 71 % of the images) for reference. Figures: mean over folds with the 95 %
Student-t interval (`microcli.metrics.fold_summary`); macro-F1 over the classes present in each fold.

`--features defect` asks the other question: how far does a model of another family get on the grouped
folds, the folds of `microcli train manifest.csv --folds 5`? It takes 93 values per image that a defect
inspector would write by hand, at the image's native scale (about two minutes on 2 cores): size and
aspect; the 1st and 99th intensity percentiles, mean and spread; then, on the image stretched between
those percentiles (microcli's `stretch`), bright and dark blob responses (scale-normalised Laplacian of
Gaussian at 4 scales) and residuals from the Gaussian background; Sato dark-ridge responses (cracks);
Sobel edges; row and column profiles (broken edges); uniform LBP texture. The logistic regression then
runs on them, standardised, without PCA.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "datasets" / "magnetic-tile"


def features(path: str, size: int) -> np.ndarray:
    from microcli.data import _resize
    from microcli.io import read_image

    img = read_image(path, mode="gray").data
    small = _resize(img, size, size).ravel()
    hist = np.histogram(img, bins=32, range=(0, 1))[0] / img.size
    return np.concatenate([small, hist]).astype(np.float32)


def defect_features(path: str) -> np.ndarray:
    from skimage import feature, filters

    from microcli.io import read_image

    img = read_image(path, mode="gray").data
    h, w = img.shape
    lo, hi = np.percentile(img, [1, 99])
    s = np.clip((img - lo) / max(hi - lo, 1e-3), 0, 1)
    f = [np.log(h), np.log(w), np.log(w / h), lo, hi, img.mean(), img.std()]
    for sigma in (1, 2, 4, 8):
        g = filters.gaussian(s, sigma=sigma)
        log = -filters.laplace(g) * sigma ** 2  # scale-normalised: bright blobs positive, dark negative
        for r in (log, -log):
            f += [*np.percentile(r, [50, 90, 99, 99.9]), r.max()]
        f += list(np.percentile(s - g, [0.1, 1, 99, 99.9]))
    for sigma in (1, 2, 3):
        r = filters.sato(s, sigmas=[sigma], black_ridges=True)
        f += [*np.percentile(r, [90, 99, 99.9]), r.max()]
    f += list(np.percentile(filters.sobel(s), [50, 90, 99, 99.9]))
    cols, rows = s.mean(0), s.mean(1)
    f += [cols.std(), rows.std(), np.abs(np.diff(cols)).max(), np.abs(np.diff(rows)).max()]
    lbp = feature.local_binary_pattern((s * 255).astype(np.uint8), 8, 1, "uniform")
    f += list(np.bincount(lbp.astype(int).ravel(), minlength=10) / lbp.size)
    return np.asarray(f, dtype=np.float32)


def classifiers(kind: str = "pixels"):
    from sklearn.decomposition import PCA
    from sklearn.dummy import DummyClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # Logistic regression on all 1056 values took 4 minutes per protocol here (lbfgs, 2 loaded cores);
    # on 64 principal components with Newton-Cholesky it converges in about 8 steps.
    return {
        "majority class": lambda: DummyClassifier(strategy="most_frequent"),
        "1-NN": lambda: make_pipeline(StandardScaler(), KNeighborsClassifier(1)),
        "logistic regression": lambda: make_pipeline(
            StandardScaler(), PCA(64, svd_solver="randomized", random_state=0),
            LogisticRegression(class_weight="balanced", solver="newton-cholesky", max_iter=200))
        if kind == "pixels" else
        make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=5000)),
    }


def cross_validate(x, y, folds, make, k_classes, classes):
    """accuracy and macro-F1 of each fold (microcli's report conventions)."""
    from microcli.metrics import confusion_report

    scores = {m: [] for m in METRICS}
    for train, test in folds.indices():
        model = make().fit(x[train], y[train])
        probs = np.eye(k_classes)[model.predict(x[test])]
        o = confusion_report(y[test], probs, classes, intervals=False)["overall"]
        for m in scores:
            scores[m].append(o[m])
    return scores


METRICS = {"accuracy": True, "balanced_accuracy": True, "macro_f1": False}  # name: shown in %


def fmt(s: dict, pct: bool) -> str:
    f = (lambda v: f"{100 * v:.1f}") if pct else (lambda v: f"{v:.3f}")
    return f"{f(s['mean'])} ({f(s['ci95'][0])}-{f(s['ci95'][1])})" + (" %" if pct else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=5, help="folds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=32, help="side of the resized image in the features")
    ap.add_argument("--features", choices=["pixels", "defect"], default="pixels",
                    help="pixels: the resized image + histogram; defect: 93 hand-made defect and texture values")
    args = ap.parse_args()
    manifest = DATA / "manifest.csv"
    if not manifest.is_file():
        print(f"skipped: {manifest} not found (the magnetic-tile data set is not on this machine)")
        return

    from microcli.data import Item, discover
    from microcli.metrics import fold_summary
    from microcli.splits import stratified_group_kfold

    t0 = time.perf_counter()
    found = discover(manifest)
    items = found.items()
    classes = found.classes
    index = {c: i for i, c in enumerate(classes)}
    if args.features == "pixels":
        x = np.stack([features(it.path, args.size) for it in items])
        described = f"{args.size}x{args.size} pixels + 32-bin histogram"
    else:
        from joblib import Parallel, delayed

        x = np.stack(Parallel(n_jobs=-1)(delayed(defect_features)(it.path) for it in items))
        described = "hand-made defect and texture values"
    y = np.array([index[it.label] for it in items])
    t_feat = time.perf_counter() - t0
    protocols = {
        "random folds": stratified_group_kfold([Item(it.path, it.label) for it in items], k=args.k, seed=args.seed),
        "grouped folds": stratified_group_kfold(items, k=args.k, seed=args.seed),
    }
    for name, folds in protocols.items():
        for w in folds.warnings:
            print(f"{name}: warning: {w}", file=sys.stderr)

    n_groups = len({it.group for it in items})
    counts = ", ".join(f"{c} {int((y == i).sum())}" for i, c in enumerate(classes))
    print(f"magnetic-tile: {len(items)} images in {n_groups} groups; {counts}")
    print(f"{args.k}-fold cross-validation, seed {args.seed}; features: {described} ({x.shape[1]} values, "
          f"{t_feat:.1f} s to read)")
    print("mean over folds (95 % t interval over folds)\n")
    header = f"{'classifier':<20} {'metric':<17} {'random folds':>24} {'grouped folds':>24} {'overstated by':>14}"
    print(header)
    print("-" * len(header))
    for cname, make in classifiers(args.features).items():
        t1 = time.perf_counter()
        res = {p: cross_validate(x, y, folds, make, len(classes), classes) for p, folds in protocols.items()}
        for metric, pct in METRICS.items():
            r, g = (fold_summary(res[p][metric]) for p in protocols)
            gap = r["mean"] - g["mean"]
            # "+ 0.0" turns a rounded -0.0 into 0.0
            gap_s = f"{round(100 * gap, 1) + 0.0:+.1f} points" if pct else f"{round(gap, 3) + 0.0:+.3f}"
            label = metric.replace("_", " ").replace("macro f1", "macro-F1")
            print(f"{cname:<20} {label:<17} {fmt(r, pct):>24} {fmt(g, pct):>24} {gap_s:>14}")
        print(f"{'':<20} ({time.perf_counter() - t1:.1f} s)")


if __name__ == "__main__":
    main()

"""Cross-validation: stratified group K-fold over a set decoded once, then (optionally) a final refit.

Every image is read once. Fold k trains on the other folds (minus an inner, grouped validation split
that picks its best epoch) in `RUN/fold-k/`, a normal run folder, and predicts its held-out fold with
that best model: every image gets exactly one out-of-fold prediction. The pooled out-of-fold report and
each metric's mean, standard deviation and 95 % interval over folds go to the top of RUN. An interrupted
cross-validation resumes at the fold it was in (`microcli train --resume RUN`).
"""

from __future__ import annotations

import csv
import json
import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .checkpoint import load_bundle, save_bundle, versions
from .config import TrainConfig
from .data import Item, discover
from .dataset import DecodedSet, decode_items
from .html_report import write_cv_html
from .errors import DataError, OutputExistsError, UsageError
from .engines import Predictor
from .io import atomic_open
from .metrics import confusion_report, fold_summary
from .parallel import auto_workers
from .report import report_text, write_json
from .runfolder import RunFolder, check_run_path, clear_previous_run
from .splits import groups_from_names, stratified_group_kfold, stratified_group_split
from .train import (Callback, Event, Runtime, TrainData, TrainResult, _ignore, resolve_input, resolve_recipe,
                    train_decoded, with_temperature)

SUMMARY_METRICS = ("accuracy", "balanced_accuracy", "macro_f1")


@dataclass
class CVResult:
    """A cross-validation: the pooled out-of-fold report (with per-fold statistics in
    ``report["folds"]``), each fold's training result, the final refit if asked, and how it ended."""

    run_dir: Path
    report: dict | None
    folds: list[TrainResult] = field(default_factory=list)
    refit: TrainResult | None = None
    interrupted: bool = False
    skipped: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    resume_command: str = ""


def cross_validate(cfg: TrainConfig, *, resume: bool = False, on_event: Callback | None = None) -> CVResult:
    """Stratified group K-fold cross-validation as `cfg` says (``cfg.folds`` >= 2).

    Parameters
    ----------
    cfg : the checked configuration; ``cfg.out`` is the run folder RUN.
    resume : go on with the cross-validation in RUN: finished folds are kept, the fold in progress
        resumes from its last.pt.
    on_event : progress callback (`microcli.train.Event`).

    Returns
    -------
    CVResult

    Raises
    ------
    UsageError, OutputExistsError : before any image is read.
    DataError : fewer groups than folds, no usable data.
    """
    on_event = on_event or _ignore
    if cfg.folds < 2:
        raise UsageError("cross-validation needs --folds K with K >= 2")
    env = Runtime.setup(cfg)
    check_run_path(cfg.out, cfg.data)
    root = _open_root(Path(cfg.out), resume=resume, force=cfg.force, main=env.main)
    classes, items, held_out, source = _cv_items(cfg)
    _refuse_single_group_classes(items)
    n_train = fold_train_size(len(items), cfg.folds, cfg.val_split)
    cfg, reasons = resolve_recipe(cfg, items, env, on_event, n_train=n_train)
    spec, input_reasons = resolve_input(cfg, items, None)
    reasons = {**reasons, **input_reasons}
    cache = "ram"  # decoded once for all folds
    reasons["cache"] = "ram: cross-validation decodes every image once and keeps it for all folds"
    on_event(Event("message", text=f"{cfg.folds}-fold cross-validation: {len(classes)} classes, {len(items)} images; "
                                   f"{spec.channels} channel(s); cache: {cache}"))
    decoded = decode_items(items, spec, keep=True, workers=auto_workers(cfg.workers), max_pixels=cfg.max_pixels,
                           strict=cfg.strict, on_progress=lambda d, t: on_event(Event("load", d, t)))
    plan = stratified_group_kfold(decoded.items, k=cfg.folds, seed=cfg.seed)
    warnings = list(plan.warnings)
    for w in warnings:
        on_event(Event("message", text=f"warning: {w}"))
    if env.main:
        _write_plan(root, cfg, decoded, plan.fold, held_out)
    result = CVResult(root, None, skipped=decoded.failed, warnings=warnings,
                      resume_command=f"microcli train --resume {root}")
    oof = np.zeros((len(decoded), len(classes)), np.float32)
    for k, (train_idx, test_idx) in enumerate(plan.indices(), start=1):
        on_event(Event("message", text=f"fold {k}/{cfg.folds}: {len(train_idx)} images to train and validate on, "
                                       f"{len(test_idx)} held out"))
        fold = _run_fold(cfg, k, decoded, train_idx, test_idx, classes, source, cache, root, env, resume,
                         reasons, on_event)
        result.folds.append(fold)
        if fold.interrupted:
            result.interrupted = True
            return result
        if env.main:
            oof[test_idx] = _out_of_fold(root / f"fold-{k}", decoded.subset(test_idx))
    if env.main:
        result.report = _cv_report(root, decoded, plan.fold, oof, classes, result.folds)
    if cfg.refit:
        result.refit = _refit(cfg, decoded, classes, source, cache, root, env, result.folds, reasons, on_event)
    return result


def _open_root(root: Path, *, resume: bool, force: bool, main: bool) -> Path:
    """A new RUN must be empty (or `force`: only what cross-validation writes is removed); `resume`
    needs RUN/config.json."""
    if resume:
        if not (root / "config.json").is_file():
            raise UsageError(f"--resume {root}: no config.json there (the cross-validation never started; "
                             "start it again without --resume)")
        return root
    if root.is_dir() and any(root.iterdir()):
        if not force:
            raise OutputExistsError(f"{root}: run folder exists and is not empty; use --force to overwrite it, "
                                    f"or --resume {root} to continue it")
        if main:
            clear_previous_run(root)
    return root


def _refuse_single_group_classes(items: list[Item]) -> None:
    """Before anything is read: a class of one group (one specimen, or one image) would leave the fold that
    tests it with no training image of it."""
    units: dict[str, set[str]] = {}
    for it in items:
        units.setdefault(it.label, set()).add(it.group or it.path)
    lonely = sorted(c for c, u in units.items() if len(u) == 1)
    if lonely:
        raise DataError(f"class(es) {', '.join(map(repr, lonely))} have a single group (specimen) or image: the fold "
                        "that tests it would have none to train on. Add images of a second specimen, or leave the "
                        "class out of the cross-validation")


def fold_train_size(n_images: int, folds: int, val_split: float) -> int:
    """About how many images a fold trains on: its (folds - 1)/folds share, less the validation part
    split off it. The recipe sizes batches and epochs by it, as a plain run does by its training split."""
    return max(1, round(n_images * (folds - 1) / folds * (1 - val_split)))


def _cv_items(cfg: TrainConfig) -> tuple[list[str], list[Item], dict[str, list[Item]], str]:
    """Every image that is not in a given test part: the folds are drawn over train and val together;
    a test part is recorded in folds.csv and left alone."""
    found = discover(cfg.data)
    splits = {k: (groups_from_names(v, cfg.group_by) if cfg.group_by else list(v)) for k, v in found.splits.items()}
    items = [it for name in ("all", "train", "val") for it in splits.get(name, [])]
    return found.classes, items, {k: v for k, v in splits.items() if k == "test"}, found.source


def _write_plan(root: Path, cfg: TrainConfig, decoded: DecodedSet, fold: np.ndarray,
                held_out: dict[str, list[Item]]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    with atomic_open(root / "folds.csv") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "group", "fold"])
        w.writerows([it.path, it.label, it.group or "", int(f) + 1] for it, f in zip(decoded.items, fold))
        w.writerows([it.path, it.label, it.group or "", name] for name, part in held_out.items() for it in part)
    if not (root / "config.json").is_file():
        write_json(root / "config.json", {"train": cfg.to_saved(), "cv": {"folds": cfg.folds}, "versions": versions()})


def _run_fold(cfg, k, decoded, train_idx, test_idx, classes, source, cache, root, env, resume, reasons,
              on_event) -> TrainResult:
    """Train fold k in RUN/fold-k (or take it as done, or resume it), with an inner grouped validation
    split of the training part choosing the best epoch."""
    fold_dir = root / f"fold-{k}"
    if resume and (fold_dir / "oof.json").is_file():
        on_event(Event("message", text=f"fold {k}: done before, kept"))
        return _done_fold(fold_dir)
    inner = stratified_group_split([decoded.items[i] for i in train_idx], val=cfg.val_split, seed=cfg.seed + k)
    pos = {id(decoded.items[i]): int(i) for i in train_idx}
    data = TrainData(classes, decoded.subset([pos[id(it)] for it in inner.train]),
                     decoded.subset([pos[id(it)] for it in inner.val]),
                     {"test": [decoded.items[i] for i in test_idx]}, source, cache)
    again = resume and (fold_dir / "last.pt").is_file()
    run = RunFolder.open(fold_dir, resume=again, force=True, main=env.main)
    previous = run.load_last() if again else None
    fold_cfg = replace(cfg, out=str(fold_dir), folds=0, refit=False, force=True, time=_share(cfg))
    return train_decoded(fold_cfg, data, run, env, previous=previous, reasons=reasons, on_event=on_event)


def _share(cfg: TrainConfig) -> float | None:
    """--time for the whole cross-validation, shared evenly by the folds (and the refit)."""
    return None if cfg.time is None else cfg.time / (cfg.folds + (1 if cfg.refit else 0))


def _done_fold(fold_dir: Path) -> TrainResult:
    done = json.loads((fold_dir / "oof.json").read_text())
    return TrainResult(fold_dir, done["best_epoch"], done["best_score"], [], None)


def _out_of_fold(fold_dir: Path, held_out: DecodedSet) -> np.ndarray:
    """The fold's best model on its held-out images (in RAM), exactly as predict computes it."""
    bundle = load_bundle(fold_dir / "best.pt")
    probs = Predictor(bundle, precision="fp32").predict_arrays(held_out.arrays)
    write_json(fold_dir / "oof.json", {"best_epoch": bundle.metrics.get("epoch", 0),
                                       "best_score": bundle.metrics.get("val_macro_f1", 0.0),
                                       "images": len(held_out)})
    return probs


def _cv_report(root: Path, decoded: DecodedSet, fold: np.ndarray, oof: np.ndarray, classes: list[str],
               folds: list[TrainResult]) -> dict:
    """The pooled out-of-fold report, per-fold metrics with mean/std/95 % interval, and the rows."""
    y = np.asarray(decoded.labels(classes))
    paths = [it.path for it in decoded.items]
    groups = [it.group for it in decoded.items] if any(it.group for it in decoded.items) else None
    report = confusion_report(y, oof, classes, paths, groups=groups)
    per_fold = [confusion_report(y[fold == f], oof[fold == f], classes, intervals=False)["overall"]
                for f in range(int(fold.max()) + 1)]
    report["folds"] = {
        "k": len(per_fold),
        "per_fold": [{"fold": i + 1, "images": o["images"], **{m: o[m] for m in SUMMARY_METRICS},
                      "best_epoch": r.best_epoch} for i, (o, r) in enumerate(zip(per_fold, folds))],
        "summary": {m: fold_summary([o[m] for o in per_fold]) for m in SUMMARY_METRICS},
        "best_epochs": [r.best_epoch for r in folds],
    }
    write_json(root / "cv_report.json", report)
    with atomic_open(root / "cv_report.txt") as fh:
        fh.write(report_text(report, f"cross-validation, {len(per_fold)} folds, out-of-fold predictions"))
        fh.write(fold_summary_text(report) + "\n")
    _write_predictions(root / "cv_predictions.csv", decoded.items, fold, oof, classes)
    write_cv_html(root / "cv_report.html", report, decoded.items, fold, oof, classes, root=root, arrays=decoded.arrays)
    return report


def fold_summary_text(report: dict) -> str:
    """Per-fold metrics and their mean, standard deviation and 95 % interval, as plain text."""
    f = report["folds"]
    lines = ["per fold: " + "; ".join(f"{r['fold']}: acc {100 * r['accuracy']:.1f} %, bal. acc "
                                      f"{100 * r['balanced_accuracy']:.1f} %, macro-F1 {r['macro_f1']:.3f}"
                                      for r in f["per_fold"])]
    for m, s in f["summary"].items():
        lo, hi = s["ci95"]
        lines.append(f"{m.replace('_', ' ')} over {f['k']} folds: mean {s['mean']:.3f}, std {s['std']:.3f}, "
                     f"95 % interval {lo:.3f}-{hi:.3f}")
    return "\n".join(lines)


def _write_predictions(path: Path, items: list[Item], fold: np.ndarray, oof: np.ndarray, classes: list[str]) -> None:
    """One row per image: path, label, group, fold, then predict's columns (class, confidence, p_<class>)."""
    with atomic_open(path) as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "group", "fold", "class", "confidence", *[f"p_{c}" for c in classes]])
        for it, f, p in zip(items, fold, oof):
            top = int(p.argmax())
            w.writerow([it.path, it.label, it.group or "", int(f) + 1, classes[top], f"{p[top]:.6f}",
                        *[f"{v:.6f}" for v in p]])


def _refit(cfg, decoded, classes, source, cache, root, env, folds, reasons, on_event) -> TrainResult:
    """One final model on every image, no validation, for the median best epoch of the folds."""
    epochs = max(1, round(statistics.median(r.best_epoch for r in folds)))  # time budget: not re-planned
    on_event(Event("message", text=f"refit on all {len(decoded)} images for {epochs} epochs (the folds' median "
                                   "best epoch)"))
    final_dir = root / "final"
    run = RunFolder.open(final_dir, resume=False, force=True, main=env.main)
    empty = decoded.subset([])
    data = TrainData(classes, decoded, empty, {}, source, cache)
    final_cfg = replace(cfg, out=str(final_dir), folds=0, refit=False, force=True, epochs=epochs, patience=0, time=None)
    result = train_decoded(final_cfg, data, run, env, reasons=reasons, final=True, on_event=on_event)
    if not (cfg.calibrate and env.main and run.has_best):
        return result
    # No image is left to fit a temperature on; the same recipe gave the folds theirs.
    temps = [load_bundle(root / f"fold-{k}" / "best.pt").metrics.get("temperature") for k in range(1, len(folds) + 1)]
    if None in temps:
        on_event(Event("message", text="final/best.pt not calibrated: some fold's best.pt is not (left uncalibrated, "
                                       "or trained by a version without calibration)"))
    else:
        t = float(np.exp(np.mean(np.log(temps))))
        save_bundle(with_temperature(load_bundle(final_dir / "best.pt"), t), final_dir / "best.pt")
        on_event(Event("message", text=f"calibrated final/best.pt: temperature {t:.2f}, the geometric mean of the "
                                       f"folds' ({', '.join(f'{v:.2f}' for v in temps)})"))
        result = replace(result, temperature=t)
    return result

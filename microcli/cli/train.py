from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from ..models import REGISTRY
from ..options import Arch, Cache, Channels, ClassWeights, Device, Fit, Optimizer, Precision, Sampler
from .common import (DeviceOpt, MaxPixelsOpt, PrecisionOpt, ThreadsOpt, WorkersOpt, abort, err,
                     errors_to_exit, progress, warn)

_LR_HELP = ", ".join(f"{m.default_lr:g} {n}" for n, m in REGISTRY.items())


def list_models() -> None:
    """The registry as a table on stdout (`train --list-models`)."""
    from rich.table import Table

    from .common import out

    t = Table(title="architectures (--arch)")
    for col in ("name", "description", "--pretrained imagenet"):
        t.add_column(col)
    for m in REGISTRY.values():
        t.add_row(m.name, m.summary, "yes" if m.pretrained else "no")
    out.print(t)


# Options of train alone (the shared ones are in common.py), grouped in --help by panel.
_M, _S, _D, _H = "Model and input", "Schedule and loss", "Data and validation", "Machine"


def _opt(kind, *flags: str, panel: str, **kw):
    return Annotated[kind, typer.Option(*flags, rich_help_panel=panel, **kw)]


_ArchOpt = _opt(Arch, "--arch", "-a", panel=_M, help="Backbone (see --list-models); auto: chosen from the data.")
_ImgSizeOpt = _opt(int, "--img-size", panel=_M, min=0, help="Network input side (0: chosen from the data: the "
                                                               "median shorter side, at most 128 px on a CPU and "
                                                               "224 on a GPU; crops: 128 or 224).")
_ChannelsOpt = _opt(Channels, "--channels", panel=_M, help="auto: 1 when every image is gray.")
_FitOpt = _opt(Fit, "--fit", panel=_M, help="resize: shorter side to the input size, centre crop; squash: the "
                                            "whole image to the input size; crop: native pixel scale, random "
                                            "crops in training, the whole image (or views averaged) in "
                                            "evaluation; auto: chosen from the image sizes.")
_PreprocessOpt = _opt(str, "--preprocess", "-p", panel=_M, help="Classical ops before the network, 'op:k=v|op:k=v' "
                                                                "(see microcli filters) or a pipeline.json that "
                                                                "microcli preprocess wrote; 'none' for none "
                                                                "\\[default: chosen from the data].")
_PretrainedOpt = _opt(str, "--pretrained", panel=_M, help="'imagenet' (online) or a torchvision state_dict file "
                                                          "(ResNets).")
_EpochsOpt = _opt(int, "--epochs", "-e", panel=_S, min=1, help="Epochs \\[default: chosen from the data, or planned "
                                                                "by --time; with --resume: the run's].")
_TimeOpt = _opt(float, "--time", "-t", panel=_S, min=0.1, help="MINUTES for the whole run: the epochs that fit are "
                                                               "planned from the first ones.")
_BatchSizeOpt = _opt(int, "--batch-size", "-b", panel=_S, min=1,
                     help="Default: 16 for a ResNet on a CPU, else 32; twice that from 5000 images. A set of fewer "
                          "than 16 batches gets smaller ones (8 at least; said when it does), so that an "
                          "epoch is still about 16 optimiser steps.")
_LrOpt = _opt(float, "--lr", panel=_S, min=0, help=f"Peak learning rate (default: {_LR_HELP}).")
_OptimizerOpt = _opt(Optimizer, "--optimizer", panel=_S)
_WeightDecayOpt = _opt(float, "--weight-decay", panel=_S, min=0)
_WarmupEpochsOpt = _opt(float, "--warmup-epochs", panel=_S, min=0, help="Linear warm-up, then cosine decay.")
_LabelSmoothingOpt = _opt(float, "--label-smoothing", panel=_S, min=0, max=0.5)
_ClassWeightsOpt = _opt(ClassWeights, "--class-weights", panel=_S, help="Loss weights per class, bounded to "
                                                                         "[0.1, 10].")
_SamplerOpt = _opt(Sampler, "--sampler", panel=_S, help="How images are drawn: auto (sqrt past 3:1 imbalance), "
                                                        "uniform, sqrt (1/sqrt(class size)), balanced.")
_EmaOpt = _opt(bool, "--ema/--no-ema", panel=_S, help="Validate and save a moving average of the weights.")
_CalibrateOpt = _opt(bool, "--calibrate/--no-calibrate", panel=_S, help="Sharpen the softmax by a temperature "
                                                                        "fitted on the validation images, so that "
                                                                        "confidences match accuracy.")
_PatienceOpt = _opt(int, "--patience", panel=_S, min=0, help="Early stop after N epochs without a better validation "
                                                             "macro-F1, never before half the planned epochs (0: "
                                                             "never).")
_AugmentOpt = _opt(bool, "--augment/--no-augment", panel=_S, help="Flips, 90-degree rotations, scale, "
                                                                  "brightness/contrast/gamma, noise, blur.")
_SeedOpt = _opt(int, "--seed", panel=_S)
_ValSplitOpt = _opt(float, "--val-split", panel=_D, min=0.01, max=0.9, help="Held-out share per class.")
_GroupByOpt = _opt(str, "--group-by", panel=_D, help="REGEX: each image's group (specimen) from its file name, the "
                                                     "first capture group or the whole match.")
_FoldsOpt = _opt(int, "--folds", panel=_D, min=0, help="K >= 2: stratified group K-fold cross-validation "
                                                       "(RUN/fold-k/, RUN/cv_report.*).")
_RefitOpt = _opt(bool, "--refit", panel=_D, help="After --folds: one final model on all the data (RUN/final/).")
_StrictOpt = _opt(bool, "--strict", panel=_D, help="Fail on the first unreadable image instead of skipping.")
_CacheOpt = _opt(Cache, "--cache", panel=_H, help="Keep decoded images in RAM (auto: when they fit).")
_DeterministicOpt = _opt(bool, "--deterministic", panel=_H, help="Deterministic kernels (slower).")


def train(
    data: Annotated[Path, typer.Argument(help="Class folders, train/val/test folders, or a CSV manifest "
                                              "(path,label[,group][,split]).")] = None,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Run folder for best.pt, last.pt, metrics, "
                                                              "report.")] = None,
    arch: _ArchOpt = Arch("auto"),
    epochs: _EpochsOpt = None,
    time: _TimeOpt = None,
    batch_size: _BatchSizeOpt = None,
    lr: _LrOpt = None,
    optimizer: _OptimizerOpt = Optimizer.adamw,
    weight_decay: _WeightDecayOpt = 0.05,
    warmup_epochs: _WarmupEpochsOpt = 1.0,
    label_smoothing: _LabelSmoothingOpt = 0.1,
    class_weights: _ClassWeightsOpt = ClassWeights.none,
    sampler: _SamplerOpt = Sampler.auto,
    ema: _EmaOpt = True,
    calibrate: _CalibrateOpt = True,
    patience: _PatienceOpt = 10,
    val_split: _ValSplitOpt = 0.2,
    seed: _SeedOpt = 0,
    img_size: _ImgSizeOpt = 0,
    channels: _ChannelsOpt = Channels.auto,
    fit: _FitOpt = Fit.auto,
    preprocess: _PreprocessOpt = None,
    augment: _AugmentOpt = True,
    pretrained: _PretrainedOpt = None,
    precision: PrecisionOpt = Precision.auto,
    device: DeviceOpt = Device.auto,
    workers: WorkersOpt = -1,
    threads: ThreadsOpt = 0,
    cache: _CacheOpt = Cache.auto,
    deterministic: _DeterministicOpt = False,
    strict: _StrictOpt = False,
    max_pixels: MaxPixelsOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing run folder.")] = False,
    group_by: _GroupByOpt = None,
    folds: _FoldsOpt = 0,
    refit: _RefitOpt = False,
    resume: Annotated[Path, typer.Option("--resume", help="Continue the run in this folder from its "
                                                          "last.pt.")] = None,
    list_models_: Annotated[bool, typer.Option("--list-models", help="List the architectures, then exit.")] = False,
) -> None:
    """Train a CNN on labelled micrographs and write a run folder.

    RUN contains best.pt and last.pt (model bundles), config.json, split.csv, metrics.csv, curves.png and the
    best model's validation report (val_report.json/.txt, val_per_class.csv, val_confusion.csv/.png,
    val_misclassified.csv, and report.html: one page with the misclassified images and their heat maps).
    Ctrl-C stops after the current batch, writes last.pt and prints the command that resumes. Runs under
    `torchrun --nproc_per_node N` as DistributedDataParallel.

    With no options the recipe (backbone, input size, fit, preprocessing, batch size, length, sampling) is
    chosen from the data, printed, and written with its reasons to config.json.

    Examples:

      microcli train data/ -o runs/a               # recipe chosen from the data

      microcli train data/ -o runs/a --time 10     # end within 10 minutes

      microcli train manifest.csv -o runs/cv --folds 5 --refit

      microcli train sample_images -o runs/lenet --arch lenet --epochs 30

      microcli train --resume runs/a --epochs 60
    """
    if list_models_:
        list_models()
        return
    with errors_to_exit():
        from ..config import TrainConfig

        if resume is not None:
            from ..train import resume_config

            ignored = _ignored_on_resume({**locals(), "out": out_dir})
            if ignored:
                warn(f"--resume {resume} goes on with the run's own settings; ignored: {', '.join(ignored)} "
                     "(only --epochs and DATA are taken; start a new run to change the others)")
            cfg = resume_config(resume, epochs=epochs, data=str(data) if data is not None else None)
        else:
            if data is None or out_dir is None:
                abort("give DATA and --out RUN_DIR (or --resume RUN_DIR)", 2)
            options = dict(locals())  # every option by its own name: no positional slips
            if preprocess is not None and preprocess.strip().lower() == "none":
                options["preprocess"] = ""
            elif preprocess is not None and preprocess.strip().lower().endswith(".json"):  # a pipeline.json
                from ..preprocess import Pipeline

                options["preprocess"] = str(Pipeline.from_file(preprocess.strip()))
            cfg = TrainConfig(**{k: options[k] for k in _CONFIG_FIELDS if options.get(k) is not None},
                              data=str(data), out=str(out_dir))
        result = _run_with_progress(cfg, resume is not None)
    _render_cv(result) if cfg.folds else _render(result)
    if result.interrupted:
        err.print(f"[yellow]interrupted[/]: last.pt written; resume with:\n  {result.resume_command}", markup=True)
        raise typer.Exit(130)
    if result.skipped:
        raise typer.Exit(3)


# The options that are TrainConfig fields of the same name (data and out are set apart).
_CONFIG_FIELDS = ("arch", "epochs", "time", "batch_size", "sampler", "ema", "calibrate", "lr", "optimizer",
                  "weight_decay", "warmup_epochs", "label_smoothing", "class_weights", "patience", "val_split", "seed",
                  "img_size", "channels", "fit", "preprocess", "augment", "pretrained", "precision", "device",
                  "workers", "threads", "cache", "deterministic", "strict", "max_pixels", "force", "group_by", "folds",
                  "refit")


def _ignored_on_resume(given: dict) -> list[str]:
    """The options given beside --resume that it does not take (anything but --epochs and DATA), as flags."""
    import inspect

    defaults = {k: v.default for k, v in inspect.signature(train).parameters.items()}
    names = [k for k in (*_CONFIG_FIELDS, "out") if k != "epochs" and given.get(k) != defaults.get(k)]
    return ["--" + ("out" if k == "out" else k.replace("_", "-")) for k in names]


def _is_rank0() -> bool:
    """Under torchrun only rank 0 talks; RANK is unset in a plain run."""
    return int(os.environ.get("RANK", "0")) == 0


def _run_with_progress(cfg, resume: bool):
    from ..crossval import cross_validate
    from ..train import train_model

    rank0 = _is_rank0()
    with progress(quiet=not rank0) as bar:
        task = None

        def on_event(e) -> None:
            nonlocal task
            if not rank0:
                return
            if e.kind == "message":
                err.print(e.text)
            elif e.kind == "load":
                if task is None:
                    task = bar.add_task("reading images", total=e.total)
                bar.update(task, completed=e.done, total=e.total)
                if e.done == e.total:
                    bar.remove_task(task)
                    task = None
            elif e.kind == "epoch_start":
                task = bar.add_task(f"epoch {e.epoch}/{e.text}", total=e.total)
            elif e.kind == "batch" and task is not None:
                bar.update(task, completed=e.done)
            elif e.kind == "epoch_end":
                if task is not None:
                    bar.remove_task(task)
                    task = None
                r = e.row
                err.print(f"epoch {r['epoch']:>3}/{e.text}  train loss {r['train_loss']:.4f} acc "
                          f"{100 * r['train_acc']:5.1f}%  val loss {r['val_loss']:.4f} acc {100 * r['val_acc']:5.1f}% "
                          f"F1 {r['val_macro_f1']:.3f}  {r['seconds']:.1f} s  {r['images_per_s']:.0f} img/s")

        run = cross_validate if cfg.folds else train_model
        return run(cfg, resume=resume, on_event=on_event)


def _render(result) -> None:
    if not _is_rank0():
        return
    from ..report import report_renderable

    for path, why in result.skipped:
        err.print(f"[yellow]skipped:[/] {why}", markup=True)
    if result.skipped:
        err.print(f"{len(result.skipped)} unreadable image(s) skipped; listed in {result.run_dir / 'skipped.csv'}")
    if result.report is not None:
        err.print(report_renderable(result.report, f"validation, best epoch {result.best_epoch}"))
    err.print(f"run folder: {result.run_dir}  (best.pt: epoch {result.best_epoch}, "
              f"validation macro-F1 {result.best_score:.3f})")


def _render_cv(result) -> None:
    if not _is_rank0():
        return
    from ..crossval import fold_summary_text
    from ..report import report_renderable

    for _, why in result.skipped:
        err.print(f"[yellow]skipped:[/] {why}", markup=True)
    if result.report is not None:
        err.print(report_renderable(result.report, "cross-validation: out-of-fold predictions, pooled"))
        err.print(fold_summary_text(result.report))
    if result.refit is not None:
        err.print(f"final model (all data, {result.refit.best_epoch} epochs): {result.refit.run_dir / 'best.pt'}")
    reports = "cv_report.html/.json/.txt, cv_predictions.csv, " if result.report is not None else ""
    err.print(f"run folder: {result.run_dir}  ({reports}fold-1 ... fold-{len(result.folds)})")

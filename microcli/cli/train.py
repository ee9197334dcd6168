from __future__ import annotations

import os
from enum import Enum
from pathlib import Path

import typer

from .common import EXIT_CODES, err, errors_to_exit, fail, progress


class Arch(str, Enum):
    lenet = "lenet"
    resnet18 = "resnet18"
    resnet34 = "resnet34"
    resnet50 = "resnet50"


class Fit(str, Enum):
    resize = "resize"
    crop = "crop"


class Channels(str, Enum):
    auto = "auto"
    one = "1"
    three = "3"


class Optimizer(str, Enum):
    adamw = "adamw"
    sgd = "sgd"


class ClassWeights(str, Enum):
    none = "none"
    balanced = "balanced"


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Cache(str, Enum):
    auto = "auto"
    ram = "ram"
    none = "none"


def list_models() -> None:
    from rich.table import Table

    from ..models import REGISTRY
    from .common import out

    t = Table(title="architectures (--arch)")
    for col in ("name", "description", "--pretrained imagenet"):
        t.add_column(col)
    for m in REGISTRY.values():
        t.add_row(m.name, m.summary, "yes" if m.pretrained else "no")
    out.print(t)


def train(
    data: Path = typer.Argument(None, help="Class folders, train/val/test folders, or a CSV manifest "
                                           "(path,label[,group][,split])."),
    out_dir: Path = typer.Option(None, "--out", "-o", help="Run folder for best.pt, last.pt, metrics, report."),
    arch: Arch = typer.Option(Arch.lenet, "--arch", "-a", help="Backbone (see --list-models)."),
    epochs: int = typer.Option(None, "--epochs", "-e", min=1, help="Epochs [default: 30; with --resume: the run's]."),
    batch_size: int = typer.Option(64, "--batch-size", "-b", min=1, help="Smaller for tiny data sets."),
    lr: float = typer.Option(None, "--lr", min=0, help="Peak learning rate (default: 3e-3 lenet, 1e-3 resnets)."),
    optimizer: Optimizer = typer.Option(Optimizer.adamw, "--optimizer"),
    weight_decay: float = typer.Option(0.05, "--weight-decay", min=0),
    warmup_epochs: float = typer.Option(1.0, "--warmup-epochs", min=0, help="Linear warm-up, then cosine decay."),
    label_smoothing: float = typer.Option(0.1, "--label-smoothing", min=0, max=0.5),
    class_weights: ClassWeights = typer.Option(ClassWeights.none, "--class-weights"),
    patience: int = typer.Option(10, "--patience", min=0, help="Early stop after N epochs without a better "
                                                               "validation macro-F1 (0: never)."),
    val_split: float = typer.Option(0.2, "--val-split", min=0.01, max=0.9, help="Held-out share per class."),
    seed: int = typer.Option(0, "--seed"),
    img_size: int = typer.Option(0, "--img-size", min=0, help="Network input side (0: median image side, "
                                                              "at most 224)."),
    channels: Channels = typer.Option(Channels.auto, "--channels", help="auto: 1 when every image is gray."),
    fit: Fit = typer.Option(Fit.resize, "--fit", help="resize: whole image to the input size; crop: native "
                                                      "pixel scale, random crops in training."),
    preprocess: str = typer.Option("", "--preprocess", "-p", help="Classical ops before the network, "
                                                                  "'op:k=v|op:k=v' (see microcli filters)."),
    augment: bool = typer.Option(True, "--augment/--no-augment", help="Flips, 90-degree rotations, scale, "
                                                                      "brightness/contrast/gamma, noise, blur."),
    pretrained: str = typer.Option(None, "--pretrained", help="'imagenet' (online) or a torchvision "
                                                              "state_dict file (ResNets)."),
    precision: Precision = typer.Option(Precision.auto, "--precision", help="auto: bf16 (or fp16) AMP on CUDA, "
                                                                            "bf16 on CPUs with native bf16, else fp32."),
    device: Device = typer.Option(Device.auto, "--device"),
    workers: int = typer.Option(-1, "--workers", help="Decoding processes (-1: all cores, 0: none)."),
    threads: int = typer.Option(0, "--threads", min=0, help="torch threads (0: all cores)."),
    cache: Cache = typer.Option(Cache.auto, "--cache", help="Keep decoded images in RAM (auto: when they fit)."),
    deterministic: bool = typer.Option(False, "--deterministic", help="Deterministic kernels (slower)."),
    strict: bool = typer.Option(False, "--strict", help="Fail on the first unreadable image instead of skipping."),
    max_pixels: int = typer.Option(None, "--max-pixels", help="Refuse images with more pixels (default 200M)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing run folder."),
    resume: Path = typer.Option(None, "--resume", help="Continue the run in this folder from its last.pt."),
    list_models_: bool = typer.Option(False, "--list-models", help="List the architectures, then exit."),
) -> None:
    """Train a CNN on labelled micrographs and write a run folder.

    RUN contains best.pt and last.pt (model bundles), config.json, split.csv, metrics.csv, curves.png and
    the best model's validation report (val_report.json/.txt, val_per_class.csv, val_confusion.csv/.png,
    val_misclassified.csv). Ctrl-C stops after the current batch, writes last.pt and prints the command
    that resumes. Runs under `torchrun --nproc_per_node N` as DistributedDataParallel.

    Examples:

      microcli train sample_images -o runs/lenet --arch lenet --epochs 30

      microcli train data/ -o runs/r18 --arch resnet18 --img-size 128 --preprocess "clahe:clip=0.02"

      microcli train --resume runs/r18 --epochs 60
    """
    if list_models_:
        list_models()
        return
    with errors_to_exit():
        from ..train import TrainConfig, fit as run_fit, resume_config

        if resume is not None:
            cfg = resume_config(resume, epochs=epochs,
                                data=str(data) if data is not None else None)
        else:
            if data is None or out_dir is None:
                raise fail("give DATA and --out RUN_DIR (or --resume RUN_DIR)", 2)
            cfg = TrainConfig(
                str(data), str(out_dir), arch.value, epochs or 30, batch_size, lr, optimizer.value, weight_decay, 0.9,
                warmup_epochs, label_smoothing, class_weights.value, patience, val_split, seed, img_size,
                channels.value, fit.value, preprocess, augment, pretrained, precision.value, device.value,
                workers, threads, cache.value, deterministic, strict, max_pixels, force)
        result = _run_with_progress(run_fit, cfg, resume is not None)
    _render(result)
    if result.interrupted:
        err.print(f"[yellow]interrupted[/]: last.pt written; resume with:\n  {result.resume_command}", markup=True)
        raise typer.Exit(130)
    if result.skipped:
        raise typer.Exit(3)


train.__doc__ += "\n\n" + EXIT_CODES


def _is_rank0() -> bool:
    """Under torchrun only rank 0 talks; RANK is unset in a plain run."""
    return int(os.environ.get("RANK", "0")) == 0


def _run_with_progress(run_fit, cfg, resume: bool):
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
                task = bar.add_task(f"epoch {e.epoch}/{cfg.epochs}", total=e.total)
            elif e.kind == "batch" and task is not None:
                bar.update(task, completed=e.done)
            elif e.kind == "epoch_end":
                if task is not None:
                    bar.remove_task(task)
                    task = None
                r = e.row
                err.print(f"epoch {r['epoch']:>3}/{cfg.epochs}  train loss {r['train_loss']:.4f} acc "
                          f"{100 * r['train_acc']:5.1f}%  val loss {r['val_loss']:.4f} acc {100 * r['val_acc']:5.1f}% "
                          f"F1 {r['val_macro_f1']:.3f}  {r['seconds']:.1f} s  {r['images_per_s']:.0f} img/s")

        return run_fit(cfg, resume=resume, on_event=on_event)


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

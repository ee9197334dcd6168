"""Training: data -> cached tensors -> batched augmentation -> model, with safe bundles and resumable runs.

Speed on a CPU comes from doing the expensive parts once: each image is decoded, filtered and fitted
once (in worker processes) and kept in RAM as one tensor, and augmentation runs on whole batches. Under
`torchrun` the same code runs DistributedDataParallel (gloo on CPU, NCCL on CUDA); only rank 0 writes.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import shlex
import signal
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .augment import AugmentConfig, augment
from .checkpoint import Bundle, load_bundle, save_bundle, versions
from .data import (
    InputSpec,
    Item,
    detect_channels,
    discover,
    prepare_many,
    prepare_or_error,
    split_items,
    write_split_csv,
)
from .errors import DataError, OutputExistsError, UsageError
from .inference import (Predictor, average_views, eval_views, model_logits, normalize, pick_device, pick_dtype,
                        set_threads)
from .metrics import confusion_report
from .models import REGISTRY, create_model, load_pretrained
from .preprocess import Pipeline
from .report import plot_curves, write_json, write_report_files


DEFAULT_LR = {"lenet": 3e-3, "resnet18": 1e-3, "resnet34": 1e-3, "resnet50": 1e-3}


@dataclass(frozen=True)
class TrainConfig:
    data: str
    out: str
    arch: str = "lenet"
    epochs: int = 30
    batch_size: int = 64
    lr: float | None = None  # None: the architecture's default (DEFAULT_LR)
    optimizer: str = "adamw"
    weight_decay: float = 0.05
    momentum: float = 0.9
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    class_weights: str = "none"
    patience: int = 10
    val_split: float = 0.2
    seed: int = 0
    img_size: int = 0  # 0: auto, the median shorter side of the training images, 32..224
    channels: str = "auto"
    fit: str = "resize"
    preprocess: str = ""
    augment: bool = True
    pretrained: str | None = None
    precision: str = "auto"
    device: str = "auto"
    workers: int = -1  # -1: all cores for decoding
    threads: int = 0
    cache: str = "auto"
    deterministic: bool = False
    strict: bool = False
    max_pixels: int | None = None
    force: bool = False

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# --- events for progress displays ------------------------------------------------------------------------

@dataclass(frozen=True)
class Event:
    kind: str  # "load", "epoch_start", "batch", "epoch_end", "message"
    done: int = 0
    total: int = 0
    epoch: int = 0
    row: dict | None = None
    text: str = ""


Callback = Callable[[Event], None]


@dataclass
class TrainResult:
    run_dir: Path
    best_epoch: int
    best_score: float
    rows: list[dict]
    report: dict | None
    interrupted: bool = False
    stopped_early: bool = False
    skipped: list[tuple[str, str]] = field(default_factory=list)
    resume_command: str = ""


# --- distributed helpers -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local)
    return Dist(dist.get_rank(), dist.get_world_size(), local)


# --- data in memory or on disk ---------------------------------------------------------------------------

class Source:
    """Prepared images by index: from RAM (the cache) or decoded again on each request."""

    def __init__(self, paths: list[str], spec: InputSpec, arrays: list[np.ndarray] | None, workers: int,
                 max_pixels: int | None):
        self.paths, self.spec, self.workers, self.max_pixels = paths, spec, workers, max_pixels
        self.arrays = arrays
        self.stacked = None
        if arrays is not None and len({a.shape for a in arrays}) == 1:
            self.stacked = torch.from_numpy(np.stack(arrays))
        self._pool = None

    def __len__(self) -> int:
        return len(self.paths)

    def _get(self, idx: list[int]) -> list[np.ndarray]:
        if self.arrays is not None:
            return [self.arrays[i] for i in idx]
        args = [(self.paths[i], self.spec, self.max_pixels) for i in idx]
        if self.workers > 0:
            self._pool = self._pool or ProcessPoolExecutor(self.workers)
            got = list(self._pool.map(prepare_or_error, args, chunksize=max(1, len(args) // (2 * self.workers))))
        else:
            got = [prepare_or_error(a) for a in args]
        for g in got:
            if isinstance(g, str):
                raise DataError(f"{g} (it was readable when the run started)")
        return got

    def batch(self, idx: list[int], g: torch.Generator) -> torch.Tensor:
        """A training batch: the images (fit=resize), or random crops at native scale (fit=crop)."""
        size = self.spec.img_size
        if self.stacked is not None and self.spec.fit == "resize":
            return self.stacked[idx]
        arrays = self._get(idx)
        if self.spec.fit == "resize":
            return torch.from_numpy(np.stack(arrays))
        crops = []
        for a in arrays:
            h, w = a.shape[-2:]
            top = int(torch.randint(0, h - size + 1, (1,), generator=g))
            left = int(torch.randint(0, w - size + 1, (1,), generator=g))
            crops.append(a[:, top:top + size, left:left + size])
        return torch.from_numpy(np.ascontiguousarray(np.stack(crops)))

    def close(self) -> None:
        if self._pool:
            self._pool.shutdown(cancel_futures=True)


def _available_ram() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 << 30


# --- the run ---------------------------------------------------------------------------------------------

def _resolve_split(cfg: TrainConfig) -> tuple[list[str], dict[str, list[Item]], str]:
    found = discover(cfg.data)
    if found.presplit:
        if "train" not in found.splits:
            raise DataError(f"{cfg.data}: split data needs a 'train' part")
        splits = dict(found.splits)
        if "val" not in splits:
            splits["train"], splits["val"] = split_items(splits["train"], cfg.val_split, cfg.seed)
    else:
        train, val = split_items(found.splits["all"], cfg.val_split, cfg.seed)
        splits = {"train": train, "val": val}
    return found.classes, splits, found.source


def _load(items: list[Item], spec: InputSpec, cfg: TrainConfig, keep: bool, workers: int,
          on_event: Callback) -> tuple[list[int], list[np.ndarray] | None, list[tuple[str, str]], np.ndarray]:
    """One pass over the files: which load, their arrays (when cached) and per-channel sums for stats."""
    ok, arrays, failed = [], [] if keep else None, []
    sums = np.zeros((3, spec.channels), np.float64)  # count, sum, sum of squares per channel
    for i, got in enumerate(prepare_many([it.path for it in items], spec, workers=workers, max_pixels=cfg.max_pixels)):
        if isinstance(got, str):
            failed.append((items[i].path, got))
            if cfg.strict:
                raise DataError(f"{got} (--strict: stopping at the first unreadable image)")
        else:
            ok.append(i)
            if keep:
                arrays.append(got)
            flat = got.reshape(spec.channels, -1).astype(np.float64)
            sums += [[flat.shape[1]] * spec.channels, flat.sum(1), (flat**2).sum(1)]
        on_event(Event("load", i + 1, len(items)))
    return ok, arrays, failed, sums


def _check_counts(classes: list[str], labels: list[int], where: str) -> None:
    counts = np.bincount(labels, minlength=len(classes))
    missing = [c for c, n in zip(classes, counts) if n == 0]
    if missing:
        raise DataError(f"no readable {where} images for class(es): {', '.join(repr(c) for c in missing)}")


def _lr_lambda(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


def auto_img_size(items: list[Item], sample: int = 200) -> int:
    """The median shorter side of (up to `sample` of) the training images, clamped to 32..224."""
    from .io import image_shape

    step = max(1, len(items) // sample)
    sides = []
    for it in items[::step]:
        try:
            sides.append(min(image_shape(it.path)))
        except Exception:  # unreadable files are reported by the loading pass
            continue
    return int(np.clip(np.median(sides), 32, 224)) if sides else 128


RUN_FILES = ("best.pt", "last.pt", "config.json", "split.csv", "metrics.csv", "skipped.csv", "curves.png",
             *(f"val_{n}" for n in ("report.json", "report.txt", "per_class.csv", "confusion.csv",
                                     "misclassified.csv", "confusion.png")))


def _run_dir(cfg: TrainConfig, resume: bool) -> Path:
    run = Path(cfg.out)
    if resume:
        if not (run / "last.pt").is_file():
            raise UsageError(f"--resume {run}: no last.pt there to resume from")
    elif run.exists() and any(run.iterdir()):
        if not cfg.force:
            raise OutputExistsError(f"{run}: run folder exists and is not empty; use --force to overwrite it, "
                                    f"or --resume {run} to continue it")
        for name in RUN_FILES:  # only what a run writes: --force never deletes the user's other files
            (run / name).unlink(missing_ok=True)
    return run


def resume_config(run_dir: str | Path, **overrides) -> TrainConfig:
    """The config a run was started with, with the given options changed (epochs, data, device...)."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise UsageError(f"--resume {run_dir}: no config.json there")
    saved = json.loads(path.read_text())["train"]
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    saved = {k: v for k, v in saved.items() if k in names}
    saved.update({k: v for k, v in overrides.items() if v is not None})
    saved["out"] = str(run_dir)
    return TrainConfig(**saved)


def fit(cfg: TrainConfig, *, resume: bool = False, on_event: Callback | None = None) -> TrainResult:
    """Train a model as `cfg` says and write the run folder. See the README for its contents."""
    on_event = on_event or (lambda e: None)
    if cfg.arch not in REGISTRY:
        raise UsageError(f"unknown architecture {cfg.arch!r} (choices: {', '.join(REGISTRY)})")
    Pipeline.parse(cfg.preprocess)  # option errors before any file is read
    device = pick_device(cfg.device)
    amp_dtype = pick_dtype(cfg.precision, device, training=True)
    ddp = init_distributed(device)
    if ddp.world > 1 and device.type == "cuda":
        device = torch.device("cuda", ddp.local_rank)
    set_threads(cfg.threads)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    torch.manual_seed(cfg.seed)
    run = _run_dir(cfg, resume)
    previous = load_bundle(run / "last.pt") if resume else None

    classes, splits, source_kind = _resolve_split(cfg)
    if previous is not None and previous.classes != classes:
        raise DataError(f"--resume: the run was trained on classes {previous.classes}, but {cfg.data} has "
                        f"{classes}; start a new run instead")
    channels = {"auto": 0, "1": 1, "3": 3}.get(str(cfg.channels))
    if channels is None:
        raise UsageError(f"--channels must be auto, 1 or 3, got {cfg.channels!r}")
    if previous is not None:
        channels = previous.input.channels
    elif channels == 0:
        channels = detect_channels([it.path for it in splits["train"]], max_pixels=cfg.max_pixels)
    img_size = previous.input.img_size if previous is not None else (cfg.img_size or auto_img_size(splits["train"]))
    spec = InputSpec(channels, img_size, cfg.fit, tuple(Pipeline.parse(cfg.preprocess).to_list()))
    workers = (os.cpu_count() or 1) if cfg.workers < 0 else cfg.workers

    n_all = len(splits["train"]) + len(splits["val"])
    est = n_all * channels * img_size**2 * 4 * (4 if cfg.fit == "crop" else 1)
    cache = cfg.cache if cfg.cache != "auto" else ("ram" if est < _available_ram() // 2 else "none")
    on_event(Event("message", text=f"{len(classes)} classes, {len(splits['train'])} train / "
                                   f"{len(splits['val'])} val images; {channels} channel(s); cache: {cache}"))
    tr_ok, tr_arrays, tr_failed, sums = _load(splits["train"], spec, cfg, cache == "ram", workers, on_event)
    va_ok, va_arrays, va_failed, _ = _load(splits["val"], spec, cfg, True, workers, on_event)
    skipped = tr_failed + va_failed
    train_items = [splits["train"][i] for i in tr_ok]
    val_items = [splits["val"][i] for i in va_ok]
    index = {c: i for i, c in enumerate(classes)}
    y_train = [index[it.label] for it in train_items]
    y_val = [index[it.label] for it in val_items]
    _check_counts(classes, y_train, "training")
    if not val_items:
        raise DataError("no readable validation images")
    if previous is not None:
        spec = previous.input
    else:
        count, total, sq = sums
        mean = total / count
        std = np.sqrt(np.maximum(sq / count - mean**2, 1e-12))
        spec = dataclasses.replace(spec, mean=tuple(float(m) for m in mean), std=tuple(float(max(s, 1e-3)) for s in std))

    if ddp.main:
        run.mkdir(parents=True, exist_ok=True)
        out_splits = {"train": train_items, "val": val_items, **{k: v for k, v in splits.items() if k == "test"}}
        write_split_csv(run / "split.csv", out_splits)
        if skipped:
            with open(run / "skipped.csv", "w", newline="") as fh:
                csv.writer(fh).writerows([("path", "error"), *skipped])

    model = create_model(cfg.arch, len(classes), channels)
    if cfg.pretrained and previous is None:
        load_pretrained(model, cfg.arch, cfg.pretrained)
    if previous is not None:
        model.load_state_dict(previous.state_dict)
    channels_last = True  # measured faster for every registry model on CPU (oneDNN) and GPU
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    net: nn.Module = model
    if ddp.world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    params = [{"params": [p for n, p in model.named_parameters() if p.ndim > 1], "weight_decay": cfg.weight_decay},
              {"params": [p for n, p in model.named_parameters() if p.ndim <= 1], "weight_decay": 0.0}]
    lr = cfg.lr or DEFAULT_LR[cfg.arch]
    if cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=lr)
    elif cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, nesterov=True)
    else:
        raise UsageError(f"--optimizer must be adamw or sgd, got {cfg.optimizer!r}")
    per_rank = len(train_items) // ddp.world
    # Tiny data sets (a few dozen images per class) get smaller batches, so that an epoch is still
    # several optimiser steps; the resolved size is written to config.json.
    bs = max(1, min(cfg.batch_size, per_rank, max(8, per_rank // 16)))
    steps_per_epoch = max(1, per_rank // bs)  # full batches only: BatchNorm needs more than one image
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, _lr_lambda(cfg.epochs * steps_per_epoch, max(1, int(cfg.warmup_epochs * steps_per_epoch))))
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    weight = None
    if cfg.class_weights == "balanced":
        counts = np.bincount(y_train, minlength=len(classes))
        weight = torch.tensor(len(y_train) / (len(classes) * counts), dtype=torch.float32, device=device)
    elif cfg.class_weights != "none":
        raise UsageError(f"--class-weights must be none or balanced, got {cfg.class_weights!r}")
    criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)

    state = {"epoch": 0, "best_score": -1.0, "best_epoch": 0, "bad_epochs": 0, "rows": []}
    if previous is not None and previous.training_state:
        ts = previous.training_state
        opt.load_state_dict(ts["optimizer"])
        sched.load_state_dict(ts["scheduler"])
        scaler.load_state_dict(ts["scaler"])
        state.update({k: ts[k] for k in ("epoch", "best_score", "best_epoch", "bad_epochs")})
        state["rows"] = [dict(r) for r in ts["rows"]]

    train_src = Source([it.path for it in train_items], spec, tr_arrays, workers, cfg.max_pixels)
    val_views = eval_views(va_arrays, spec)  # the same views evaluate and predict use
    y_train_t = torch.tensor(y_train)
    data_summary = {
        "data": str(cfg.data), "source": source_kind, "classes": classes,
        "train_images": len(train_items), "val_images": len(val_items), "skipped": len(skipped),
        "train_per_class": dict(zip(classes, map(int, np.bincount(y_train, minlength=len(classes))))),
    }
    resolved = {"channels": channels, "device": str(device), "precision": str(amp_dtype or "fp32"),
                "cache": cache, "workers": workers, "world_size": ddp.world, "input": spec.to_dict(),
                "augment": AugmentConfig().to_dict() if cfg.augment else None, "batch_size": bs,
                "steps_per_epoch": steps_per_epoch, "lr": lr}
    if ddp.main:
        write_json(run / "config.json", {"train": cfg.to_dict(), "resolved": resolved, "versions": versions()})

    def bundle(with_state: bool, metrics: dict) -> Bundle:
        ts = None
        if with_state:
            ts = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
                  **{k: state[k] for k in ("epoch", "best_score", "best_epoch", "bad_epochs")},
                  "rows": state["rows"]}
        sd = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        return Bundle(cfg.arch, classes, spec, sd, cfg.to_dict(), metrics, data_summary, versions(), ts)

    step_ctx = StepContext(net, opt, sched, scaler, criterion, device, amp_dtype, spec, cfg.augment, channels_last)
    stop = {"now": False}

    def on_sigint(signum, frame):
        if stop["now"]:
            raise KeyboardInterrupt
        stop["now"] = True

    old_handler = signal.signal(signal.SIGINT, on_sigint) if _main_thread() else None
    interrupted = stopped_early = False
    resume_cmd = f"microcli train --resume {shlex.quote(str(run))}"
    try:
        for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
            t0 = time.perf_counter()
            g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)  # resume replays the same epoch
            perm = torch.randperm(len(train_items), generator=g)[: per_rank * ddp.world][ddp.rank::ddp.world]
            on_event(Event("epoch_start", 0, steps_per_epoch, epoch))
            tot, interrupted = train_one_epoch(
                step_ctx, train_src, perm, y_train_t, bs, steps_per_epoch, g, lambda: _should_stop(stop, ddp),
                lambda i: on_event(Event("batch", i, steps_per_epoch, epoch)))
            if interrupted:
                break
            if ddp.world > 1:
                tot = tot.to(device)
                dist.all_reduce(tot)
                tot = tot.cpu()
            val_probs, val_loss = _validate(net if ddp.world == 1 else model, val_views, y_val, spec, device, amp_dtype,
                                            channels_last, ddp)
            rep = confusion_report(y_val, val_probs, classes)
            seconds = time.perf_counter() - t0
            row = {"epoch": epoch, "train_loss": tot[0].item() / tot[2].item(), "train_acc": tot[1].item() / tot[2].item(),
                   "val_loss": val_loss, "val_acc": rep["overall"]["accuracy"], "val_macro_f1": rep["overall"]["macro_f1"],
                   "lr": opt.param_groups[0]["lr"], "seconds": seconds, "images_per_s": tot[2].item() / seconds}
            state["rows"].append(row)
            state["epoch"] = epoch
            improved = row["val_macro_f1"] > state["best_score"]
            if improved:
                state.update(best_score=row["val_macro_f1"], best_epoch=epoch, bad_epochs=0)
            else:
                state["bad_epochs"] += 1
            if ddp.main:
                _append_metrics(run / "metrics.csv", row)
                metrics = {"epoch": epoch, **{k: row[k] for k in ("val_loss", "val_acc", "val_macro_f1")}}
                if improved:
                    save_bundle(bundle(False, metrics), run / "best.pt")
                save_bundle(bundle(True, metrics), run / "last.pt")
            on_event(Event("epoch_end", epoch=epoch, row=row))
            if cfg.patience and state["bad_epochs"] >= cfg.patience:
                stopped_early = True
                on_event(Event("message", text=f"early stop: no better validation macro-F1 for {cfg.patience} epochs"))
                break
        if interrupted and ddp.main:
            save_bundle(bundle(True, {"epoch": state["epoch"], "interrupted": True}), run / "last.pt")
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGINT, old_handler)
        train_src.close()

    report = None
    if ddp.main and state["rows"]:
        plot_curves(run / "curves.png", state["rows"])
        if (run / "best.pt").is_file():
            report = final_report(run, val_items)
    if ddp.world > 1:
        dist.barrier()
    return TrainResult(run, state["best_epoch"], state["best_score"], state["rows"], report, interrupted,
                       stopped_early, skipped, resume_cmd)


@dataclass(frozen=True)
class StepContext:
    """Everything one optimisation step needs."""

    net: nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    device: torch.device
    amp_dtype: torch.dtype | None
    spec: InputSpec
    augment: bool
    channels_last: bool


def train_one_epoch(ctx: StepContext, source: Source, perm: torch.Tensor, labels: torch.Tensor, bs: int, steps: int,
                    g: torch.Generator, should_stop: Callable[[], bool],
                    on_batch: Callable[[int], None]) -> tuple[torch.Tensor, bool]:
    """One pass over `perm` in full batches. Returns (loss sum, correct, seen) and whether it was stopped."""
    ctx.net.train()
    tot = torch.zeros(3, dtype=torch.float64, device=ctx.device)  # on the device: no sync per step
    aug = AugmentConfig()
    for step in range(steps):
        if should_stop():
            return tot.cpu(), True
        idx = perm[step * bs:(step + 1) * bs].tolist()
        x = source.batch(idx, g).to(ctx.device, non_blocking=True)
        y = labels[idx].to(ctx.device, non_blocking=True)
        if ctx.augment:
            x = augment(x, aug, g)
        x = normalize(x, ctx.spec)
        if ctx.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(ctx.device.type, dtype=ctx.amp_dtype or torch.bfloat16, enabled=ctx.amp_dtype is not None):
            logits = ctx.net(x)
            loss = ctx.criterion(logits.float(), y)
        ctx.opt.zero_grad(set_to_none=True)
        ctx.scaler.scale(loss).backward()
        ctx.scaler.step(ctx.opt)
        ctx.scaler.update()
        ctx.sched.step()
        with torch.no_grad():
            tot += torch.stack([loss.detach().double() * len(idx), (logits.argmax(1) == y).sum().double(),
                                torch.tensor(float(len(idx)), dtype=torch.float64, device=ctx.device)])
        on_batch(step + 1)
    return tot.cpu(), False


def final_report(run: Path, val_items: list[Item]) -> dict:
    """The best model's validation report, computed exactly as `microcli evaluate RUN --split val` does."""
    from .evaluate import evaluate_items

    report = evaluate_items(Predictor(load_bundle(run / "best.pt")), val_items, workers=0).report
    write_report_files(run, report, stem="val_")
    return report


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _should_stop(stop: dict, ddp: Dist) -> bool:
    if ddp.world == 1:
        return stop["now"]
    flag = torch.tensor([1.0 if stop["now"] else 0.0])
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)  # every rank leaves at the same step, or none would
    return bool(flag.item())


@torch.no_grad()
def _validate(model, views, y_val, spec, device, amp_dtype, channels_last, ddp: Dist) -> tuple[np.ndarray, float]:
    """Validation softmax over every view (each rank its slice, then gathered), averaged per image."""
    model.eval()
    x_all, owner = views
    idx = list(range(ddp.rank, len(x_all), ddp.world))
    probs = []
    for i in range(0, len(idx), 256):
        logits = model_logits(model, x_all[idx[i:i + 256]], spec, device, amp_dtype, channels_last)
        probs.append(F.softmax(logits, 1).cpu())
    mine = torch.cat(probs).numpy() if probs else np.zeros((0, 1), np.float32)
    if ddp.world > 1:
        gathered: list = [None] * ddp.world
        dist.all_gather_object(gathered, (idx, mine))
        full = np.zeros((len(x_all), max(p.shape[1] for _, p in gathered)), np.float32)
        for ids, p in gathered:
            if len(ids):
                full[ids] = p
    else:
        full = mine
    full = average_views(full, owner, len(y_val))
    y = np.asarray(y_val)
    loss = float(-np.log(np.clip(full[np.arange(len(y)), y], 1e-15, 1)).mean())
    return full, loss


def _append_metrics(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})



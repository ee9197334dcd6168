"""Training: data decoded once -> batched augmentation -> model, with safe bundles and resumable runs.

`train_model` reads like a table of contents: set up the runtime, open the run folder, split the data,
settle the input, decode the images once, then `train_decoded`, which trains on images already in
memory (cross-validation calls it once per fold). Under `torchrun` the same code runs
DistributedDataParallel (gloo on CPU, NCCL on CUDA); only rank 0 writes (see `RunFolder`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import shlex
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .augment import AugmentConfig, augment
from .checkpoint import Bundle, load_bundle, save_bundle, versions
from .config import Resolved, TrainConfig
from .data import Item, discover, read_split_csv
from .dataset import DecodedSet, Source, choose_cache, decode_items
from .errors import DataError, UsageError
from .engines import Predictor, Views, average_views, network_views
from .inference import model_logits, normalize, pick_device, pick_dtype, set_threads
from .inputs import CROP_WHOLE, InputSpec, detect_channels
from .metrics import TEMPERATURE_RANGE, confusion_report, fit_temperature, log_loss, softmax_of_views
from .models import create_model, get_model_info, load_pretrained
from .options import Fit
from .parallel import auto_workers
from .preprocess import Pipeline
from .recipe import batch_plan, choose_recipe, class_weights, data_stats, plan_epochs, sample_weights
from .report import write_report_files
from .runfolder import RunFolder, check_run_path
from .splits import groups_from_names, stratified_group_split

MAX_TIMED_EPOCHS = 200  # the most epochs a --time budget plans

__all__ = ["TrainConfig", "TrainResult", "Event", "train_model", "train_decoded", "resume_config"]


# --- what the caller sees --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Event:
    """Progress for displays: kind is "load", "epoch_start", "batch", "epoch_end" or "message"."""

    kind: str
    done: int = 0
    total: int = 0
    epoch: int = 0
    row: dict | None = None
    text: str = ""


Callback = Callable[[Event], None]


def _ignore(event: Event) -> None:
    pass


@dataclass
class TrainResult:
    """What a run did: its folder, the best epoch and score (validation macro-F1), one row per epoch,
    the best model's validation report, and how it ended."""

    run_dir: Path
    best_epoch: int
    best_score: float
    rows: list[dict]
    report: dict | None
    interrupted: bool = False
    stopped_early: bool = False
    skipped: list[tuple[str, str]] = field(default_factory=list)
    resume_command: str = ""
    temperature: float | None = None  # folded into best.pt's output layer (None: not calibrated)


# --- the runtime: device, precision, processes -------------------------------------------------------------

@dataclass(frozen=True)
class Runtime:
    """Where the run computes: device, autocast dtype (None: fp32) and its place in a distributed run."""

    device: torch.device
    amp_dtype: torch.dtype | None
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """True on rank 0, the only one that writes."""
        return self.rank == 0

    @classmethod
    def setup(cls, cfg: TrainConfig) -> Runtime:
        """Pick device and precision, join the process group under torchrun, set threads and seeds."""
        device = pick_device(cfg.device.value)
        amp_dtype = pick_dtype(cfg.precision.value, device, training=True)
        rank, world = 0, int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1:
            if not dist.is_initialized():
                dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            rank, world = dist.get_rank(), dist.get_world_size()
            if device.type == "cuda":
                device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
                torch.cuda.set_device(device)
        set_threads(cfg.threads)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        torch.manual_seed(cfg.seed)
        return cls(device, amp_dtype, rank, world)

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum over ranks (identity in a single process)."""
        if self.world > 1:
            t = t.to(self.device)
            dist.all_reduce(t)
        return t.cpu()


# --- data ----------------------------------------------------------------------------------------------

@dataclass
class TrainData:
    """Decoded training and validation images, with the split they came from."""

    classes: list[str]
    train: DecodedSet
    val: DecodedSet
    held_out: dict[str, list[Item]] = field(default_factory=dict)  # e.g. a test split, recorded in split.csv
    source: str = ""
    cache: str = "ram"
    cache_reason: str = ""

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """(path, message) of every unreadable training or validation image."""
        return self.train.failed + self.val.failed


def resolve_splits(cfg: TrainConfig) -> tuple[list[str], dict[str, list[Item]], str, list[str]]:
    """Class names, the train/val(/test) items, the kind of source ("folders", "manifest"...) and the
    split's warnings. Without a given val part, a stratified group split of `val_split` is drawn."""
    found = discover(cfg.data)
    splits = {k: (groups_from_names(v, cfg.group_by) if cfg.group_by else list(v)) for k, v in found.splits.items()}
    if found.presplit and "train" not in splits:
        raise DataError(f"{cfg.data}: split data needs a 'train' part")

    def absent(part: str) -> str:
        return ", ".join(map(repr, sorted(set(found.classes) - {it.label for it in splits[part]})))

    if found.presplit and absent("train"):  # a drawn split keeps every class in train
        raise DataError(f"{cfg.data}: the train part has no image of class(es) {absent('train')}, which only the "
                        "other parts hold; a model cannot learn a class it never sees: move some of its images "
                        "into train")
    warnings: list[str] = []
    if "val" not in splits:
        drawn = stratified_group_split(splits.pop("all", None) or splits["train"], val=cfg.val_split, seed=cfg.seed)
        splits["train"], splits["val"] = drawn.train, drawn.val
        warnings = list(drawn.warnings)  # they name the classes a drawn split cannot hold out
    else:
        if absent("val") and splits["val"]:
            warnings.append(f"{cfg.data}: the val part has no image of class(es) {absent('val')}: validation "
                            "macro-F1, which picks best.pt and stops early, cannot see it")
        trained = {it.group for it in splits["train"] if it.group}
        for part in ("val", "test"):
            shared = sorted({it.group for it in splits.get(part, []) if it.group in trained})
            if shared:
                warnings.append(f"{cfg.data}: {len(shared)} group(s) have images in both train and {part} (e.g. "
                                f"{shared[0]!r}): {part} then holds specimens that training saw, and its figures "
                                "overstate; `microcli split` keeps each group on one side")
    return found.classes, splits, found.source, warnings


def _resumed_splits(split_csv: Path, fresh: dict[str, list[Item]], data: str) -> tuple[dict[str, list[Item]],
                                                                                    list[str]]:
    """A resumed run goes on with the split it started with (a split drawn again from data that has changed
    would move images the model trained on into validation), and says what DATA holds beyond it."""
    kept = read_split_csv(split_csv)
    known = {os.path.abspath(it.path) for items in kept.values() for it in items}
    new = [it.path for items in fresh.values() for it in items if os.path.abspath(it.path) not in known]
    warnings = [f"{data}: {len(new)} image(s) are not in the run's split.csv (added since the run started, e.g. "
                f"{new[0]}); a resumed run keeps its split, so they are not used: start a new run to train on them"
                ] if new else []
    return kept, warnings


def resolve_input(cfg: TrainConfig, train_items: list[Item], previous: Bundle | None) -> tuple[InputSpec, dict]:
    """The input spec: channels from the option or the images (with the reason), the size, fit and
    pipeline of the concrete `cfg`; a resumed run keeps its own."""
    if previous is not None:
        return previous.input, {"input": "from the resumed run's last.pt"}
    reasons = {}
    channels = {"1": 1, "3": 3}.get(cfg.channels.value)
    if channels is None:
        channels = detect_channels([it.path for it in train_items], max_pixels=cfg.max_pixels)
        reasons["channels"] = "every image is gray" if channels == 1 else "some images have colour"
    whole = 0
    if cfg.fit is Fit.crop and get_model_info(cfg.arch.value).any_size:
        whole = CROP_WHOLE * cfg.img_size
        reasons["whole"] = (f"{whole} px: an image up to {whole} x {whole} px is evaluated whole, in one pass at "
                            f"native scale; a larger one on {cfg.img_size} px tiles, their softmax averaged")
    return InputSpec(channels, cfg.img_size, cfg.fit.value, tuple(Pipeline.parse(cfg.preprocess).to_list()),
                     whole=whole), reasons


def decode_splits(cfg: TrainConfig, classes: list[str], splits: dict[str, list[Item]], spec: InputSpec,
                  source: str, on_event: Callback) -> TrainData:
    """Decode the training and validation images once (validation always in RAM)."""
    workers = auto_workers(cfg.workers)
    cache, why = choose_cache(cfg.cache.value, len(splits["train"]) + len(splits["val"]), spec)

    def decode(items: list[Item], keep: bool) -> DecodedSet:
        return decode_items(items, spec, keep=keep, workers=workers, max_pixels=cfg.max_pixels, strict=cfg.strict,
                            on_progress=lambda d, t: on_event(Event("load", d, t)))

    held_out = {k: v for k, v in splits.items() if k not in ("train", "val")}
    data = TrainData(classes, decode(splits["train"], cache == "ram"), decode(splits["val"], True), held_out,
                     source, cache, why)
    unreadable = f"; {len(data.skipped)} unreadable image(s) skipped" if data.skipped else ""
    lost = sorted({it.label for it in splits["val"]} - {it.label for it in data.val.items})
    if lost:
        on_event(Event("message", text=f"warning: every validation image of class(es) {', '.join(map(repr, lost))} "
                                       "was unreadable: validation macro-F1 cannot see them"))
    on_event(Event("message", text=f"{len(classes)} classes, {len(data.train)} train / {len(data.val)} val images; "
                                   f"{spec.channels} channel(s); cache: {cache}{unreadable}"))
    return data


# --- model, optimiser, loss ------------------------------------------------------------------------------

def build_network(cfg: TrainConfig, num_classes: int, channels: int, env: Runtime,
                  previous: Bundle | None) -> tuple[nn.Module, nn.Module]:
    """The model (its weights fresh, pretrained or resumed) in channels_last on the device, and the
    module to train (the DDP wrapper in a distributed run)."""
    model = create_model(cfg.arch.value, num_classes, channels)
    if previous is not None:
        model.load_state_dict(previous.state_dict)
    elif cfg.pretrained:
        load_pretrained(model, cfg.arch.value, cfg.pretrained)
    # channels_last: measured faster for every registry model on CPU (oneDNN) and GPU.
    model = model.to(env.device, memory_format=torch.channels_last)
    if env.world == 1:
        return model, model
    ids = [env.device.index] if env.device.type == "cuda" else None
    return model, nn.parallel.DistributedDataParallel(model, device_ids=ids)


def build_optimizer(cfg: TrainConfig, model: nn.Module, steps_per_epoch: int, env: Runtime,
                    epochs: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler,
                                          torch.amp.GradScaler, WarmupCosine]:
    """AdamW or SGD with weight decay on weights only (not on biases and norms), linear warm-up then
    cosine decay per step over `epochs` (the schedule can be re-planned), and a gradient scaler that is
    active for fp16 only."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    lr = cfg.lr_or_default
    if cfg.optimizer.value == "sgd":
        opt = torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=True)
    else:
        opt = torch.optim.AdamW(groups, lr=lr)
    shape = WarmupCosine(epochs, steps_per_epoch, max(1, int(cfg.warmup_epochs * steps_per_epoch)))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, shape)
    return opt, sched, torch.amp.GradScaler(env.device.type, enabled=env.amp_dtype == torch.float16), shape


@dataclass
class WarmupCosine:
    """The learning-rate factor per step: linear from 1/warmup to 1, then half a cosine down to 0 after
    `epochs` epochs. `epochs` may change during a run (a time budget re-plans them, a resumed run may
    be given more)."""

    epochs: int
    steps_per_epoch: int
    warmup_steps: int

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        total = self.epochs * self.steps_per_epoch
        progress = (step - self.warmup_steps) / max(1, total - self.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def build_ema(model: nn.Module, steps_per_epoch: int) -> torch.optim.swa_utils.AveragedModel:
    """An exponential moving average of the weights and BatchNorm statistics (torch's AveragedModel).

    Its horizon is about one epoch (decay 1 - 1/steps_per_epoch, within 0.9..0.9999), so the model
    validated and saved is the average of the last epoch's steps: validation on a small set then
    swings far less from epoch to epoch. The decay ramps up over the first steps ((1+n)/(10+n), as timm
    does), so that the random initialisation is forgotten quickly.
    """
    decay = min(0.9999, max(0.9, 1 - 1 / max(1, steps_per_epoch)))

    @torch.no_grad()
    def ema_update(ema_params, params, num_averaged):
        d = min(decay, (1 + float(num_averaged)) / (10 + float(num_averaged)))
        floats = [(e, p) for e, p in zip(ema_params, params) if e.is_floating_point()]
        if floats:  # AveragedModel calls this once per (device, dtype) group
            torch._foreach_lerp_([e for e, _ in floats], [p for _, p in floats], 1 - d)
        for e, p in zip(ema_params, params):
            if not e.is_floating_point():  # BatchNorm's step counter
                e.copy_(p)

    return torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=ema_update, use_buffers=True)


def build_criterion(cfg: TrainConfig, labels: list[int], num_classes: int, device: torch.device) -> nn.Module:
    """Cross-entropy with label smoothing and, if asked, class weights (`microcli.recipe.class_weights`:
    normalised and bounded, so that a rare class cannot blow the loss up)."""
    w = class_weights(labels, num_classes, cfg.class_weights.value)
    weight = None if w is None else torch.tensor(w, dtype=torch.float32, device=device)
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)


# --- state across epochs -------------------------------------------------------------------------------

@dataclass
class EarlyStopping:
    """Tracks the best validation score; `should_stop` after `patience` epochs without a better one
    (patience 0: never), but never before `min_epochs`: early in a schedule the learning rate is high and
    a small validation set swings, so a run is not judged before half of it has passed."""

    patience: int
    min_epochs: int = 0
    best_score: float = -1.0
    best_epoch: int = 0
    bad_epochs: int = 0
    epoch: int = 0

    def update(self, epoch: int, score: float) -> bool:
        """Record an epoch's score; True when it is the best so far."""
        self.epoch = epoch
        if score > self.best_score:
            self.best_score, self.best_epoch, self.bad_epochs = score, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        """True after `patience` epochs without improvement, once `min_epochs` are done."""
        return bool(self.patience) and self.bad_epochs >= self.patience and self.epoch >= self.min_epochs


@dataclass
class TrainState:
    """What last.pt carries to resume: the epoch reached, the metric rows, the early-stopping record,
    and the optimiser, scheduler and scaler."""

    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    shape: WarmupCosine
    stopper: EarlyStopping
    planned: int  # epochs in the schedule (re-planned under a time budget)
    model: nn.Module  # the trained weights
    ema: nn.Module | None = None  # their moving average, which is validated and saved
    epoch: int = 0
    rows: list[dict] = field(default_factory=list)

    def restore(self, saved: dict | None, bundle_weights: dict | None, *, timed: bool = False) -> TrainState:
        """Continue from last.pt's training_state (and its weights: the average, when EMA is on). The
        schedule keeps the epochs asked for now, or, under a time budget, the ones planned then."""
        if saved:
            self.opt.load_state_dict(saved["optimizer"])
            self.sched.load_state_dict(saved["scheduler"])  # also restores the WarmupCosine's fields
            self.scaler.load_state_dict(saved["scaler"])
            self.stopper = dataclasses.replace(self.stopper, **{k: saved[k] for k in (
                "best_score", "best_epoch", "bad_epochs")}, epoch=saved["epoch"])
            self.epoch, self.rows = saved["epoch"], [dict(r) for r in saved["rows"]]
            if timed:
                self.planned = saved.get("planned", self.planned)
            self.shape.epochs = self.planned
            if "model" in saved:  # EMA runs keep the trained weights apart from the average
                self.model.load_state_dict(saved["model"])
            if self.ema is not None and bundle_weights is not None:
                self.ema.module.load_state_dict(bundle_weights)
                self.ema.n_averaged.fill_(saved.get("ema_steps", 0))
        return self

    @property
    def weights(self) -> nn.Module:
        """The model that is validated and saved."""
        return self.ema.module if self.ema is not None else self.model

    def to_dict(self) -> dict:
        s = self.stopper
        out = {"optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
               "scaler": self.scaler.state_dict(), "epoch": self.epoch, "best_score": s.best_score,
               "best_epoch": s.best_epoch, "bad_epochs": s.bad_epochs, "rows": self.rows, "planned": self.planned}
        if self.ema is not None:
            out["model"] = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
            out["ema_steps"] = int(self.ema.n_averaged)
        return out


# --- the run ---------------------------------------------------------------------------------------------

def train_model(cfg: TrainConfig, *, resume: bool = False, on_event: Callback | None = None) -> TrainResult:
    """Train a model as `cfg` says and write the run folder (see the README for its files).

    Parameters
    ----------
    cfg : the checked configuration.
    resume : continue the run in ``cfg.out`` from its last.pt (see `resume_config`).
    on_event : progress callback (`Event`); the library itself never prints.

    Returns
    -------
    TrainResult

    Raises
    ------
    UsageError, OutputExistsError : before any image is read.
    DataError : no usable data (empty classes, nothing readable, classes differ from the resumed run).

    Examples
    --------
    >>> train_model(TrainConfig(data="sample_images", out="runs/a", epochs=5)).best_score  # doctest: +SKIP
    """
    started = time.perf_counter()
    on_event = on_event or _ignore
    check_run_path(cfg.out, cfg.data)
    env = Runtime.setup(cfg)
    run = RunFolder.open(cfg.out, resume=resume, force=cfg.force, main=env.main)
    previous = run.load_last() if resume else None
    if previous is not None and cfg.epochs and cfg.time is None:
        done = (previous.training_state or {}).get("epoch", 0)
        if done >= cfg.epochs:
            raise UsageError(f"--resume {cfg.out}: the run has trained {done} epochs, and --epochs {cfg.epochs} asks "
                             f"for no more; give --epochs above {done} to go on")
    classes, splits, source, warnings = resolve_splits(cfg)
    if previous is not None and (run.path / "split.csv").is_file():  # the drawn split and its warnings go unused
        splits, warnings = _resumed_splits(run.path / "split.csv", splits, cfg.data)
    for w in warnings:
        on_event(Event("message", text=f"warning: {w}"))
    if previous is not None and previous.classes != classes:
        raise DataError(f"--resume: the run was trained on classes {previous.classes}, but {cfg.data} has "
                        f"{classes}; start a new run instead")
    cfg, reasons = resolve_recipe(cfg, splits["train"], env, on_event)
    spec, input_reasons = resolve_input(cfg, splits["train"], previous)
    data = decode_splits(cfg, classes, splits, spec, source, on_event)
    return train_decoded(cfg, data, run, env, previous=previous, reasons={**reasons, **input_reasons},
                         started=started, on_event=on_event)


def resolve_recipe(cfg: TrainConfig, items: list[Item], env: Runtime, on_event: Callback = _ignore, *,
                   n_train: int | None = None) -> tuple[TrainConfig, dict[str, str]]:
    """The configuration with every 'auto' chosen from the data (`microcli.recipe`), each choice
    announced with its reason. A resumed run's configuration is already concrete.

    `n_train`: the images an epoch trains on where that is not ``len(items)`` (cross-validation
    surveys every image but trains each fold on part of them)."""
    if cfg.resolved:
        return cfg, {}
    stats = data_stats(items)
    if n_train is not None:
        stats = dataclasses.replace(stats, n_images=n_train)
    concrete, reasons = choose_recipe(cfg, stats, gpu=env.device.type == "cuda")
    for name, why in reasons.items():
        on_event(Event("message", text=f"{name.replace('_', '-')}: {why}"))
    return concrete, reasons


def train_decoded(cfg: TrainConfig, data: TrainData, run: RunFolder, env: Runtime, *, previous: Bundle | None = None,
                  reasons: dict | None = None, final: bool = False, started: float | None = None,
                  on_event: Callback = _ignore) -> TrainResult:
    """Train on images already decoded (`TrainData`) into `run`; the part of a run after reading files.

    `cfg` must be concrete (`resolve_recipe`). `final=True` trains on all of `data.train` without
    validation (a refit after cross-validation): `data.val` may be empty, and best.pt is the last
    epoch's model. `started` (a `time.perf_counter()` value) is when the run's time budget began.
    """
    classes = data.classes
    y_train, y_val = data.train.labels(classes), data.val.labels(classes)
    _check_counts(classes, y_train, "training", data.skipped)
    if not len(data.val) and not final:
        raise DataError("no readable validation images")
    spec = previous.input if previous is not None else data.train.normalised_spec()
    model, net = build_network(cfg, len(classes), spec.channels, env, previous)
    bs, steps = batch_plan(cfg.batch_size, len(data.train), env.world)
    if bs != cfg.batch_size and previous is None:
        on_event(Event("message", text=f"batch size {bs}, not {cfg.batch_size}: {len(data.train)} training images"
                                       f"{f' over {env.world} processes' if env.world > 1 else ''}, so that an "
                                       f"epoch still has {steps} optimiser steps"))
    planned = cfg.epochs or MAX_TIMED_EPOCHS  # under --time: re-planned after each epoch (--epochs caps it)
    opt, sched, scaler, shape = build_optimizer(cfg, model, steps, env, planned)
    stopper = EarlyStopping(cfg.patience, min_epochs=planned // 2)
    state = TrainState(opt, sched, scaler, shape, stopper, planned, model,
                       build_ema(model, steps) if cfg.ema else None).restore(
        previous.training_state if previous is not None else None,
        previous.state_dict if previous is not None else None, timed=cfg.epochs is None)
    summary = _data_summary(cfg, data, y_train)
    workers = auto_workers(cfg.workers)
    precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(env.amp_dtype, "fp32")
    reasons = {**(reasons or {}), **({"cache": data.cache_reason} if data.cache_reason else {})}
    resolved = Resolved(spec.channels, spec.img_size, str(env.device), precision, data.cache, workers, env.world,
                        bs, steps, cfg.lr_or_default, spec.to_dict(), AugmentConfig().to_dict() if cfg.augment else None,
                        reasons)
    run.write_start(splits={"train": data.train.items, "val": data.val.items, **data.held_out},
                    skipped=data.skipped, config={"train": cfg.to_saved(), "resolved": resolved.to_dict(),
                                                  "versions": versions()})

    def bundle(metrics: dict, *, resumable: bool) -> Bundle:
        sd = {k: v.detach().cpu().clone() for k, v in state.weights.state_dict().items()}
        return Bundle(cfg.arch.value, classes, spec, sd, cfg.to_dict(), metrics, summary, versions(),
                      state.to_dict() if resumable else None)

    ctx = StepContext(net, opt, sched, scaler, build_criterion(cfg, y_train, len(classes), env.device), env.device,
                      env.amp_dtype, spec, cfg.augment)
    source = Source(data.train, workers=workers, max_pixels=cfg.max_pixels)
    try:
        views = network_views(data.val.arrays, spec) if len(data.val) else None
        draw = sample_weights(y_train, len(classes), cfg.sampler.value)
        loop = EpochLoop(ctx, source, torch.tensor(y_train), bs, steps, views, y_val, classes,
                         None if draw is None else torch.tensor(draw), started or time.perf_counter())
        interrupted, stopped_early = _run_epochs(cfg, loop, state, run, env, bundle, on_event)
    finally:
        source.close()
    report = temperature = None
    if env.main and state.rows:
        run.write_curves(state.rows)
        if run.has_best and len(data.val):
            if cfg.calibrate:
                try:  # an add-on: the run's model must not be lost to it, nor other ranks left at the barrier
                    temperature = calibrate(run.path / "best.pt", views, y_val, env, on_event)
                except (RuntimeError, ValueError, OSError) as exc:
                    on_event(Event("message", text=f"calibration failed, best.pt is left as it was: "
                                                   f"{type(exc).__name__}: {exc}"))
            report = final_report(run.path, data.val.items)
    if env.world > 1:
        dist.barrier()
    return TrainResult(run.path, state.stopper.best_epoch, state.stopper.best_score, state.rows, report,
                       interrupted, stopped_early, data.skipped,
                       f"microcli train --resume {shlex.quote(str(run.path))}", temperature)


@dataclass(frozen=True)
class EpochLoop:
    """What every epoch reuses: the step context, the training source and labels, the batch plan, and
    the validation views (`network_views`) with their labels."""

    ctx: StepContext
    source: Source
    y_train: torch.Tensor
    bs: int
    steps: int
    val_views: Views | None  # None: no validation (a final refit)
    y_val: list[int]
    classes: list[str]
    draw: torch.Tensor | None  # per-image sampling weights (None: each image once per epoch)
    started: float  # perf_counter() when the time budget began

    def order(self, g: torch.Generator, env: Runtime) -> torch.Tensor:
        """This rank's images for one epoch: a permutation, or weighted draws with replacement."""
        n = len(self.source)
        per_rank = n // env.world
        if self.draw is None:
            picks = torch.randperm(n, generator=g)
        else:
            picks = torch.multinomial(self.draw, n, replacement=True, generator=g)
        return picks[: per_rank * env.world][env.rank::env.world]


def _run_epochs(cfg: TrainConfig, loop: EpochLoop, state: TrainState, run: RunFolder, env: Runtime,
                bundle: Callable[..., Bundle], on_event: Callback) -> tuple[bool, bool]:
    """The epoch loop: train, validate, record, save; Ctrl-C stops after the current batch.
    Returns (interrupted, stopped early)."""
    ctx, source, steps = loop.ctx, loop.source, loop.steps
    epoch = state.epoch
    with StopOnSigint(env) as stop:
        while epoch < state.planned:
            epoch += 1
            t0 = time.perf_counter()
            g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)  # resume replays the same epoch
            on_event(Event("epoch_start", 0, steps, epoch, text=str(state.planned)))
            tot, interrupted = train_one_epoch(ctx, source, loop.order(g, env), loop.y_train, loop.bs, steps, g,
                                               stop.requested, lambda i: on_event(Event("batch", i, steps, epoch)),
                                               ema=state.ema)
            if interrupted:
                run.save_last(bundle({"epoch": state.epoch, "interrupted": True}, resumable=True))
                return True, False
            tot = env.all_sum(tot)
            val = _validation_row(loop, state, env)
            seconds = time.perf_counter() - t0
            loss_sum, correct, seen = tot.tolist()
            row = {"epoch": epoch, "train_loss": loss_sum / seen, "train_acc": correct / seen, **val,
                   "lr": ctx.opt.param_groups[0]["lr"], "seconds": seconds, "images_per_s": seen / seconds}
            state.rows.append(row)
            state.epoch = epoch
            if cfg.time is not None:
                _replan(cfg, loop, state, env, on_event)
            # Without validation (a final refit) every epoch is the best so far: best.pt is the last one.
            improved = state.stopper.update(epoch, epoch if loop.val_views is None else row["val_macro_f1"])
            metrics = {"epoch": epoch, **{k: row[k] for k in ("val_loss", "val_acc", "val_macro_f1")}}
            run.write_epoch(row, best=bundle(metrics, resumable=False) if improved else None,
                            last=bundle(metrics, resumable=True))
            on_event(Event("epoch_end", epoch=epoch, row=row, text=str(state.planned)))
            if state.stopper.should_stop:
                on_event(Event("message", text=f"early stop: no better validation macro-F1 for {cfg.patience} epochs"))
                return False, True
    return False, False


def _replan(cfg: TrainConfig, loop: EpochLoop, state: TrainState, env: Runtime, on_event: Callback) -> None:
    """Under --time: lay the schedule out for the epochs that fit, from the epochs measured so far
    (every rank takes rank 0's plan). The final report and plots are reserved a quarter epoch (5 s at
    least)."""
    seconds = [r["seconds"] for r in state.rows]
    planned = plan_epochs(budget_s=60 * cfg.time, elapsed_s=time.perf_counter() - loop.started, epoch_s=seconds,
                          done=state.epoch, finish_s=max(5.0, 0.25 * seconds[-1]),
                          cap=cfg.epochs or MAX_TIMED_EPOCHS)
    if env.world > 1:
        t = torch.tensor([planned], dtype=torch.float64)
        dist.broadcast(t, 0)
        planned = int(t.item())
    if planned != state.planned:
        if state.epoch == 1 or abs(planned - state.planned) > 1:
            on_event(Event("message", text=f"--time {cfg.time:g}: {planned} epochs fit "
                                           f"(about {seconds[-1]:.1f} s each)"))
        state.planned = state.shape.epochs = planned
        state.stopper.min_epochs = planned // 2


def _validation_row(loop: EpochLoop, state: TrainState, env: Runtime) -> dict:
    """val_loss, val_acc, val_macro_f1 of the saved weights (the average, with EMA; NaN without
    validation)."""
    if loop.val_views is None:
        return {"val_loss": math.nan, "val_acc": math.nan, "val_macro_f1": math.nan}
    probs, loss = validate(state.weights, loop.val_views, loop.y_val, loop.ctx.spec, env)
    rep = confusion_report(loop.y_val, probs, loop.classes, intervals=False)
    return {"val_loss": loss, "val_acc": rep["overall"]["accuracy"], "val_macro_f1": rep["overall"]["macro_f1"]}


def resume_config(run_dir: str | Path, **overrides) -> TrainConfig:
    """The config a run was started with, with the given non-None options changed (epochs, data...)."""
    import json

    path = Path(run_dir) / "config.json"
    if not Path(run_dir).is_dir():
        raise UsageError(f"--resume {run_dir}: no such folder (give the RUN folder of a training run)")
    if not path.is_file():
        raise UsageError(f"--resume {run_dir}: no config.json there (the run never started training; start it "
                         "again without --resume)")
    return TrainConfig.from_dict(json.loads(path.read_text())["train"], **overrides, out=str(run_dir))


def _check_counts(classes: list[str], labels: list[int], where: str, skipped: list[tuple[str, str]] = ()) -> None:
    """Every class has readable images; else a DataError naming the classes and the files that failed."""
    counts = np.bincount(labels, minlength=len(classes))
    missing = [c for c, n in zip(classes, counts) if n == 0]
    if missing:
        why = "; ".join(w for _, w in skipped[:10]) + (f"; and {len(skipped) - 10} more" if len(skipped) > 10 else "")
        raise DataError(f"no readable {where} images for class(es): {', '.join(repr(c) for c in missing)}"
                        + (f" ({len(skipped)} unreadable: {why})" if skipped else ""))


def _data_summary(cfg: TrainConfig, data: TrainData, y_train: list[int]) -> dict:
    return {"data": str(cfg.data), "source": data.source, "classes": data.classes,
            "train_images": len(data.train), "val_images": len(data.val), "skipped": len(data.skipped),
            "train_per_class": dict(zip(data.classes, map(int, np.bincount(y_train, minlength=len(data.classes)))))}


# --- one epoch, validation, the final report ---------------------------------------------------------------

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


def train_one_epoch(ctx: StepContext, source: Source, perm: torch.Tensor, labels: torch.Tensor, bs: int, steps: int,
                    g: torch.Generator, should_stop: Callable[[], bool], on_batch: Callable[[int], None], *,
                    ema: torch.optim.swa_utils.AveragedModel | None = None) -> tuple[torch.Tensor, bool]:
    """One pass over `perm` in full batches, updating `ema` after every step. Returns (loss sum,
    correct, seen) and whether it was stopped."""
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
        x = normalize(x, ctx.spec).contiguous(memory_format=torch.channels_last)
        with torch.autocast(ctx.device.type, dtype=ctx.amp_dtype or torch.bfloat16, enabled=ctx.amp_dtype is not None):
            logits = ctx.net(x)
            loss = ctx.criterion(logits.float(), y)
        ctx.opt.zero_grad(set_to_none=True)
        ctx.scaler.scale(loss).backward()
        ctx.scaler.step(ctx.opt)
        ctx.scaler.update()
        ctx.sched.step()
        if ema is not None:
            ema.update_parameters(ctx.net.module if isinstance(ctx.net, nn.parallel.DistributedDataParallel)
                                  else ctx.net)
        with torch.no_grad():
            tot += torch.stack([loss.detach().double() * len(idx), (logits.argmax(1) == y).sum().double(),
                                torch.tensor(float(len(idx)), dtype=torch.float64, device=ctx.device)])
        on_batch(step + 1)
    return tot.cpu(), False


@torch.no_grad()
def validate(model: nn.Module, views: Views, y_val: list[int], spec: InputSpec,
             env: Runtime) -> tuple[np.ndarray, float]:
    """Validation softmax over every view (each rank every world-th batch, then gathered), averaged per
    image, and the mean log loss.

    With several ranks every rank first takes rank 0's BatchNorm statistics: each rank's running
    statistics (and their moving average) follow its own batches, and rank 0's model is the one saved."""
    model.eval()
    if env.world > 1:
        for buf in model.buffers():
            dist.broadcast(buf, 0)
    batches = list(views.batches(max(1, min(256, -(-len(views) // env.world))), side=spec.img_size))
    mine = [(i, F.softmax(model_logits(model, torch.from_numpy(x), spec, env.device, env.amp_dtype, True), 1)
             .cpu().numpy()) for i, (x, _, _) in enumerate(batches) if i % env.world == env.rank]
    if env.world > 1:
        gathered: list = [None] * env.world
        dist.all_gather_object(gathered, mine)
        mine = [part for rank in gathered for part in rank]
    done = dict(mine)
    full = average_views(np.concatenate([done[i] for i in range(len(batches))]), views.owner, len(y_val))
    return full, log_loss(full, y_val)


# Fewer validation images than this fit no temperature: one or two images decide it (a single right one
# drives it to the floor, making a 30 %-accurate model four times as sure of itself).
MIN_CALIBRATION_IMAGES = 20


def calibrate(path: Path, views: Views, y_val: list[int], env: Runtime, on_event: Callback = _ignore) -> float | None:
    """Fit a temperature on the validation images (`fit_temperature`) and fold it into the output layer of
    the model file at `path`; returns it, or None when the model is left as it is.

    Folding it into the weights, rather than keeping it beside them, means that evaluate, predict,
    explain and every export (ONNX, TorchScript, bioimage.io) give the calibrated softmax with no change
    of their own. Dividing one input's logits by T keeps its argmax, so an image seen whole keeps its
    prediction. An image seen as several tiles (or under --tta) need not: their softmax outputs are
    averaged, and sharpening lets the surer views weigh more, which can tip a near tie (3 of 192 images
    for a 3-epoch LeNet on 48 px tiles) and part the validation report from the macro-F1 that chose
    best.pt. So a model whose validation images are tiled, and a validation part of fewer than
    `MIN_CALIBRATION_IMAGES` images, are left uncalibrated."""
    bundle = load_bundle(path)
    recalibrating = "temperature" in bundle.metrics  # a resumed run whose best.pt stayed: start from the raw one
    if recalibrating:
        bundle = without_temperature(bundle)
    n = len(y_val)
    skip = (f"only {n} validation image{'s' if n != 1 else ''}, and a temperature takes {MIN_CALIBRATION_IMAGES}"
            if n < MIN_CALIBRATION_IMAGES else
            "some validation images are evaluated as several tiles, and a temperature can change which class "
            "their averaged softmax favours" if len(views) > n else None)
    if skip is None:
        model = bundle.build_model().to(env.device)
        with torch.inference_mode():
            logits = np.concatenate([
                model_logits(model, torch.from_numpy(x), bundle.input, env.device, env.amp_dtype, True).cpu().numpy()
                for x, _, _ in views.batches(256, side=bundle.input.img_size)])
        if not np.isfinite(logits).all():
            skip = "the network gives non-finite outputs on the validation images"
    if skip is not None:
        if recalibrating:
            save_bundle(bundle, path)
        on_event(Event("message", text=f"best.pt not calibrated, its softmax is as training left it: {skip}"))
        return None
    t = fit_temperature(logits, y_val, views.owner)
    before, after = (log_loss(softmax_of_views(logits, views.owner, n, temp), y_val) for temp in (1.0, t))
    wrong = int((logits.argmax(1) != np.asarray(y_val)[views.owner]).sum())  # views come grouped by shape
    note = (", the lowest searched" if t <= TEMPERATURE_RANGE[0] * 1.002 else
            ": it is not under-confident on these images, and calibration only sharpens" if t == 1.0 else "")
    save_bundle(with_temperature(bundle, t), path)
    on_event(Event("message", text=f"calibrated best.pt: temperature {t:.2f}{note}; fitted on {n} validation images "
                                   f"({wrong} wrong), whose log loss went {before:.3f} -> {after:.3f}; no predicted "
                                   "class changes (--no-calibrate keeps the raw softmax)"))
    return t


def without_temperature(bundle: Bundle) -> Bundle:
    """The bundle as training left it: a folded temperature undone and its record removed."""
    raw = with_temperature(bundle, 1 / float(bundle.metrics["temperature"]))
    return dataclasses.replace(raw, metrics={k: v for k, v in raw.metrics.items() if k != "temperature"})


def with_temperature(bundle: Bundle, t: float) -> Bundle:
    """The bundle with its output layer's weights and bias divided by `t`: logits / t, and the product of
    every temperature folded in so far in ``metrics["temperature"]`` (1/T undoes T)."""
    model = create_model(bundle.arch, len(bundle.classes), bundle.input.channels)
    head = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    sd = dict(bundle.state_dict)
    for key in (f"{head}.weight", f"{head}.bias"):
        sd[key] = sd[key] / t
    metrics = {**bundle.metrics, "temperature": float(bundle.metrics.get("temperature", 1.0)) * t}
    return dataclasses.replace(bundle, state_dict=sd, metrics=metrics)


def final_report(run: Path, val_items: list[Item]) -> dict:
    """The best model's validation report, computed exactly as `microcli evaluate RUN --split val` does."""
    from .evaluate import evaluate_items
    from .html_report import write_html_report

    result = evaluate_items(Predictor(load_bundle(run / "best.pt")), val_items, workers=0)
    write_report_files(run, result.report, stem="val_")
    write_html_report(run / "report.html", result, model=run / "best.pt", title=f"{run.name}: validation")
    return result.report


class StopOnSigint:
    """Ctrl-C sets a flag that the loop checks between batches; a second Ctrl-C interrupts at once.
    Under torchrun every rank leaves at the same step (the flag is max-reduced), or none would."""

    def __init__(self, env: Runtime):
        self.env, self.flag, self._old = env, False, None

    def __enter__(self) -> StopOnSigint:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)

    def _handle(self, signum, frame) -> None:
        if self.flag:
            raise KeyboardInterrupt
        self.flag = True

    def requested(self) -> bool:
        """Whether Ctrl-C was pressed (on any rank, under torchrun)."""
        if self.env.world == 1:
            return self.flag
        flag = torch.tensor([1.0 if self.flag else 0.0])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

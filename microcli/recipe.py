"""The recipe chosen from the data when the user leaves a choice on auto, and the time planner.

`microcli train DATA -o RUN` with no flags asks for everything here: the backbone, the input size and
how images are fitted to it, the classical preprocessing, the batch size, the length of training and
how an imbalanced set is sampled. Each automatic choice comes with the reason that is printed and
written to config.json. Rules, not tuning: every threshold below is a property of the data (sizes,
counts, ratios), and the README says what each was measured on.

numpy only (no torch): the choices are made before anything is decoded.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from .config import TrainConfig
from .data import Item

# Input side a CPU trains at in reasonable time; a GPU affords torchvision's 224.
CPU_SIDE, GPU_SIDE = 128, 224
# Backbone: on 2 AVX2 cores a whole NEU-DET epoch (128 px) takes ResNet-10 at half width 11-15 s, ResNet-10
# 33-43 s and ResNet-18 68 s, so a time budget buys it 2.5-3 times ResNet-10's epochs (5 minutes:
# 96.9 % against 95.3 % and 85.0 %); a GPU affords ResNet-18.
CPU_ARCH, GPU_ARCH = "resnet10-half", "resnet18"
# Images whose shorter side is at least this many input sides carry detail a resize would lose:
# train on native-scale crops and evaluate at native scale instead (NEU-DET 200 px at 128: crop beat resize)...
CROP_RATIO = 1.5
# ...when they share one pixel scale: frames of one instrument come in one size (or a few), while
# regions cut around objects vary (magnetic-tile: shorter sides 122-373 px, interquartile range 45 % of
# the median). Past this spread the object, not the pixel, is the unit: the whole image is fitted.
SIZE_SPREAD = 0.15
# Median aspect ratio past which a centre crop would cut off much of the long side (1.15: 13 %): the
# whole image is squashed to the square input instead.
SQUASH_ASPECT = 1.15
# Class-count ratio (largest / smallest) above which sampling rebalances the classes.
IMBALANCE = 3.0
# Training images an automatic length aims at (1500 steps of 32), and the bounds on epochs.
TARGET_IMAGES, MIN_EPOCHS, MAX_EPOCHS = 48_000, 15, 60
# A native-scale crop shows only part of its image, so crop runs see each image that many more times
# (the image's area over the crop's, at most CROP_LENGTH) and may run to MAX_CROP_EPOCHS. NEU-DET (200 px
# images, 128 px crops, 1200 training images, no --time, seeds 0-2): 40 epochs 97.2-98.6 %, 98 epochs 98.6 %.
CROP_LENGTH, MAX_CROP_EPOCHS = 4.0, 150
# Batch size below LARGE_SET images. On a CPU an image costs about the same in a batch of 16 as of 32
# (ResNet-10, 128 px, whole epochs: 36-39 against 33-36 img/s), so 16 gives twice the optimiser steps a
# minute (NEU-DET, 5 minutes: 95.3 % against 92.8 %); a GPU needs the larger batch to be busy.
# (Measured with ResNet-10 at full width; not re-measured for the half width.)
CPU_BATCH, GPU_BATCH, LARGE_SET = 16, 32, 5000


@dataclass(frozen=True)
class DataStats:
    """What the recipe looks at: counts per class and image sizes (from file headers)."""

    n_images: int
    class_counts: dict[str, int]
    median_side: int  # median shorter side in pixels (0: unknown)
    side_spread: float = 0.0  # interquartile range of the shorter side over its median
    aspect: float = 1.0  # median of longer side / shorter side

    @property
    def imbalance(self) -> float:
        """Largest class count over the smallest."""
        counts = list(self.class_counts.values())
        return max(counts) / max(1, min(counts)) if counts else 1.0


def data_stats(items: list[Item], *, sample: int = 200) -> DataStats:
    """Counts from the items; image sizes from the headers of up to `sample` files."""
    from .io import image_shape

    shapes = []
    for it in items[::max(1, len(items) // sample)]:
        try:
            shapes.append(image_shape(it.path)[:2])
        except Exception:  # unreadable files are reported by the decoding pass
            continue
    counts = dict(Counter(it.label for it in items))
    if not shapes:
        return DataStats(len(items), counts, 0)
    short, long = np.min(shapes, 1).astype(float), np.max(shapes, 1).astype(float)
    q1, median, q3 = np.percentile(short, [25, 50, 75])
    return DataStats(len(items), counts, int(median), float((q3 - q1) / max(median, 1)),
                     float(np.median(long / np.maximum(short, 1))))


def choose_recipe(cfg: TrainConfig, stats: DataStats, *, gpu: bool = False) -> tuple[TrainConfig, dict[str, str]]:
    """Replace every 'auto' in `cfg` by a concrete choice, with a reason for each.

    Parameters
    ----------
    cfg : the user's configuration; fields left on auto are arch, img_size (0), fit, preprocess
        (None), batch_size (None), epochs (None, unless --time plans them) and sampler.
    stats : counts and sizes of the training images.
    gpu : the run is on a GPU (larger inputs are affordable).

    Returns
    -------
    (TrainConfig, reasons) : the concrete configuration and, per field chosen here, why.
    """
    reasons: dict[str, str] = {}
    values: dict = {}
    if cfg.arch.value == "auto":
        values["arch"] = GPU_ARCH if gpu or cfg.pretrained else CPU_ARCH
        reasons["arch"] = ("ResNet-18: it has the pretrained weights asked for" if cfg.pretrained and not gpu else
                           "ResNet-18 on a GPU" if gpu else "ResNet-10 at half width on a CPU: an eighth of "
                           "ResNet-18's multiply-adds, so a time budget buys several times the epochs, which small "
                           "sets need more than width") + "; LeNet only when asked (--arch lenet)"
    arch = values.get("arch", cfg.arch.value)
    side = GPU_SIDE if gpu else CPU_SIDE
    if cfg.fit.value == "auto":
        values["fit"], reasons["fit"] = choose_fit(stats, cfg.img_size or side)
    if not cfg.img_size:
        from .models import get_model_info

        info = get_model_info(arch)
        fit = values.get("fit", cfg.fit.value)
        size = side if fit == "crop" else int(np.clip(stats.median_side or side, info.min_size, side))
        values["img_size"] = max(info.min_size, size)
        reasons["img_size"] = (f"{values['img_size']} px: " + ("the input side a " + ("GPU" if gpu else "CPU") +
                               " trains at in reasonable time" if fit == "crop" else
                               "the images' median shorter side, at most " + str(side)))
    if cfg.preprocess is None:
        lenet = arch == "lenet"
        values["preprocess"] = "" if lenet else "stretch"
        reasons["preprocess"] = ("none (LeNet did worse with a contrast stretch)" if lenet else
                                 "stretch: per-image contrast stretch (1-99 %), so exposure differences between "
                                 "images do not have to be learnt")
    if cfg.batch_size is None:
        small = stats.n_images < LARGE_SET
        cpu_resnet = not gpu and arch != "lenet"  # LeNet's steps are too small to keep 2 cores busy at 16
        base = CPU_BATCH if cpu_resnet else GPU_BATCH
        values["batch_size"] = base if small else 2 * base
        reasons["batch_size"] = f"{values['batch_size']}: " + (
            f"a set under {LARGE_SET} images" if small else "a large set") + (
            "; on a CPU a ResNet's small batches cost no more per image and give more optimiser steps"
            if cpu_resnet else "")
    if cfg.sampler.value == "auto":
        skewed = stats.imbalance > IMBALANCE
        values["sampler"] = "sqrt" if skewed else "uniform"
        reasons["sampler"] = (f"sqrt: classes range {stats.imbalance:.0f}:1, so each image is drawn with weight "
                              "1/sqrt(its class size)" if skewed else
                              f"uniform: classes are near balance ({stats.imbalance:.1f}:1)")
    if cfg.epochs is None and cfg.time is None:
        values["epochs"], reasons["epochs"] = choose_length(stats, values.get("fit", cfg.fit.value),
                                                            values.get("img_size", cfg.img_size))
    return dataclasses.replace(cfg, **values), reasons


def choose_length(stats: DataStats, fit: str, side: int) -> tuple[int, str]:
    """Epochs for a run without --epochs or --time, and why: about TARGET_IMAGES images seen, times
    the share of an image a native-scale crop leaves out (`crop`)."""
    n = max(1, stats.n_images)
    area = (stats.median_side / side) ** 2 if fit == "crop" and side else 1.0
    times = min(CROP_LENGTH, area)
    top = MAX_CROP_EPOCHS if times > 1 else MAX_EPOCHS
    epochs = int(np.clip(round(TARGET_IMAGES * max(1.0, times) / n), MIN_EPOCHS, top))
    crops = (f", times {times:.1f} (at most {CROP_LENGTH:g}) as a {side} px crop shows about {100 / area:.0f} % of a "
             f"{stats.median_side} px image" if times > 1 else "")
    return epochs, (f"{epochs}: about {TARGET_IMAGES} training images seen, {stats.n_images} an epoch{crops} (bounded "
                    f"to {MIN_EPOCHS}-{top}); --time MINUTES plans by the clock instead")


def choose_fit(stats: DataStats, side: int) -> tuple[str, str]:
    """crop, squash or resize for images of these sizes and an input of `side` px, and why."""
    seen = f"median shorter side {stats.median_side} px"
    if stats.side_spread > SIZE_SPREAD:
        return "squash", (f"squash: image sizes vary ({seen}, interquartile range {100 * stats.side_spread:.0f} % of "
                          "it), so they do not share a pixel scale; each whole image is resized to the input")
    if stats.median_side >= CROP_RATIO * side:
        return "crop", (f"crop: the images share one size ({seen}, over {CROP_RATIO}x the input), so training sees "
                        "native-scale crops and evaluation the image at native scale")
    if stats.aspect > SQUASH_ASPECT:
        return "squash", (f"squash: the images ({seen}) are near the input size but {stats.aspect:.2f}:1, so the "
                          "whole image is resized to the input rather than centre-cropped")
    return "resize", f"resize: the images ({seen}) are near the input size"


def batch_plan(batch_size: int, n_train: int, world: int) -> tuple[int, int]:
    """(batch size, steps per epoch). Tiny sets get smaller batches, so that an epoch is still about 16
    optimiser steps; only full batches run (BatchNorm needs more than one image)."""
    per_rank = n_train // world
    bs = max(1, min(batch_size, per_rank, max(8, per_rank // 16)))
    return bs, max(1, per_rank // bs)


def sample_weights(labels: list[int], num_classes: int, how: str) -> np.ndarray | None:
    """Per-image drawing weights: None (uniform: a permutation), 'balanced' (1/n_class) or 'sqrt'
    (1/sqrt(n_class), half-way between the data's proportions and balance)."""
    if how == "uniform":
        return None
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    power = 1.0 if how == "balanced" else 0.5
    return (1.0 / np.maximum(counts, 1) ** power)[np.asarray(labels)]


def class_weights(labels: list[int], num_classes: int, how: str, *, beta: float = 0.999,
                  bound: float = 10.0) -> np.ndarray | None:
    """Loss weights per class, normalised so that the weighted mean over the images is 1 and bounded to
    [1/bound, bound] (unbounded inverse frequency made training diverge on a 60:1 set).

    'balanced': 1 / n_class. 'effective': (1 - beta) / (1 - beta^n_class), the effective number of
    samples (Cui et al., CVPR 2019), gentler on large classes. 'none': None.
    """
    if how == "none":
        return None
    n = np.bincount(labels, minlength=num_classes).astype(np.float64)
    raw = 1.0 / np.maximum(n, 1) if how == "balanced" else (1 - beta) / (1 - beta ** np.maximum(n, 1))
    w = raw * len(labels) / float((raw * n).sum())
    return np.clip(w, 1 / bound, bound)


def plan_epochs(*, budget_s: float, elapsed_s: float, epoch_s: list[float], done: int, finish_s: float,
                cap: int = 1000) -> int:
    """How many epochs in total fit the time budget, planned from the measured epoch times.

    Parameters
    ----------
    budget_s : the whole run's budget (--time, in seconds).
    elapsed_s : time spent so far (decoding included).
    epoch_s : seconds of each finished epoch (train + validation); the last two are averaged.
    done : epochs finished.
    finish_s : time reserved after the last epoch (the final report).
    cap : never more than this many epochs.

    Returns
    -------
    The total number of epochs, at least `done` (and at least 1).
    """
    if not epoch_s:
        return max(1, done)
    per = float(np.mean(epoch_s[-2:]))
    more = math.floor(max(0.0, budget_s - elapsed_s - finish_s) / per)
    return int(min(cap, max(1, done + more)))

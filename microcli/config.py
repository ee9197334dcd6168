"""Training configuration: what the user asked for (`TrainConfig`) and what was resolved from it and
the data (`Resolved`). Both are written to the run's config.json.

`TrainConfig` checks every field when it is made, before any file is read, so a wrong value fails at
once with exit code 2 from the shell and with `UsageError` from Python. No torch here.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .errors import UsageError
from .models import get_model_info
from .options import Arch, Cache, Channels, ClassWeights, Device, Fit, Optimizer, Precision, Sampler


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Everything `microcli train` takes, checked on creation.

    Enum fields also take their string values (``fit="crop"``) and hold the Enum afterwards.

    Parameters
    ----------
    data : str
        Class folders, train/val/test folders or a CSV manifest.
    out : str
        The run folder.
    arch : Arch, default 'auto'
        A registry name (``microcli.models.REGISTRY``), or 'auto': chosen from the data (`microcli.recipe`).
    epochs, batch_size : int or None
        Length of training and images per optimiser step (smaller for tiny sets); each at least 1. None:
        chosen from the data (`microcli.recipe.choose_recipe`), the length by `time` when it is given.
    time : float or None
        Minutes the whole run may take; the epochs are planned from the measured first ones.
    lr : float or None
        Peak learning rate, above 0; None takes the architecture's default from the registry.
    optimizer : Optimizer, default 'adamw'
        AdamW or SGD (Nesterov, `momentum`).
    weight_decay : float, default 0.05
        At least 0; decay on weights only (not biases and norms).
    momentum : float, default 0.9
        SGD momentum, in [0, 1).
    warmup_epochs : float, default 1.0
        Linear warm-up before the cosine decay, at least 0.
    label_smoothing : float, default 0.1
        Cross-entropy label smoothing, 0..0.5.
    class_weights : ClassWeights, default 'none'
        'none', 'balanced' (inverse class frequency) or 'effective' (effective number of samples),
        normalised and bounded to [0.1, 10].
    sampler : Sampler, default 'auto'
        'uniform' (each image once per epoch), 'sqrt' or 'balanced' (drawn with replacement, weight
        1/sqrt(class size) or 1/class size); 'auto': sqrt past a 3:1 imbalance.
    ema : bool, default True
        Validate and save an exponential moving average of the weights (about one epoch's horizon).
    calibrate : bool, default True
        After training, fit a temperature on the validation images (`microcli.metrics.fit_temperature`)
        and fold it into best.pt's output layer, so that its softmax confidences match its accuracy. It
        only sharpens (T in [0.25, 1]): the recipe leaves networks under-confident. An image seen in one
        piece keeps its predicted class (averaged views, --tta or tiles, can tip a near tie). Skipped
        for fewer than 20 validation images and when validation images are tiled. A refit after
        cross-validation takes the folds' geometric mean.
    patience : int, default 10
        Early stop after this many epochs without a better validation macro-F1, never before half the
        planned epochs (0: never).
    val_split : float, default 0.2
        Held-out share per class when the data is not split already, in (0, 1).
    seed : int, default 0
        One seed for the split, initialisation, batch order and augmentation.
    img_size : int, default 0
        Network input side; 0 lets the recipe choose (`microcli.recipe.choose_recipe`): the median
        shorter image side, clamped to the architecture's range and at most 128 px on a CPU or 224 on a
        GPU, or that side itself for native-scale crops. Otherwise within the architecture's
        min_size..max_size.
    channels, fit, preprocess : Channels, Fit, str or None
        How files become input (see `microcli.inputs.InputSpec`); `preprocess` is pipeline text such as
        ``"median:radius=2|stretch"``, checked here. fit 'auto' and preprocess None: chosen from the data.
    augment : bool, default True
        Batched flips, rotations, scale, intensity, noise and blur.
    pretrained : str or None
        'imagenet' or the path of a torchvision state_dict (ResNets).
    precision, device : Precision, Device, default 'auto'
        Where and how the arithmetic runs.
    threads : int, default 0
        torch threads (0: all cores).
    workers : int, default -1
        Decoding processes; -1 chooses from the core count, 0 decodes in this process.
    cache : Cache, default 'auto'
        Keep decoded images in RAM ('auto': when they fit in half the free memory).
    deterministic : bool, default False
        Deterministic kernels.
    strict : bool, default False
        Stop at the first unreadable image.
    max_pixels : int or None
        Decompression-bomb guard per image (None: the default; 0: no limit).
    force : bool, default False
        Replace an existing run folder.
    group_by : str or None
        A regular expression that takes each image's group (specimen) from its file name: the first
        capture group, or the whole match (see `microcli.splits.groups_from_names`).
    folds : int, default 0
        0 trains one model; K >= 2 runs stratified group K-fold cross-validation (`microcli.crossval`).
    refit : bool, default False
        After cross-validation, train one final model on all the data with the same recipe.

    Raises
    ------
    UsageError
        A value out of range or not among the choices, or `pretrained` for an architecture without
        weights or naming a missing file; the message names the option.
    PipelineError
        `preprocess` is not a valid pipeline.

    Examples
    --------
    >>> TrainConfig(data="sample_images", out="runs/a", arch="resnet18", fit="crop").fit
    <Fit.crop: 'crop'>
    """

    data: str
    out: str
    arch: Arch = Arch("auto")
    epochs: int | None = None
    time: float | None = None
    batch_size: int | None = None
    lr: float | None = None
    optimizer: Optimizer = Optimizer.adamw
    weight_decay: float = 0.05
    momentum: float = 0.9
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    class_weights: ClassWeights = ClassWeights.none
    sampler: Sampler = Sampler.auto
    ema: bool = True
    calibrate: bool = True
    patience: int = 10
    val_split: float = 0.2
    seed: int = 0
    img_size: int = 0
    channels: Channels = Channels.auto
    fit: Fit = Fit.auto
    preprocess: str | None = None
    augment: bool = True
    pretrained: str | None = None
    precision: Precision = Precision.auto
    device: Device = Device.auto
    workers: int = -1
    threads: int = 0
    cache: Cache = Cache.auto
    deterministic: bool = False
    strict: bool = False
    max_pixels: int | None = None
    force: bool = False
    group_by: str | None = None
    folds: int = 0
    refit: bool = False

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # "crop" -> Fit.crop, with the choices in the message
            kind = _ENUMS.get(f.name)
            if kind is not None:
                object.__setattr__(self, f.name, _choice(kind, getattr(self, f.name), f.name))
        _check_ranges(self)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: enums as their values."""
        return {k: (v.value if isinstance(v, Enum) else v) for k, v in dataclasses.asdict(self).items()}

    def to_saved(self) -> dict[str, Any]:
        """`to_dict` with the data path absolute: what a run's config.json keeps, so that `--resume` works from
        any working folder."""
        return {**self.to_dict(), "data": os.path.abspath(self.data)}

    @classmethod
    def from_dict(cls, saved: dict[str, Any], **overrides: Any) -> TrainConfig:
        """From config.json's "train" part (unknown keys ignored), with non-None `overrides` applied.

        Parameters
        ----------
        saved : dict
            Field name to value, as `to_dict` wrote it.
        **overrides
            Fields to replace; None values are ignored.

        Returns
        -------
        TrainConfig

        Raises
        ------
        UsageError, PipelineError
            As on creation.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in saved.items() if k in names}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def lr_or_default(self) -> float:
        """`lr`, or the architecture's default peak learning rate from the registry when it is None."""
        return self.lr if self.lr is not None else get_model_info(self.arch.value).default_lr

    @property
    def resolved(self) -> bool:
        """True when no choice is left on auto (`microcli.recipe.choose_recipe` has run)."""
        return (self.arch.value != "auto" and self.fit.value != "auto" and self.preprocess is not None
                and self.img_size > 0 and self.batch_size is not None and self.epochs is not None
                and self.sampler.value != "auto")


_ENUMS = {"arch": Arch, "optimizer": Optimizer, "class_weights": ClassWeights, "channels": Channels, "fit": Fit,
          "precision": Precision, "device": Device, "cache": Cache, "sampler": Sampler}


def _choice(kind: type[Enum], value: Any, name: str) -> Enum:
    try:
        return kind(value.value if isinstance(value, Enum) else str(value))
    except ValueError:
        raise UsageError(f"--{_flag(name)} must be one of {', '.join(m.value for m in kind)}, "
                         f"got {value!r}") from None


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _check_ranges(cfg: TrainConfig) -> None:
    """One rule per option; the message names the option, the rule and the value received."""
    # auto picks a ResNet (ResNet-18 when pretrained weights are asked for): its input range applies
    info = get_model_info("resnet18" if cfg.arch.value == "auto" else cfg.arch.value)
    rules = [
        ("epochs", cfg.epochs is None or cfg.epochs >= 1, "at least 1"),
        ("time", cfg.time is None or cfg.time > 0, "greater than 0 (minutes)"),
        ("batch_size", cfg.batch_size is None or cfg.batch_size >= 1, "at least 1"),
        ("lr", cfg.lr is None or cfg.lr > 0, "greater than 0"),
        ("weight_decay", cfg.weight_decay >= 0, "at least 0"),
        ("momentum", 0 <= cfg.momentum < 1, "in [0, 1)"),
        ("warmup_epochs", cfg.warmup_epochs >= 0, "at least 0"),
        ("label_smoothing", 0 <= cfg.label_smoothing <= 0.5, "in [0, 0.5]"),
        ("patience", cfg.patience >= 0, "at least 0 (0: never stop early)"),
        ("val_split", 0 < cfg.val_split < 1, "in (0, 1)"),
        ("img_size", cfg.img_size == 0 or info.min_size <= cfg.img_size <= info.max_size,
         f"0 (auto) or {info.min_size}..{info.max_size} for "
         f"{'the ResNet that --arch auto picks' if cfg.arch.value == 'auto' else info.name}"),
        ("workers", cfg.workers >= -1, "-1 (auto), 0 (in this process) or more"),
        ("threads", cfg.threads >= 0, "at least 0 (0: all cores)"),
        ("max_pixels", cfg.max_pixels is None or cfg.max_pixels >= 0, "at least 0 (0: no limit)"),
        ("folds", cfg.folds == 0 or 2 <= cfg.folds <= 50, "0 (no cross-validation) or 2..50"),
        ("refit", not cfg.refit or cfg.folds, "used with --folds K (it trains after the cross-validation)"),
    ]
    for name, ok, rule in rules:
        if not ok:
            raise UsageError(f"--{_flag(name)} must be {rule}, got {getattr(cfg, name)!r}")
    from .preprocess import Pipeline

    Pipeline.parse(cfg.preprocess or "")  # PipelineError (exit 2) names the op and the parameter
    if cfg.group_by is not None:
        from .splits import compile_group_regex

        compile_group_regex(cfg.group_by)
    if cfg.pretrained is not None:
        if not info.pretrained:
            raise UsageError(f"--pretrained: no pretrained weights exist for {cfg.arch.value!r} "
                             f"(architectures with weights: {', '.join(_with_weights())})")
        if cfg.pretrained != "imagenet" and not os.path.isfile(cfg.pretrained):
            raise UsageError(f"--pretrained {cfg.pretrained}: no such file (give 'imagenet' or a state_dict file)")


def _with_weights() -> list[str]:
    from .models import REGISTRY

    return [n for n, m in REGISTRY.items() if m.pretrained]


@dataclass(frozen=True)
class Resolved:
    """What a run settled on, from the config, the data and the machine, with the reason for each
    automatic choice. Written to config.json as "resolved".

    Attributes
    ----------
    channels, img_size : int
        The network input's channels and side in pixels.
    device : str
        The torch device: 'cpu', 'cuda', 'mps', or 'cuda:<local rank>' under torchrun.
    precision : str
        The autocast dtype as torch prints it ('torch.bfloat16'), or 'fp32'.
    cache : str
        'ram' or 'none'.
    workers : int
        Decoding processes.
    world_size : int
        Processes in the run (1 outside torchrun).
    batch_size, steps_per_epoch : int
        Per process, after the reduction for tiny sets.
    lr : float
        The peak learning rate.
    input : dict
        The normalised `InputSpec` as `InputSpec.to_dict`.
    augment : dict or None
        `AugmentConfig.to_dict`, or None without augmentation.
    reasons : dict of str to str
        Why each automatic choice was made, by field ('channels', 'img_size'; 'input' when resumed).
    """

    channels: int
    img_size: int
    device: str
    precision: str
    cache: str
    workers: int
    world_size: int
    batch_size: int
    steps_per_epoch: int
    lr: float
    input: dict
    augment: dict | None
    reasons: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return dataclasses.asdict(self)

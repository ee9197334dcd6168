"""Every fixed choice a command or config takes, as one Enum each (Typer shows them as choices).

Shared by the CLI and the library, so `--fit crop` and ``TrainConfig(fit="crop")`` mean the same value,
and a wrong value fails the same way from the shell and from Python. No torch here: `--help` stays fast.
"""

from __future__ import annotations

from enum import Enum

from .models import REGISTRY


class Choice(str, Enum):
    """A str Enum whose str() is its value (so f-strings and JSON show 'crop', not 'Fit.crop')."""

    def __str__(self) -> str:
        return self.value


# Built from the registry: adding a backbone there adds the choice here. auto: chosen from the data.
Arch = Choice("Arch", {"auto": "auto", **{name: name for name in REGISTRY}})


class Fit(Choice):
    """How an image becomes the network's square input."""

    auto = "auto"  # training only: chosen from the image sizes (`microcli.recipe.choose_fit`)
    resize = "resize"  # shorter side to the input size, centre crop
    squash = "squash"  # both sides to the input size: the whole image, aspect ratio not kept
    crop = "crop"  # native pixel scale: random crops in training, the whole image (or views) in evaluation


class Sampler(Choice):
    """How training draws images each epoch."""

    auto = "auto"  # sqrt when the classes are imbalanced, else uniform
    uniform = "uniform"  # every image once per epoch
    sqrt = "sqrt"  # with replacement, weight 1/sqrt(class size)
    balanced = "balanced"  # with replacement, weight 1/class size: every class equally often


class Channels(Choice):
    """Network input channels: auto (1 when every training image is grayscale, else 3), 1 (luma) or 3 (RGB)."""

    auto = "auto"
    one = "1"
    three = "3"


class Optimizer(Choice):
    """Training optimiser: adamw (AdamW) or sgd (SGD with Nesterov momentum)."""

    adamw = "adamw"
    sgd = "sgd"


class ClassWeights(Choice):
    """Loss weights per class: none (equal) or balanced (N / (K * n_class), inverse class frequency)."""

    none = "none"
    balanced = "balanced"  # 1/class size, bounded
    effective = "effective"  # 1/effective number of samples (Cui et al. 2019), bounded


class Precision(Choice):
    """Autocast dtype: auto (CUDA: bf16 or fp16; CPU: bf16 to train where native, else fp32), fp32, bf16 or fp16."""

    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class Device(Choice):
    """Where the network runs: auto (CUDA, else Apple MPS, else the CPU), cpu, cuda or mps."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Cache(Choice):
    """Decoded training images: auto (in RAM when under half the free memory), ram, or none (decoded per batch)."""

    auto = "auto"
    ram = "ram"
    none = "none"


class Split(Choice):
    """Images to evaluate: auto (test if any; else val of the run's own split, all of DATA), train, val, test, all."""

    auto = "auto"
    train = "train"
    val = "val"
    test = "test"
    all = "all"


class ReportFormat(Choice):
    """Report output: table (rich tables for people) or json (for programs, on stdout)."""

    table = "table"
    json = "json"


class RowFormat(Choice):
    """Prediction rows: csv (with header), tsv or jsonl (one JSON object per line)."""

    csv = "csv"
    tsv = "tsv"
    jsonl = "jsonl"


class Aggregate(Choice):
    """How a large image's tile softmaxes combine into one: mean, vote (share of tiles won) or max (renormalised)."""

    mean = "mean"
    vote = "vote"
    max = "max"


class OnError(Choice):
    """An unreadable input in predict: continue (an error row or line, exit 3 at the end) or fail (stop at it)."""

    continue_ = "continue"
    fail = "fail"


class Engine(Choice):
    """What runs the network (see microcli.engines)."""

    auto = "auto"
    torch = "torch"
    onnxruntime = "onnxruntime"
    openvino = "openvino"


class ExportFormat(Choice):
    onnx = "onnx"
    torchscript = "torchscript"
    bioimageio = "bioimageio"


class CamMethod(Choice):
    """Class-activation map: gradcam (Selvaraju et al. 2017) or gradcam++ (Chattopadhay et al. 2018)."""

    gradcam = "gradcam"
    gradcampp = "gradcam++"

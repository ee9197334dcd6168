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


# Built from the registry: adding a backbone there adds the choice here.
Arch = Choice("Arch", {name: name for name in REGISTRY})


class Fit(Choice):
    """How an image becomes the network's square input."""

    resize = "resize"  # shorter side to the input size, centre crop
    crop = "crop"  # native pixel scale: random crops in training, tiles averaged in evaluation


class Channels(Choice):
    auto = "auto"
    one = "1"
    three = "3"


class Optimizer(Choice):
    adamw = "adamw"
    sgd = "sgd"


class ClassWeights(Choice):
    none = "none"
    balanced = "balanced"


class Precision(Choice):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class Device(Choice):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Cache(Choice):
    auto = "auto"
    ram = "ram"
    none = "none"


class Split(Choice):
    auto = "auto"
    train = "train"
    val = "val"
    test = "test"
    all = "all"


class ReportFormat(Choice):
    table = "table"
    json = "json"


class RowFormat(Choice):
    csv = "csv"
    tsv = "tsv"
    jsonl = "jsonl"


class Aggregate(Choice):
    """How the softmax outputs of a large image's tiles combine into one."""

    mean = "mean"
    vote = "vote"
    max = "max"


class OnError(Choice):
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

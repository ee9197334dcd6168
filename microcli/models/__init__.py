"""The model registry: one entry per architecture, the only place that states an architecture's facts.

An entry names the builder, a one-line summary, the default peak learning rate, the torchvision
ImageNet weights (if any) and the input sizes the network accepts. The CLI reads its choices and help
from here, so this module must not import torch: builders are imported lazily when a model is made.

Adding a backbone is one `register(...)` call here and a builder module beside this file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import UsageError

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class ModelInfo:
    """Facts about one architecture.

    Attributes
    ----------
    name : the `--arch` value.
    build : ``build(num_classes, in_channels) -> nn.Module``, importing torch only when called.
    summary : one line for `--list-models` and the help text.
    default_lr : peak learning rate when `--lr` is not given (AdamW with warm-up and cosine decay).
    imagenet_weights : name of the torchvision weights enum (``ResNet18_Weights``) or None.
    min_size, max_size : input sides (pixels) the network accepts; checked before any image is read.
    cam_layer : the module (a `get_submodule` path) whose output class-activation maps are computed on:
        the last convolutional block, after its ReLU (`microcli explain`).
    cam_stride, cam_offset : where the cam layer's cells sit on the input: cell i is centred on input pixel
        ``cam_offset + cam_stride * i`` (the centre of its receptive field, from the strides, kernels and
        paddings before it). Heat maps are placed by these, not stretched over the image.
    first_conv : the first convolution, whose kernels `microcli explain --filters` shows.
    any_size : True when the network takes any input side from `min_size` on (convolutions, then global
        average pooling): a fit=crop model then evaluates images up to a bound whole, in one pass
        (`inputs.InputSpec.whole`). LeNet pools to a fixed 5 x 5 grid, so another input size changes the
        scale of what its classifier sees, and its exports take only the training size.
    """

    name: str
    build: Callable[[int, int], nn.Module]
    summary: str
    default_lr: float
    imagenet_weights: str | None = None
    min_size: int = 32
    max_size: int = 2048
    cam_layer: str = "layer4"
    cam_stride: int = 32
    cam_offset: float = 15.5
    first_conv: str = "conv1"
    any_size: bool = True

    @property
    def pretrained(self) -> bool:
        """True when torchvision has ImageNet weights for it (`--pretrained imagenet`)."""
        return self.imagenet_weights is not None


REGISTRY: dict[str, ModelInfo] = {}


def register(info: ModelInfo) -> ModelInfo:
    """Add an architecture to the registry (names are unique)."""
    if info.name in REGISTRY:
        raise ValueError(f"architecture {info.name!r} is registered twice")
    REGISTRY[info.name] = info
    return info


def _lenet(num_classes: int, in_channels: int) -> nn.Module:
    from .lenet import LeNet5

    return LeNet5(num_classes, in_channels)


def _resnet(name: str) -> Callable[[int, int], nn.Module]:
    def build(num_classes: int, in_channels: int) -> nn.Module:
        from .resnet import build as build_resnet

        return build_resnet(name, num_classes, in_channels)

    return build


# LeNet: two 5x5 convolutions and two 2x poolings need at least 16 px; 3e-3 suits its ~60k parameters.
# Class-activation maps: C3 after its ReLU (features.4), the last maps with a spatial layout (about half
# the input side). Its unpadded 5x5 convolutions and 2x pooling put cell i on input pixel 2i + 6.5 (C1: +2,
# S2: +0.5, C3: +2 x 2), so its 18 cells of a 48 px input span pixels 6.5-40.5, not 0-47.
register(ModelInfo("lenet", _lenet, "LeNet-5 (LeCun 1998), ~60k parameters; fast, small data", 3e-3, min_size=16,
                   cam_layer="features.4", cam_stride=2, cam_offset=6.5, first_conv="features.0",
                   any_size=False))
# Measured (input gradient's centre of mass per cell): LeNet's cells sit within 0.2 px of 2i + 6.5.
# ResNets: layer4, 1/32 of the input side, placed as cells tiling the image (pixel 32 i + 15.5, the usual
# Grad-CAM resize): a layer4 cell's receptive field (435 px for ResNet-18) exceeds the usual inputs; at
# 128 px (random weights) the gradient centres of the 4 cells (42, 49, 63, 77) lie between the geometric
# centres (0, 32, 64, 96) and the tiling's (15.5 ... 111.5), so no placement is exact and we keep the
# convention.
# ResNets downsample 32x: below 32 px the last stages see 1x1 maps.
# ResNet-10: one BasicBlock per stage. On 2 AVX2 cores its training step runs 1.9x as many 128 px images a
# second as ResNet-18's (38 against 20 img/s: 1 channel, batch 16, AdamW step included, alternating runs),
# and a whole NEU-DET epoch takes half the time (33-37 s against 68 s): a time budget buys it twice the
# epochs.
# ResNet-10 at half width (32-256 channels): a quarter of ResNet-10's multiply-adds (69M against 264M at
# 128 px; ResNet-18 566M). Its step runs 118-124 images a second against ResNet-10's 35-38 under the same
# conditions, and it reached a higher NEU-DET accuracy in 5 minutes (96.9 % against 95.3 %): on a CPU
# and a small set the epochs it buys are worth more than the width.
register(ModelInfo("resnet10", _resnet("resnet10"), "ResNet-10 (torchvision's ResNet, one block per stage), 5M "
                   "parameters", 1e-3))
register(ModelInfo("resnet10-half", _resnet("resnet10-half"), "ResNet-10 at half width (32-256 channels), 1.2M "
                   "parameters; the CPU default", 1e-3))
register(ModelInfo("resnet18", _resnet("resnet18"), "torchvision ResNet-18, 11M parameters", 1e-3,
                   "ResNet18_Weights"))
register(ModelInfo("resnet34", _resnet("resnet34"), "torchvision ResNet-34, 21M parameters", 1e-3,
                   "ResNet34_Weights"))
register(ModelInfo("resnet50", _resnet("resnet50"), "torchvision ResNet-50, 24M parameters", 1e-3,
                   "ResNet50_Weights"))


def get_model_info(name: str) -> ModelInfo:
    """The registry entry for `name`, or a UsageError that lists the choices."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise UsageError(f"unknown architecture {name!r} (choices: {', '.join(REGISTRY)})") from None


def create_model(name: str, num_classes: int, in_channels: int = 1) -> nn.Module:
    """A freshly initialised network of architecture `name`.

    Parameters
    ----------
    name : a registry name (see ``REGISTRY``).
    num_classes : size of the output layer.
    in_channels : 1 (grayscale micrographs) or 3.

    Raises
    ------
    UsageError : unknown architecture.

    Examples
    --------
    >>> create_model("lenet", 6, 1)(torch.zeros(2, 1, 64, 64)).shape   # doctest: +SKIP
    torch.Size([2, 6])
    """
    return get_model_info(name).build(num_classes, in_channels)


def load_pretrained(model: nn.Module, arch: str, source: str) -> list[str]:
    """Load pretrained weights into `model`.

    Parameters
    ----------
    model : a model made by `create_model(arch, ...)`.
    arch : its registry name.
    source : 'imagenet' (torchvision's weights; needs the network or torch's cache) or the path of a
        torchvision state_dict file, read with ``weights_only=True``.

    Returns
    -------
    The keys that were not used (a classifier head of another size stays freshly initialised).

    Raises
    ------
    UsageError : the architecture has no pretrained weights, or the file does not exist.
    CheckpointError : the file is not a loadable state_dict of this architecture.
    """
    import torch

    from ..errors import CheckpointError
    from .resnet import adapt_state_dict, imagenet_state_dict

    info = get_model_info(arch)
    if not info.pretrained:
        raise UsageError(f"--pretrained: no pretrained weights exist for {arch!r}")
    if source == "imagenet":
        state = imagenet_state_dict(info.imagenet_weights)
    else:
        try:
            state = torch.load(source, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise UsageError(f"--pretrained {source}: no such file") from None
        except Exception as exc:
            raise CheckpointError(f"{source}: not a loadable state_dict ({type(exc).__name__}: {exc})") from None
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise CheckpointError(f"{source}: expected a state_dict (a dict of tensors)")
    return sorted(adapt_state_dict(model, state, source))

"""Model registry: a name -> builder table and one factory, so every backbone gets the same checks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ..errors import UsageError


@dataclass(frozen=True)
class ModelInfo:
    name: str
    build: Callable[[int, int], nn.Module]
    summary: str
    pretrained: bool  # torchvision ImageNet weights exist


def _lenet(num_classes: int, in_channels: int) -> nn.Module:
    from .lenet import LeNet5

    return LeNet5(num_classes, in_channels)


def _resnet(name: str) -> Callable[[int, int], nn.Module]:
    def build(num_classes: int, in_channels: int) -> nn.Module:
        from .resnet import build as build_resnet

        return build_resnet(name, num_classes, in_channels)

    return build


REGISTRY: dict[str, ModelInfo] = {
    "lenet": ModelInfo("lenet", _lenet, "LeNet-5 (LeCun 1998), ~60k parameters; fast, small data", False),
    "resnet18": ModelInfo("resnet18", _resnet("resnet18"), "torchvision ResNet-18, 11M parameters", True),
    "resnet34": ModelInfo("resnet34", _resnet("resnet34"), "torchvision ResNet-34, 21M parameters", True),
    "resnet50": ModelInfo("resnet50", _resnet("resnet50"), "torchvision ResNet-50, 24M parameters", True),
}


def create_model(name: str, num_classes: int, in_channels: int = 1) -> nn.Module:
    if name not in REGISTRY:
        raise UsageError(f"unknown architecture {name!r} (choices: {', '.join(REGISTRY)})")
    return REGISTRY[name].build(num_classes, in_channels)


def load_pretrained(model: nn.Module, arch: str, source: str) -> list[str]:
    """`source` is 'imagenet' or a path to a torchvision state_dict file; returns the skipped keys."""
    import torch

    from ..errors import CheckpointError
    from .resnet import adapt_state_dict, imagenet_state_dict

    if not REGISTRY[arch].pretrained:
        raise UsageError(f"--pretrained: no pretrained weights exist for {arch!r}")
    if source == "imagenet":
        state = imagenet_state_dict(arch)
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

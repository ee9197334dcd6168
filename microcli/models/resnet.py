"""torchvision ResNets with the stem adapted to the input's channel count."""

from __future__ import annotations

import torch
from torch import nn
from torchvision import models as tvm

from ..errors import CheckpointError, UsageError


class NarrowResNet(tvm.ResNet):
    """torchvision's ResNet with BasicBlocks and every stage `width` times as wide (torchvision fixes the
    widths at 64-128-256-512); the same modules and names (conv1, layer1...layer4, fc), so everything that
    reads a torchvision ResNet reads this one."""

    def __init__(self, layers: list[int], num_classes: int, width: float):
        nn.Module.__init__(self)
        c = [round(64 * width) * 2 ** i for i in range(4)]
        self._norm_layer, self.dilation, self.groups, self.base_width = nn.BatchNorm2d, 1, 1, 64
        self.inplanes = c[0]
        self.conv1 = nn.Conv2d(3, c[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(c[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(tvm.resnet.BasicBlock, c[0], layers[0])
        self.layer2 = self._make_layer(tvm.resnet.BasicBlock, c[1], layers[1], stride=2)
        self.layer3 = self._make_layer(tvm.resnet.BasicBlock, c[2], layers[2], stride=2)
        self.layer4 = self._make_layer(tvm.resnet.BasicBlock, c[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(c[3], num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)


def build(name: str, num_classes: int, in_channels: int) -> nn.Module:
    """torchvision's `name` (resnet18, resnet34, ...) with a stem for `in_channels` and `num_classes` outputs.

    resnet10 is torchvision's `ResNet` class with one BasicBlock per stage (ResNet-18 has two): the same
    stem, widths and head, half the convolutions. resnet10-half is that at half the width (32-256
    channels), a quarter of the multiply-adds. torchvision has no builder or weights for either.
    """
    if name == "resnet10":
        model = tvm.ResNet(tvm.resnet.BasicBlock, [1, 1, 1, 1], num_classes=num_classes)
    elif name == "resnet10-half":
        model = NarrowResNet([1, 1, 1, 1], num_classes, 0.5)
    else:
        model = getattr(tvm, name)(weights=None, num_classes=num_classes)
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, model.conv1.out_channels, kernel_size=7, stride=2, padding=3, bias=False)
    return model


def imagenet_state_dict(weights_enum: str) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights (`weights_enum` as in the registry, e.g. ``ResNet18_Weights``);
    needs the network (or torch's cache) and says so if offline."""
    weights = getattr(tvm, weights_enum).IMAGENET1K_V1
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # URLError, socket errors, hash mismatch
        raise UsageError(
            f"--pretrained imagenet: could not fetch {weights.url} ({type(exc).__name__}: {exc}). "
            "Offline? Download the file elsewhere and pass it with --pretrained PATH."
        ) from None


def adapt_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Fit pretrained weights to this model: 3-channel stem summed to 1 channel; a classifier head of
    another size is left at its fresh initialisation. Returns the weights that were not used."""
    own = model.state_dict()
    state = dict(state)
    w = state.get("conv1.weight")
    if w is not None and w.shape[1] != own["conv1.weight"].shape[1]:
        if own["conv1.weight"].shape[1] != 1:
            raise CheckpointError(f"{source}: stem has {w.shape[1]} input channels, model has "
                                  f"{own['conv1.weight'].shape[1]}")
        state["conv1.weight"] = w.sum(dim=1, keepdim=True)
    skipped = {k: v for k, v in state.items() if k not in own or own[k].shape != v.shape}
    missing = [k for k in own if k not in state and not k.startswith("fc.")]
    if missing:
        raise CheckpointError(f"{source}: not a {type(model).__name__} state_dict (missing {missing[:3]}...)")
    foreign = [k for k in skipped if not k.startswith("fc.")]  # only the head may differ (another class count)
    if foreign:
        k = foreign[0]
        seen = f"{tuple(skipped[k].shape)} in the file, {tuple(own[k].shape)} here" if k in own else "not in this model"
        raise CheckpointError(f"{source}: {len(foreign)} tensor(s) do not fit this {type(model).__name__} (e.g. {k}: "
                              f"{seen}); are these the weights of another network? Give --arch the one they are for")
    model.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=False)
    return skipped

"""Augmentation suited to micrographs, applied to whole batches of tensors.

Working on a (N, C, H, W) batch instead of one PIL image at a time is what lets a CPU train fast: every
operation below is a handful of vectorised tensor ops per batch. No hue or colour jitter: most
micrographs are grayscale, and a colour shift is not a physical variation of an etched section.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    flips: bool = True  # horizontal and vertical
    rot90: bool = True  # 0/90/180/270 degrees (square inputs)
    scale: float = 0.15  # zoom in by up to this fraction, random position
    brightness: float = 0.1
    contrast: float = 0.15
    gamma: float = 0.15
    noise: float = 0.02  # Gaussian noise sigma, up to
    blur: float = 0.2  # probability of a 3x3 Gaussian blur

    def to_dict(self) -> dict:
        return asdict(self)


def _uniform(n: int, lo: float, hi: float, g: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=g).to(device) * (hi - lo) + lo


def augment(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """Randomly transform each image of a batch; `g` (a CPU generator) makes it reproducible."""
    n, dev = x.shape[0], x.device
    view = (n, 1, 1, 1)

    def coin(p: float = 0.5) -> torch.Tensor:
        return (torch.rand(n, generator=g) < p).to(dev).view(view)

    if cfg.flips:
        x = torch.where(coin(), x.flip(-1), x)
        x = torch.where(coin(), x.flip(-2), x)
    if cfg.rot90 and x.shape[-1] == x.shape[-2]:
        k = torch.randint(0, 4, (n,), generator=g)
        out = x.clone()
        for r in (1, 2, 3):
            idx = (k == r).nonzero().flatten().to(dev)
            if len(idx):
                out[idx] = torch.rot90(x[idx], r, (-2, -1))
        x = out
    if cfg.scale > 0:
        s = 1 / _uniform(n, 1.0, 1.0 + cfg.scale, g, dev)  # <1: sample a smaller window = zoom in
        tx = (torch.rand(n, generator=g).to(dev) * 2 - 1) * (1 - s)
        ty = (torch.rand(n, generator=g).to(dev) * 2 - 1) * (1 - s)
        zero = torch.zeros_like(s)
        theta = torch.stack([torch.stack([s, zero, tx], 1), torch.stack([zero, s, ty], 1)], 1).to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if cfg.gamma > 0:
        gm = _uniform(n, 1 - cfg.gamma, 1 + cfg.gamma, g, dev).view(view).to(x.dtype)
        x = x.sign() * x.abs().clamp_min(1e-6) ** gm
    if cfg.contrast > 0 or cfg.brightness > 0:
        c = _uniform(n, 1 - cfg.contrast, 1 + cfg.contrast, g, dev).view(view).to(x.dtype)
        b = _uniform(n, -cfg.brightness, cfg.brightness, g, dev).view(view).to(x.dtype)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * c + mean + b
    if cfg.blur > 0:
        k1 = torch.tensor([0.25, 0.5, 0.25], dtype=x.dtype, device=dev)
        kernel = (k1[:, None] * k1[None, :]).expand(x.shape[1], 1, 3, 3)
        blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=x.shape[1])
        x = torch.where(coin(cfg.blur), blurred, x)
    if cfg.noise > 0:
        sigma = _uniform(n, 0, cfg.noise, g, dev).view(view).to(x.dtype)
        x = x + torch.randn(x.shape, generator=g).to(dev, x.dtype) * sigma
    return x

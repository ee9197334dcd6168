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
    """The strengths of the random transforms `augment` applies; a value of 0 (or False) turns one off.

    Intensities are those of the prepared images (scaled from the file's range, before normalisation).
    Per image, unless said otherwise.

    Attributes
    ----------
    flips : bool
        Random horizontal and vertical flips.
    rot90 : bool
        With `flips`, square inputs also get transposes: any of the 8 symmetries of the square, so every
        multiple of 90 degrees. Without `flips`, only transposes (identity or transpose), no rotation.
    scale : float
        Zoom in by a factor drawn uniformly from [1, 1 + scale] once per batch: a crop of 1/factor of each
        side at a random position per image, resized back (bilinear).
    brightness : float
        An offset drawn uniformly from [-brightness, brightness], added.
    contrast : float
        A factor drawn uniformly from [1 - contrast, 1 + contrast] that scales the deviation from the
        image's mean.
    gamma : float
        An exponent drawn uniformly from [1 - gamma, 1 + gamma], applied to ``abs(x)`` with the sign kept.
    noise : float
        Gaussian noise on half of the images (chosen at random), sigma drawn uniformly from [0, noise].
    blur : float
        Probability of a 3x3 Gaussian blur (binomial kernel [1, 2, 1] / 4 in each direction, edges
        replicated).
    """

    flips: bool = True  # horizontal and vertical
    rot90: bool = True  # 0/90/180/270 degrees (square inputs)
    scale: float = 0.15  # zoom in by up to this fraction (one factor per batch), random position
    brightness: float = 0.1
    contrast: float = 0.15
    gamma: float = 0.15
    noise: float = 0.02  # Gaussian noise sigma, up to; on half of the images
    blur: float = 0.2  # probability of a 3x3 Gaussian blur

    def to_dict(self) -> dict:
        """The fields as a dict, for config.json."""
        return asdict(self)


def _uniform(n: int, lo: float, hi: float, g: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=g).to(device) * (hi - lo) + lo


def _symmetries(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """A random symmetry per image (flips; with square inputs also transposes: all 8 of the square),
    applied group by group with exact memory moves, no interpolation."""
    n = x.shape[0]
    kinds = (8 if cfg.rot90 and x.shape[-1] == x.shape[-2] else 4) if cfg.flips else (
        2 if cfg.rot90 and x.shape[-1] == x.shape[-2] else 1)
    if kinds == 1:
        return x
    code = torch.randint(0, kinds, (n,), generator=g)
    if not cfg.flips:
        code = code * 4  # transposes only
    out = torch.empty_like(x)
    for k in code.unique().tolist():
        idx = (code == k).nonzero().flatten().to(x.device)
        v = x.index_select(0, idx)
        if k & 1:
            v = v.flip(-1)
        if k & 2:
            v = v.flip(-2)
        if k & 4:
            v = v.transpose(-1, -2)
        out.index_copy_(0, idx, v)
    return out


def _zoom(x: torch.Tensor, scale: float, g: torch.Generator) -> torch.Tensor:
    """Zoom in by a factor drawn once per batch, each image at its own random position."""
    h, w = x.shape[-2:]
    s = 1 + float(torch.rand(1, generator=g)) * scale
    ch, cw = max(1, round(h / s)), max(1, round(w / s))
    if (ch, cw) == (h, w):
        return x
    tops = torch.randint(0, h - ch + 1, (x.shape[0],), generator=g).tolist()
    lefts = torch.randint(0, w - cw + 1, (x.shape[0],), generator=g).tolist()
    crops = torch.stack([img[:, t:t + ch, left:left + cw] for img, t, left in zip(x, tops, lefts)])
    return F.interpolate(crops, size=(h, w), mode="bilinear", align_corners=False)


def augment(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """Randomly transform each image of a batch; `g` (a CPU generator) makes it reproducible.

    In order: a symmetry, zoom, gamma, contrast and brightness, blur, noise (see `AugmentConfig`). Values
    are not clipped.

    Parameters
    ----------
    x : Tensor, shape (N, C, H, W)
        A float batch of prepared images, not yet normalised; on any device.
    cfg : AugmentConfig
        The strengths.
    g : torch.Generator
        A CPU generator; every random draw comes from it, so the same seed gives the same batch.

    Returns
    -------
    Tensor, shape (N, C, H, W)
        A new tensor on the device and in the dtype of `x` (`x` itself when nothing applies).
    """
    n, dev = x.shape[0], x.device
    view = (n, 1, 1, 1)
    x = _symmetries(x, cfg, g)
    if cfg.scale > 0:
        x = _zoom(x, cfg.scale, g)
    if cfg.gamma > 0:
        gm = _uniform(n, 1 - cfg.gamma, 1 + cfg.gamma, g, dev).view(view).to(x.dtype)
        x = x.abs().pow(gm).copysign(x)  # sign kept for signed inputs (laplace:abs=false)
    if cfg.contrast > 0 or cfg.brightness > 0:
        c = _uniform(n, 1 - cfg.contrast, 1 + cfg.contrast, g, dev).view(view).to(x.dtype)
        b = _uniform(n, -cfg.brightness, cfg.brightness, g, dev).view(view).to(x.dtype)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = x * c + (mean * (1 - c) + b)
    k1 = torch.tensor([0.25, 0.5, 0.25], dtype=x.dtype, device=dev)
    for p, op in ((cfg.blur, "blur"), (0.5 if cfg.noise > 0 else 0.0, "noise")):
        pick = (torch.rand(n, generator=g) < p).nonzero().flatten().to(dev)
        if not len(pick):
            continue
        v = x.index_select(0, pick)
        if op == "blur":
            kernel = (k1[:, None] * k1[None, :]).expand(x.shape[1], 1, 3, 3)
            v = F.conv2d(F.pad(v, (1, 1, 1, 1), mode="replicate"), kernel, groups=x.shape[1])
        else:
            sigma = _uniform(len(pick), 0, cfg.noise, g, dev).view(-1, 1, 1, 1).to(x.dtype)
            v = v + torch.randn(v.shape, generator=g).to(dev, x.dtype) * sigma
        x = x.index_copy(0, pick, v)
    return x

"""Learned first-layer filters beside the classical ones they resemble (`microcli explain --filters`).

The first convolution of a CNN is a bank of small linear filters, like the ones image processing has
used for decades. For each learned kernel this module finds the closest classical kernel of the same
size (Gaussian blur, Sobel-type first derivative in four directions, Laplacian, Gabor, pass-through)
by the absolute cosine similarity of the two kernels, and draws:

1. every learned kernel next to its closest classical kernel, grouped by family, with the similarity;
2. for one image: the first layer's feature maps of the best kernel of each family, above the
   `microcli preprocess` output of that family's classical op on the same image.

A kernel is compared as it acts on a grey micrograph: summed over input channels (a grey image is
repeated into 3 channels for RGB models) and divided by the channel's normalisation std, which is the
filter the layer applies to the image's own intensities. The sign is ignored for matching (a negated
Sobel is still an edge detector) and shown in the caption.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .figures import save_fig, styled

# Families in display order, and the `microcli preprocess` op that is their classical counterpart.
FAMILIES = ("blur", "edge", "Laplacian", "Gabor", "pass-through")
PREPROCESS_OP = {"edge": "sobel", "Laplacian": "laplace"}  # blur: gaussian with the kernel's sigma
CLOSE = 0.5  # below this |cos| a kernel is shown as "no close classical kernel"


@dataclass(frozen=True)
class ClassicalKernel:
    name: str
    family: str
    kernel: np.ndarray  # (k, k) float64, unit norm


@dataclass(frozen=True)
class KernelMatch:
    index: int  # the learned kernel's output channel
    kernel: np.ndarray  # its effective (k, k) kernel on grey intensities
    best: ClassicalKernel
    cosine: float  # signed similarity with `best`

    @property
    def family(self) -> str:
        return self.best.family if abs(self.cosine) >= CLOSE else "no close match"


def _unit(k: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(k)
    return k / n if n > 0 else k


def _binomial(n: int) -> np.ndarray:
    """Row n of Pascal's triangle (n + 1 numbers): the discrete Gaussian of Sobel's smoothing."""
    row = np.array([1.0])
    for _ in range(n):
        row = np.convolve(row, [1.0, 1.0])
    return row


def classical_kernels(size: int) -> list[ClassicalKernel]:
    """The classical kernels of side `size` that learned kernels are compared with.

    Parameters
    ----------
    size : int
        Kernel side (odd or even; 5 for LeNet, 7 for ResNets).

    Returns
    -------
    list of ClassicalKernel
        Pass-through; Gaussian blurs (3 widths); Sobel first derivatives (x, y and the two diagonals;
        beyond 3x3 the extended Sobel kernels: binomial smoothing times a binomial difference);
        Laplacians (binomial and a wider Laplacian of Gaussian); even and odd Gabor kernels in 4
        directions and 2 wavelengths. Each normalised to unit length.
    """
    k = size
    r = (k - 1) / 2
    yy, xx = np.mgrid[0:k, 0:k].astype(np.float64) - r
    bank: list[ClassicalKernel] = []

    def add(name: str, family: str, kern: np.ndarray) -> None:
        bank.append(ClassicalKernel(name, family, _unit(np.asarray(kern, np.float64))))

    delta = np.zeros((k, k))
    delta[int(k // 2), int(k // 2)] = 1
    add("pass-through (impulse)", "pass-through", delta)
    for s in (k / 8, k / 5, k / 3):
        add(f"Gaussian blur, sigma {s:.1f}", "blur", np.exp(-(xx**2 + yy**2) / (2 * s * s)))
    smooth = _binomial(k - 1)
    diff = np.convolve(_binomial(max(k - 3, 0)), [1.0, 0.0, -1.0]) if k >= 3 else np.array([1.0, -1.0])
    sx, sy = _unit(np.outer(smooth, diff)), _unit(np.outer(diff, smooth))
    add("Sobel x (vertical edges)", "edge", sx)
    add("Sobel y (horizontal edges)", "edge", sy)
    add("Sobel 45 deg", "edge", sx + sy)
    add("Sobel 135 deg", "edge", sx - sy)
    d2 = np.convolve(_binomial(max(k - 3, 0)), [1.0, -2.0, 1.0]) if k >= 3 else np.array([1.0, -1.0])
    add("Laplacian", "Laplacian", np.outer(smooth, d2) + np.outer(d2, smooth))
    s = k / 4
    rr = (xx**2 + yy**2) / (2 * s * s)
    add(f"Laplacian of Gaussian, sigma {s:.1f}", "Laplacian", (rr - 1) * np.exp(-rr))
    env = np.exp(-(xx**2 + yy**2) / (2 * (k / 4) ** 2))
    for lam in (k / 2, k / 1.2):
        for deg in (0, 45, 90, 135):
            t = np.deg2rad(deg)
            u = xx * np.cos(t) + yy * np.sin(t)
            add(f"Gabor {deg} deg, even, wavelength {lam:.1f}", "Gabor", env * np.cos(2 * np.pi * u / lam))
            add(f"Gabor {deg} deg, odd, wavelength {lam:.1f}", "Gabor", env * np.sin(2 * np.pi * u / lam))
    return bank


def effective_kernels(weight: np.ndarray, std: tuple[float, ...] = ()) -> np.ndarray:
    """First-layer weights (O, C, k, k) as the (O, k, k) filters they apply to grey intensities.

    Parameters
    ----------
    weight : ndarray, shape (O, C, k, k)
    std : tuple of float
        The model's per-channel normalisation std (empty: 1).

    Returns
    -------
    ndarray of float64, shape (O, k, k)
    """
    w = np.asarray(weight, np.float64)
    s = np.asarray(std, np.float64) if len(std) == w.shape[1] else np.ones(w.shape[1])
    return (w / s[None, :, None, None]).sum(1)


def match_kernels(kernels: np.ndarray) -> list[KernelMatch]:
    """The closest classical kernel of each learned kernel (largest absolute cosine similarity).

    Parameters
    ----------
    kernels : ndarray, shape (O, k, k)

    Returns
    -------
    list of KernelMatch
        One per kernel, in channel order.
    """
    kernels = np.asarray(kernels, np.float64)
    bank = classical_kernels(kernels.shape[-1]) if kernels.shape[-1] == kernels.shape[-2] else []
    if not bank:
        raise ValueError(f"first-layer kernels must be square, got {kernels.shape[-2:]}")
    ref = np.stack([b.kernel.ravel() for b in bank])
    out = []
    for i, k in enumerate(kernels):
        cos = ref @ _unit(k).ravel()
        j = int(np.abs(cos).argmax())
        out.append(KernelMatch(i, k, bank[j], float(cos[j])))
    return out


def first_layer(bundle):
    """The model's first convolution (the registry's `first_conv`) of a bundle's network."""
    from .models import get_model_info

    model = bundle.build_model()
    return model, model.get_submodule(get_model_info(bundle.arch).first_conv)


def feature_maps(bundle, array: np.ndarray) -> np.ndarray:
    """The first convolution's output (O, H', W') for one prepared, not yet normalised array: the
    linear filter responses, before batch norm and ReLU."""
    import torch

    from .inference import normalize

    model, conv = first_layer(bundle)
    with torch.inference_mode():
        x = normalize(torch.from_numpy(np.ascontiguousarray(array))[None], bundle.input)
        return conv(x)[0].numpy()


def chance_level(size: int, *, trials: int = 500) -> float:
    """The median |cos| between a random (white-noise) kernel of side `size` and its closest classical
    kernel: the similarity that means nothing, printed in the figure for reference."""
    rng = np.random.default_rng(0)
    ref = np.stack([b.kernel.ravel() for b in classical_kernels(size)])
    noise = rng.standard_normal((trials, size * size))
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    return float(np.median(np.abs(noise @ ref.T).max(1)))


def _family_order(m: KernelMatch) -> tuple:
    fam = m.family
    return (FAMILIES.index(fam) if fam in FAMILIES else len(FAMILIES), -abs(m.cosine), m.index)


def plot_filters(path: str | Path, bundle, *, image: str | None = None) -> Path:
    """Draw the filters figure: learned kernels beside the classical ones, and (with `image`) the first
    layer's feature maps beside `microcli preprocess` outputs of that image.

    Parameters
    ----------
    path : str or Path
        The PNG to write (atomically).
    bundle : checkpoint.Bundle
    image : str or None
        An image file; prepared exactly as for prediction.

    Returns
    -------
    Path

    Raises
    ------
    ImageReadError, OpError, PipelineError
        `image` cannot be read or prepared.
    """
    from .figures import pyplot
    from .inputs import prepare_array

    _, conv = first_layer(bundle)
    weight = conv.weight.detach().cpu().numpy()
    matches = match_kernels(effective_kernels(weight, bundle.input.std))
    array = prepare_array(image, bundle.input) if image is not None else None
    n = len(matches)
    per_row = 4 if n <= 8 else 6 if n <= 24 else 8
    rows = -(-n // per_row)
    kernels_h = 0.9 + rows * 1.45
    maps_h = 5.4 if array is not None else 0.0
    with styled():
        fig = pyplot().figure(figsize=(max(per_row * 1.75, 11.5), kernels_h + maps_h), layout="constrained")
        if array is None:
            _draw_kernels(fig, sorted(matches, key=_family_order), bundle, per_row)
        else:
            top, bottom = fig.subfigures(2, 1, height_ratios=[kernels_h, maps_h])
            _draw_kernels(top, sorted(matches, key=_family_order), bundle, per_row)
            _draw_maps(bottom, matches, bundle, array, Path(image).name)
    return save_fig(fig, path)


def _pair_image(learned: np.ndarray, classical: np.ndarray) -> np.ndarray:
    """Two kernels side by side, each scaled to [-1, 1], with a blank column between them."""
    a = learned / (np.abs(learned).max() or 1)
    b = classical / (np.abs(classical).max() or 1)
    gap = np.full((a.shape[0], max(1, a.shape[1] // 2)), np.nan)
    return np.concatenate([a, gap, b], 1)


def _draw_kernels(fig, matches: list[KernelMatch], bundle, per_row: int) -> None:
    from matplotlib import colormaps

    cmap = colormaps["gray"].with_extremes(bad="white")
    k = matches[0].kernel.shape[-1]
    fig.suptitle(f"{bundle.arch}: the first layer's {len(matches)} learned {k}x{k} kernels (left in each pair) "
                 "beside the closest classical kernel (right)")
    axes = fig.subplots(-(-len(matches) // per_row), per_row, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, m in zip(axes.ravel(), matches):
        close = abs(m.cosine) >= CLOSE
        ax.imshow(_pair_image(m.kernel, m.best.kernel * (np.sign(m.cosine) or 1)), cmap=cmap, vmin=-1, vmax=1,
                  interpolation="nearest")
        ax.set_title(f"#{m.index}  {_short(m.best.name)}", fontsize=8, fontweight="normal",
                     color="black" if close else "#777777")
        ax.text(0.5, -0.06, f"|cos| {abs(m.cosine):.2f}" + (" inverted" if m.cosine < 0 else "")
                + ("" if close else ", weak"), transform=ax.transAxes, ha="center", va="top", fontsize=7.5,
                color="black" if close else "#777777")
    fig.supxlabel(f"|cos|: cosine similarity of the kernels, sign ignored (1: the same up to contrast). "
                  f"A random {k}x{k} kernel reaches about {chance_level(k):.2f} with its closest classical one; "
                  f"below {CLOSE} a match is shown in grey as weak.", fontsize=8, color="#333333")


def _short(name: str) -> str:
    """'Gabor 45 deg, odd, wavelength 3.5' -> 'Gabor 45 deg, odd'; 'Gaussian blur, sigma 1.0' -> as is."""
    parts = name.split(", ")
    return ", ".join(parts[:2]) if parts[0].startswith(("Gabor", "Gaussian")) else parts[0]


def _draw_maps(fig, matches: list[KernelMatch], bundle, array: np.ndarray, name: str) -> None:
    """One column per classical family: the feature map of the learned kernel closest to it, and below,
    the family's classical filter on the same image (a `microcli preprocess` op where there is one)."""
    from .figures import display_gray
    from .preprocess import Pipeline

    maps = feature_maps(bundle, array)
    gray = array.mean(0)
    families = [f for f in FAMILIES if f != "pass-through"]
    fig.suptitle(f"one image ({name}): first-layer feature maps (top) beside classical filters of the same "
                 "image (bottom)")
    axes = fig.subplots(2, 1 + len(families), squeeze=False)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    for r in range(2):
        axes[r, 0].imshow(display_gray(gray), interpolation="nearest")
        axes[r, 0].set_title("as the network sees it", fontsize=9, fontweight="normal")
    axes[0, 0].set_ylabel("learned (network)")
    axes[1, 0].set_ylabel("classical")
    bank = classical_kernels(matches[0].kernel.shape[-1])
    for j, fam in enumerate(families, start=1):
        refs = [b for b in bank if b.family == fam]
        ref_mat = np.stack([b.kernel.ravel() for b in refs])
        scores = [(float(np.abs(ref_mat @ _unit(m.kernel).ravel()).max()), m) for m in matches]
        score, m = max(scores, key=lambda t: (t[0], -t[1].index))
        ref = refs[int(np.abs(ref_mat @ _unit(m.kernel).ravel()).argmax())]
        cos = float(ref.kernel.ravel() @ _unit(m.kernel).ravel())
        fmap = maps[m.index] * (np.sign(cos) or 1)
        magnitude = fam in ("edge", "Laplacian")  # compared with sobel / laplace, which give magnitudes
        axes[0, j].imshow(display_gray(np.abs(fmap) if magnitude else fmap), interpolation="nearest")
        axes[0, j].set_title(f"kernel #{m.index}{' |response|' if magnitude else ''}\nclosest {fam} kernel: "
                             f"|cos| {score:.2f}", fontsize=8.5, fontweight="normal",
                             color="black" if score >= CLOSE else "#777777")
        op = _preprocess_op(ref)
        if op is not None:
            out = Pipeline.parse(op).apply(gray)
            label = f"microcli preprocess --op {op}"
        else:  # Gabor: no preprocess op; scikit-image's filter with the matched direction and wavelength
            from skimage.filters import gabor

            deg = float(ref.name.split()[1])
            lam = float(ref.name.rsplit(" ", 1)[-1])
            out = gabor(gray, frequency=1 / lam, theta=np.deg2rad(deg))[0]
            label = f"skimage.filters.gabor\n({deg:.0f} deg, wavelength {lam:.1f} px)"
        axes[1, j].imshow(display_gray(out), interpolation="nearest")
        axes[1, j].set_title(label.replace(" --op", "\n--op"), fontsize=8.5, fontweight="normal",
                             family="DejaVu Sans Mono" if op else None)


def _preprocess_op(ref: ClassicalKernel) -> str | None:
    """The `microcli preprocess` op that applies a classical kernel's family to a whole image."""
    if ref.family == "blur":
        return f"gaussian:sigma={float(ref.name.rsplit(' ', 1)[-1]):g}"
    return PREPROCESS_OP.get(ref.family)

"""The one look of every picture microcli draws: palette, fonts, class labels, sizes, saving.

Confusion matrices, training curves, heat maps, class maps, the filter figure and the HTML report all
take their colours, fonts and label rules from here, so they read as one family:

- classes get colour-blind-safe colours (Okabe & Ito; `class_colors`), heat maps the perceptually
  uniform 'inferno', matrices the single-hue 'Blues': none of them depends on telling red from green;
- class names are shown with spaces for underscores and wrapped (`class_label`);
- text and cells shrink, and figures grow, with the number of classes (`class_font_size`).

matplotlib is imported lazily and always with the Agg backend (no display needed). Pictures composed
pixel by pixel (heat maps, class maps, thumbnails: many per run) use Pillow with matplotlib's DejaVu
Sans, which is several times faster than a matplotlib figure per image and looks the same.
"""

from __future__ import annotations

import functools
import io
import textwrap
from pathlib import Path

import numpy as np

from .io import atomic_path

# Okabe & Ito (2008) without black, which vanishes on a dark micrograph: safe for every common form of
# colour blindness. Beyond 7 classes: Paul Tol's 'muted' and 'light' sets (distinct, not all safe).
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442")
TOL_MUTED = ("#332288", "#88CCEE", "#44AA99", "#117733", "#999933", "#DDCC77", "#CC6677", "#882255", "#AA4499")
TOL_LIGHT = ("#77AADD", "#EE8866", "#EEDD88", "#FFAABB", "#99DDFF", "#44BB99", "#BBCC33", "#AAAA00", "#DDDDDD")
SAFE_CLASSES = len(OKABE_ITO)
HEAT_CMAP = "inferno"  # heat maps: perceptually uniform, readable in grey and by colour-blind readers
MATRIX_CMAP = "Blues"  # confusion matrices: one hue, lightness carries the value
TRAIN_COLOR, VAL_COLOR, EXTRA_COLOR = OKABE_ITO[0], OKABE_ITO[1], OKABE_ITO[2]

STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": False,
    "grid.alpha": 0.3,
    "legend.frameon": False,
    "figure.titlesize": 12,
    "figure.titleweight": "bold",
    "savefig.dpi": 110,
    "savefig.facecolor": "white",
}


def class_colors(k: int) -> list[str]:
    """`k` distinct colours as '#rrggbb'; the first 7 are colour-blind safe (Okabe-Ito).

    Parameters
    ----------
    k : int
        Number of classes.

    Returns
    -------
    list of str
        Okabe-Ito, then Paul Tol's muted and light sets; past 25 classes the list repeats in a darker shade.
    """
    base = [*OKABE_ITO, *TOL_MUTED, *TOL_LIGHT]
    out = []
    for i in range(k):
        c = base[i % len(base)]
        if i >= len(base):  # a second round, darker, so neighbours in the legend still differ
            r, g, b = (int(c[j:j + 2], 16) * 2 // 3 for j in (1, 3, 5))
            c = f"#{r:02x}{g:02x}{b:02x}"
        out.append(c)
    return out


def hex_rgb(color: str) -> tuple[int, int, int]:
    """'#rrggbb' -> (r, g, b) in 0..255."""
    return tuple(int(color[j:j + 2], 16) for j in (1, 3, 5))


def class_label(name: str, width: int = 14) -> str:
    """A class name as people read it: underscores as spaces, wrapped at `width` characters."""
    return textwrap.fill(name.replace("_", " "), width, break_long_words=True) or name


def class_font_size(k: int) -> float:
    """Tick and cell font size for `k` classes: 10 up to 10 classes, down to 7 at 30."""
    return float(np.clip(10 - (k - 10) * 0.15, 7, 10))


def pyplot():
    """matplotlib.pyplot on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def styled():
    """A context in which matplotlib draws in microcli's style (`STYLE`, Okabe-Ito colour cycle)."""
    plt = pyplot()
    from cycler import cycler

    return plt.rc_context({**STYLE, "axes.prop_cycle": cycler(color=list(OKABE_ITO))})


def save_fig(fig, path: str | Path) -> Path:
    """Save a figure as PNG atomically and close it; the folder is created if missing."""
    plt = pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path, keep_suffix=True) as tmp:
            fig.savefig(tmp)
    finally:
        plt.close(fig)
    return path


def fig_png(fig) -> bytes:
    """A figure as PNG bytes (for the HTML report); the figure is closed."""
    plt = pyplot()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    return buf.getvalue()


@functools.lru_cache(maxsize=None)
def heat_lut() -> np.ndarray:
    """The heat colour map as a (256, 3) uint8 lookup table."""
    from matplotlib import colormaps

    return (colormaps[HEAT_CMAP](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)


@functools.lru_cache(maxsize=None)
def font(size: int, bold: bool = False):
    """matplotlib's DejaVu Sans as a Pillow font (Pillow's own small bitmap font if it is missing)."""
    from PIL import ImageFont

    try:
        import matplotlib

        name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
        return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name), size)
    except OSError:
        return ImageFont.load_default()


def display_gray(arr: np.ndarray) -> np.ndarray:
    """A (C, H, W) or (H, W[, C]) float image -> uint8 (H, W, 3) for display, stretched between its 0.5th
    and 99.5th percentiles (micrographs rarely fill their range; the stretch is the same for every channel).
    """
    a = np.asarray(arr, dtype=np.float32)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(1, 2, 0)
    if a.ndim == 2:
        a = a[..., None]
    step = max(1, int(np.sqrt(a.shape[0] * a.shape[1] / 1e6)))  # percentiles of <= 1 Mpx: as good, faster
    lo, hi = np.percentile(a[::step, ::step], [0.5, 99.5]) if a.size else (0.0, 1.0)
    if hi <= lo:
        lo, hi = float(a.min()), float(a.max()) if a.max() > a.min() else float(a.min()) + 1.0
    u8 = (np.clip((a - lo) / (hi - lo), 0, 1) * 255).round().astype(np.uint8)
    return np.repeat(u8, 3, -1) if u8.shape[-1] == 1 else u8


def resize_rgb(rgb: np.ndarray, height: int, width: int, *, nearest: bool = False) -> np.ndarray:
    """Resize a uint8 (H, W, 3) image with Pillow (bilinear, or nearest for label maps)."""
    from PIL import Image

    if rgb.shape[:2] == (height, width):
        return rgb
    img = Image.fromarray(rgb)
    return np.asarray(img.resize((width, height), Image.NEAREST if nearest else Image.BILINEAR))


def heat_overlay(rgb: np.ndarray, heat: np.ndarray, *, strength: float = 0.75) -> np.ndarray:
    """Blend a heat map in [0, 1] over a uint8 (H, W, 3) image: opacity grows with the heat (up to
    `strength`), so cold regions show the micrograph untouched and hot ones the colour map."""
    lut = heat_lut()
    h = np.clip(heat, 0, 1)
    colour = lut[(h * 255).round().astype(np.uint8)].astype(np.float32)
    alpha = (strength * h)[..., None]
    return (rgb.astype(np.float32) * (1 - alpha) + colour * alpha).round().astype(np.uint8)


def fit_display(height: int, width: int, *, longest: int = 512, shortest: int = 256) -> tuple[int, int]:
    """A display size for an image: small ones enlarged so the shorter side reaches `shortest`, large
    ones reduced so the longer side is at most `longest`."""
    scale = max(shortest / min(height, width), 1.0)
    scale = min(scale, longest / max(height, width)) if max(height, width) * scale > longest else scale
    return max(1, round(height * scale)), max(1, round(width * scale))

"""Class maps and area fractions of large micrographs, from a classifier's tiles.

`predict --tile SIZE [--stride S]` classifies tiles. Here the tiles' softmax outputs are combined per
pixel: every pixel gets the mean softmax of all the tiles that cover it (overlapping tiles are averaged,
never last-wins), its class is the largest of those means, and a class's area fraction is the share of
pixels given that class. These are classifier-based estimates at the resolution of the tiles and their
stride, not a segmentation: a tile's class is spread over all its pixels.

The pixels are never stored one by one: tile edges cut the image into rectangular cells covered by the
same tiles, so the per-pixel means are computed once per cell and the fractions are exact area sums,
whatever the size of the micrograph.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class ClassMap:
    """The per-pixel class of an image, as rectangular cells.

    Attributes
    ----------
    y_edges, x_edges : ndarray of int
        Cell boundaries in pixels, from 0 to the height / width.
    probs : ndarray of float32, shape (rows, cols, K)
        Mean softmax of the tiles covering each cell.
    labels : ndarray of int, shape (rows, cols)
        The class of each cell (argmax of `probs`).
    fractions : ndarray of float64, shape (K,)
        Area fraction of each class; sums to 1.
    """

    y_edges: np.ndarray
    x_edges: np.ndarray
    probs: np.ndarray
    labels: np.ndarray
    fractions: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.y_edges[-1]), int(self.x_edges[-1])

    def label_image(self, height: int, width: int) -> np.ndarray:
        """The labels sampled at the centres of a `height` x `width` grid over the image."""
        h, w = self.shape
        rows = np.searchsorted(self.y_edges, (np.arange(height) + 0.5) * h / height, side="right") - 1
        cols = np.searchsorted(self.x_edges, (np.arange(width) + 0.5) * w / width, side="right") - 1
        return self.labels[np.clip(rows, 0, len(self.y_edges) - 2)][:, np.clip(cols, 0, len(self.x_edges) - 2)]


def class_map(shape: tuple[int, int], tiles: Sequence[tuple[int, int, np.ndarray]], size: int) -> ClassMap:
    """Combine tile softmaxes per pixel (mean over the tiles covering it) into a `ClassMap`.

    Parameters
    ----------
    shape : (int, int)
        Height and width of the image the tiles were cut from.
    tiles : sequence of (x, y, probs)
        Top-left corner and softmax (K,) of each `size` x `size` tile, as in `predict.Prediction.tiles`.
    size : int
        The tile side in pixels.

    Returns
    -------
    ClassMap

    Raises
    ------
    ValueError
        No tiles, or pixels that no tile covers.
    """
    if not tiles:
        raise ValueError("no tiles")
    h, w = shape
    k = len(tiles[0][2])
    y_edges = np.unique(np.clip([0, h, *[y for _, y, _ in tiles], *[y + size for _, y, _ in tiles]], 0, h))
    x_edges = np.unique(np.clip([0, w, *[x for x, _, _ in tiles], *[x + size for x, _, _ in tiles]], 0, w))
    total = np.zeros((len(y_edges) - 1, len(x_edges) - 1, k), np.float64)
    count = np.zeros(total.shape[:2], np.int64)
    for x, y, p in tiles:
        r0, r1 = np.searchsorted(y_edges, [y, min(y + size, h)])
        c0, c1 = np.searchsorted(x_edges, [x, min(x + size, w)])
        total[r0:r1, c0:c1] += p
        count[r0:r1, c0:c1] += 1
    if (count == 0).any():
        raise ValueError("the tiles leave part of the image uncovered")
    probs = (total / count[..., None]).astype(np.float32)
    labels = probs.argmax(-1)
    area = np.outer(np.diff(y_edges), np.diff(x_edges)).astype(np.float64)
    fractions = np.bincount(labels.ravel(), weights=area.ravel(), minlength=k) / area.sum()
    return ClassMap(y_edges, x_edges, probs, labels, fractions)


def render_class_map(image: np.ndarray, cmap: ClassMap, classes: Sequence[str], *, title: str,
                     note: str = "", longest: int = 1024, opacity: float = 0.45) -> np.ndarray:
    """The micrograph with each class as a translucent colour, and a legend with the area fractions.

    Parameters
    ----------
    image : ndarray
        The micrograph, (H, W) or (H, W, 3), any float range (stretched for display).
    cmap : ClassMap
    classes : sequence of str
    title : str
        First line above the picture (the file name).
    note : str
        Second line (how the map was made).
    longest : int, default 1024
        The picture's longest side in pixels.
    opacity : float, default 0.45
        Of the class colours over the micrograph.

    Returns
    -------
    ndarray of uint8, shape (H', W', 3)
    """
    from PIL import Image, ImageDraw

    from .explain import _ellipsize
    from .figures import class_colors, class_label, display_gray, fit_display, font, hex_rgb, resize_rgb

    h, w = cmap.shape
    dh, dw = fit_display(h, w, longest=longest, shortest=min(256, longest))
    gray = resize_rgb(display_gray(image), dh, dw)
    labels = cmap.label_image(dh, dw)
    colours = np.array([hex_rgb(c) for c in class_colors(len(classes))], np.float32)
    over = (gray * (1 - opacity) + colours[labels] * opacity).round().astype(np.uint8)
    edges = np.zeros((dh, dw), bool)  # a thin outline where the class changes keeps regions readable
    edges[1:] |= labels[1:] != labels[:-1]
    edges[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    over[edges] = (colours[labels[edges]] * 0.6).astype(np.uint8)
    pad, line = 12, 22
    f_title, f_text = font(15, True), font(14)
    order = [int(i) for i in np.argsort(-cmap.fractions, kind="stable")]
    names = [class_label(classes[i], 40).replace("\n", " ") for i in order]
    legend_w = max(220, 60 + max(int(f_text.getlength(n)) for n in names) + 70)
    width = pad + dw + pad + legend_w + pad
    head = pad + (2 if note else 1) * line + 4
    height = max(head + dh + pad, head + len(order) * line + 2 * line)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, pad), _ellipsize(title, f_title, width - 2 * pad), font=f_title, fill="black")
    if note:
        draw.text((pad, pad + line), _ellipsize(note, f_text, width - 2 * pad), font=f_text, fill="#333333")
    canvas.paste(Image.fromarray(over), (pad, head))
    x0 = pad + dw + pad
    draw.text((x0, head), "class: area fraction", font=f_title, fill="black")
    y = head + line + 4
    for i, name in zip(order, names):
        draw.rectangle((x0, y + 2, x0 + 16, y + 16), fill=tuple(int(v) for v in colours[i]), outline="#555555")
        draw.text((x0 + 24, y), name, font=f_text, fill="black")
        frac = f"{100 * cmap.fractions[i]:.1f} %"
        draw.text((width - pad - f_text.getlength(frac), y), frac, font=f_text, fill="black")
        y += line
    return np.asarray(canvas)


def class_map_picture(path: str, cmap: ClassMap, classes: Sequence[str], *, size: int, stride: int,
                      max_pixels: int | None = None) -> np.ndarray:
    """`render_class_map` of an image file: the micrograph as read (before any pipeline), the map of its
    tiles (`size`, `stride`) over it, and a note saying how the map was made.

    Raises
    ------
    ImageReadError
        The file cannot be read again.
    """
    from .io import read_image

    img = read_image(path, mode="auto", max_pixels=max_pixels).data
    step = f", stride {stride}" if stride != size else ""
    note = f"tiles of {size} px{step}, softmax averaged per pixel: a classifier-based estimate, not a segmentation"
    return render_class_map(img, cmap, classes, title=path, note=note)

"""The model-input contract: how a file becomes network input.

`InputSpec` (stored in every model bundle) says how: channel count, input size, the resize policy
(`fit`), the classical pipeline and the normalisation. `prepare_array` is the one function that turns a
file into a (C, H, W) float32 array; training, evaluation, prediction and export all call it, so a model
sees the same pixels everywhere. numpy and Pillow only: it runs in worker processes without torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .errors import ImageReadError, MicrocliError, UsageError, describe
from .io import has_colour, read_image
from .options import Fit
from .parallel import bounded_map
from .preprocess import Pipeline


@dataclass(frozen=True)
class InputSpec:
    """How a file becomes a (C, S, S) array; stored in every model bundle.

    Attributes
    ----------
    channels : int
        1 (read as luma) or 3 (read as RGB).
    img_size : int
        S, the network input side in pixels.
    fit : str
        'resize' (shorter side to S, centre crop), 'squash' (both sides to S, the whole image kept, its
        aspect ratio not) or 'crop' (native pixel scale; see `fit_array`).
    pipeline : tuple of dict
        The classical preprocessing, as `Pipeline.to_list` gives it.
    mean, std : tuple of float
        Per-channel normalisation statistics of the training images; empty until they are computed.
    whole : int
        fit=crop: an image whose height and width are both at most `whole` pixels is evaluated whole, in
        one pass at native scale; a larger one on S x S tiles, their softmax averaged
        (`engines.view_boxes`). 0: always tiles (what networks with a fixed pooling grid, LeNet, need,
        and what bundles made before this field hold).
    """

    channels: int = 1
    img_size: int = 128
    fit: str = "resize"  # resize: shorter side to S then centre crop; squash: S x S; crop: native scale
    pipeline: tuple = ()  # Pipeline.to_list() as a tuple of dicts
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    whole: int = 0

    @property
    def largest_input(self) -> int:
        """The longest side of a network input at evaluation: `whole` for fit=crop (at least S), else S."""
        return max(self.whole, self.img_size) if self.fit == "crop" else self.img_size

    def to_dict(self) -> dict:
        """JSON-ready: the fields, tuples as lists."""
        return {"channels": self.channels, "img_size": self.img_size, "fit": self.fit,
                "pipeline": list(self.pipeline), "mean": list(self.mean), "std": list(self.std), "whole": self.whole}

    @classmethod
    def from_dict(cls, d: dict) -> InputSpec:
        """From `to_dict`'s form, checking every field (a bundle's file may be damaged or hand-edited).

        Raises
        ------
        ValueError : naming the first field that is missing or malformed.
        """
        if not isinstance(d, dict):
            raise ValueError(f"expected a dict, got {type(d).__name__}")
        missing = [k for k in ("channels", "img_size", "fit", "mean", "std") if k not in d]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        channels, size, fit = d["channels"], d["img_size"], d["fit"]
        if channels not in (1, 3) or isinstance(channels, bool):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"img_size must be a positive integer, got {size!r}")
        if fit not in FITS:
            raise ValueError(f"fit must be one of {', '.join(FITS)}, got {fit!r}")
        stats = {}
        for key in ("mean", "std"):
            v = d[key]
            if (not isinstance(v, (list, tuple)) or len(v) != channels
                    or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x) for x in v)):
                raise ValueError(f"{key} must be {channels} finite number(s), got {v!r}")
            stats[key] = tuple(float(x) for x in v)
        if any(x <= 0 for x in stats["std"]):
            raise ValueError(f"std must be positive, got {d['std']!r}")
        pipeline = d.get("pipeline", [])
        if not isinstance(pipeline, (list, tuple)):
            raise ValueError(f"pipeline must be a list, got {type(pipeline).__name__}")
        try:
            Pipeline.from_list(list(pipeline))
        except MicrocliError as exc:
            raise ValueError(f"pipeline: {exc}") from None
        whole = d.get("whole", 0)
        if not isinstance(whole, int) or isinstance(whole, bool) or whole < 0:
            raise ValueError(f"whole must be a non-negative integer, got {whole!r}")
        return cls(channels, size, fit, tuple(pipeline), stats["mean"], stats["std"], whole)

    def get_pipeline(self) -> Pipeline:
        """`pipeline` as a checked `Pipeline`.

        Raises
        ------
        PipelineError
            A stored step this version does not know or accept.
        """
        return Pipeline.from_list(list(self.pipeline))


# How an image becomes the network's input (`fit_array`): the Fit choices a model can hold (auto is
# resolved before training).
FITS = tuple(f.value for f in Fit if f is not Fit.auto)

# --fit crop models whose network takes any size evaluate an image whole, in one pass, when neither side
# exceeds this many input sides; larger images on tiles of the input size. On NEU-DET (200 px images,
# 128 px crops) the whole image beat the four averaged tiles in eleven models of thirteen (by 0.3 to 1.4
# points), in 40 % less network time, and by 1.1 points for 100 px crops (two input sides). Views
# between the two (160 or 192 px, overlapping) were no better than tiles, and a model trained on 64 px
# crops lost 5 points on the whole 200 px image (3.1 input sides) and 1.7 on 128 px views: the gain
# belongs to the whole image near the training scale.
CROP_WHOLE = 2

# --fit crop enlarges an image whose shorter side is below the input size; a strip thinner than that
# keeps at most this many input sides of its length (the centre), so 2 x 1,000,000 px stays small.
CROP_MAX_ASPECT = 16


def _resize(arr: np.ndarray, height: int, width: int, box: tuple[float, float, float, float] | None = None
            ) -> np.ndarray:
    """Bilinear resize with antialiasing (Pillow 'F' images), channel by channel. `box` (left, top, right,
    bottom, in source pixels, fractions allowed) resamples only that window; pixels around it still feed
    the filter, so the result equals resizing the whole image and cutting the window out."""
    if arr.shape[:2] == (height, width) and box in (None, (0, 0, arr.shape[1], arr.shape[0])):
        return arr
    if arr.ndim == 3:
        return np.stack([_resize(arr[..., c], height, width, box) for c in range(arr.shape[2])], -1)
    img = Image.fromarray(np.ascontiguousarray(arr, dtype=np.float32), mode="F")
    return np.asarray(img.resize((width, height), Image.BILINEAR, box=box), dtype=np.float32)


def _resized_window(arr: np.ndarray, nh: int, nw: int, oh: int, ow: int) -> np.ndarray:
    """The centre (oh, ow) window of `arr` resized to (nh, nw), without making the whole resized image
    (a 3 x 60,000 strip scaled to a 128 px short side would be 1.3 GB before the crop)."""
    h, w = arr.shape[:2]
    top, left = (nh - oh) // 2, (nw - ow) // 2
    if (nh, nw) == (h, w):  # native scale: a plain cut
        return arr[top:top + oh, left:left + ow]
    box = (left * w / nw, top * h / nh, (left + ow) * w / nw, (top + oh) * h / nh)
    return _resize(arr, oh, ow, box)


def fit_array(arr: np.ndarray, size: int, fit: str) -> np.ndarray:
    """resize: shorter side to `size`, centre crop to size x size. squash: both sides to `size` (the
    whole image, its aspect ratio not kept, as Keras' image loaders do). crop: keep the native pixel scale
    (only images whose shorter side is below `size` are enlarged to it, keeping at most
    `CROP_MAX_ASPECT` sides of their length). Only the pixels kept are ever resampled, so memory stays
    bounded by the input and the output, whatever the aspect ratio. Scaling is bilinear with
    antialiasing (Pillow), channel by channel.

    Parameters
    ----------
    arr : ndarray of float32, shape (H, W) or (H, W, C)
    size : int
        The network input side in pixels.
    fit : str
        'resize', 'squash' or 'crop'.

    Returns
    -------
    ndarray of float32
        (size, size[, C]) for resize and squash; for crop, both sides at least `size`.
    """
    h, w = arr.shape[:2]
    if fit == "squash":
        return _resize(arr, size, size)
    short = min(h, w)
    if fit != "resize" and short >= size:
        return arr
    scale = size / short
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    if fit == "resize":
        return _resized_window(arr, nh, nw, size, size)
    limit = size * CROP_MAX_ASPECT
    return _resized_window(arr, nh, nw, min(nh, limit), min(nw, limit))


def load_for_model(path: str, spec: InputSpec, *, max_pixels: int | None = None,
                   size_hint: int | None = None) -> np.ndarray:
    """Read at the model's channel count and apply its classical pipeline: float32 (H, W) or (H, W, 3).

    A 3-channel model gets a gray pipeline output (an edge map, say) repeated into 3 channels.

    Parameters
    ----------
    path : str
        The image file.
    spec : InputSpec
        Its channels and pipeline are used.
    max_pixels : int or None
        Decompression-bomb guard (None: the default limit; 0: none).
    size_hint : int or None
        Passed to `read_image`: a JPEG may be decoded at a reduced scale no smaller than this.

    Returns
    -------
    ndarray of float32
        (H, W) for 1 channel, (H, W, 3) for 3; intensities scaled from the file's range, then filtered.

    Raises
    ------
    ImageReadError
        The file cannot be read (one of its subclasses).
    OpError, PipelineError
        The pipeline cannot be applied to this image, or is not valid.
    """
    pipeline = spec.get_pipeline()
    img = read_image(path, mode="gray" if spec.channels == 1 else "rgb", max_pixels=max_pixels, size_hint=size_hint)
    arr = (pipeline.apply(img.data) if pipeline else img.data).astype(np.float32, copy=False)
    if arr.ndim == 2 and spec.channels == 3:
        arr = np.repeat(arr[..., None], 3, -1)
    return arr


def to_chw(arr: np.ndarray) -> np.ndarray:
    """(H, W) -> (1, H, W), (H, W, C) -> (C, H, W), as a C-contiguous float32 array.

    Parameters
    ----------
    arr : ndarray, shape (H, W) or (H, W, C)

    Returns
    -------
    ndarray of float32, shape (C, H, W)
    """
    return np.ascontiguousarray(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1), dtype=np.float32)


def prepare_array(path: str, spec: InputSpec, *, max_pixels: int | None = None) -> np.ndarray:
    """File -> float32 (C, H, W): read at the model's channel count, pipeline, fit. Not yet normalised.

    Parameters
    ----------
    path : str
        The image file.
    spec : InputSpec
        Channels, size, fit and pipeline; with fit=resize or squash and no pipeline, a JPEG may be decoded at a
        reduced scale, no smaller than `img_size` on each side.
    max_pixels : int or None
        Decompression-bomb guard (None: the default limit; 0: none).

    Returns
    -------
    ndarray of float32, shape (C, H, W)
        H = W = ``spec.img_size`` for fit=resize and squash; both at least that for fit=crop.

    Raises
    ------
    ImageReadError, OpError, PipelineError
        As `load_for_model`.
    """
    hint = spec.img_size if (spec.fit != "crop" and not spec.pipeline) else None
    arr = load_for_model(path, spec, max_pixels=max_pixels, size_hint=hint)
    return to_chw(fit_array(arr, spec.img_size, spec.fit))


RANGE_STDS = 6  # how far (in training standard deviations) beyond the training mean a value may lie


def seen_range(spec: InputSpec) -> tuple[float, float]:
    """The pixel values (after pipeline and fit, before normalisation) a model saw in training, roughly:
    [0, 1] (how 8- and 16-bit files are read) widened to the training mean +- `RANGE_STDS` std."""
    lo = min([0.0] + [m - RANGE_STDS * s for m, s in zip(spec.mean, spec.std)])
    hi = max([1.0] + [m + RANGE_STDS * s for m, s in zip(spec.mean, spec.std)])
    return lo, hi


def range_warning(arrays: Iterable[np.ndarray], spec: InputSpec) -> str | None:
    """A message when prepared arrays hold values far outside `seen_range` (a float TIFF in raw units,
    0..1000 say, on a model trained on 8-bit images): the network still answers, often confidently,
    but the answer means nothing. None when the values are in range."""
    arrays = list(arrays)
    if not arrays:
        return None
    vmin, vmax = min(float(a.min()) for a in arrays), max(float(a.max()) for a in arrays)
    lo, hi = seen_range(spec)
    if lo <= vmin and vmax <= hi:
        return None
    return (f"pixel values span [{vmin:.4g}, {vmax:.4g}], far outside what the model saw in training (about "
            f"[{lo:.3g}, {hi:.3g}]); its answer is unreliable: rescale the image to the training data's range "
            "(8- and 16-bit files are read as [0, 1])")


def prepare_or_error(args) -> np.ndarray | str:
    """`prepare_array` that returns any failure as its message instead of raising (for worker pools).
    A UsageError (a bad setting such as MICROCLI_MAX_PIXELS) concerns every file, so it is raised, not
    reported once per file.

    Parameters
    ----------
    args : tuple
        (path, spec, max_pixels), one picklable argument for `map`.

    Returns
    -------
    ndarray or str
        The (C, H, W) float32 array, or the one-line message naming the file (`microcli.errors.describe`).
    """
    path, spec, max_pixels = args
    try:
        return prepare_array(path, spec, max_pixels=max_pixels)
    except UsageError:
        raise
    except Exception as exc:
        return describe(path, exc)


def prepare_many(paths: Iterable[str], spec: InputSpec, *, workers: int = 0, max_pixels: int | None = None,
                 chunk: int = 16, threads: bool = False) -> Iterator[np.ndarray | str]:
    """prepare_array over many files, in order, in `workers` processes or threads (0: in this process).
    Yields the array, or the error message (naming the file) for a file that failed.

    Parameters
    ----------
    paths : iterable of str
        Consumed lazily (a stdin pipe may still be running).
    spec : InputSpec
    workers : int, default 0
        Processes, or threads with `threads` (0: in this process).
    max_pixels : int or None
        Decompression-bomb guard (None: the default limit; 0: none).
    chunk : int, default 16
        Files per task sent to a worker.
    threads : bool, default False
        Threads instead of processes (see `microcli.parallel.bounded_map`).

    Yields
    ------
    ndarray or str
        One per path, in order: the (C, H, W) float32 array or the error message.
    """
    yield from bounded_map(prepare_or_error, ((p, spec, max_pixels) for p in paths), workers=workers, chunk=chunk,
                           threads=threads)


def detect_channels(paths: Iterable[str], *, max_pixels: int | None = None) -> int:
    """1 when every readable image is grayscale (channels equal within JPEG noise), else 3.

    Reads the images in order until the first colour one; unreadable ones are skipped.

    Parameters
    ----------
    paths : iterable of str
    max_pixels : int or None
        Decompression-bomb guard (None: the default limit; 0: none).

    Returns
    -------
    int
        1 or 3 (1 also when no image can be read).
    """
    for p in paths:
        try:
            if has_colour(read_image(p, mode="auto", max_pixels=max_pixels).data):
                return 3
        except ImageReadError:
            continue
    return 1

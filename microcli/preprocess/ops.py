"""Named classical filters: a registry of ops, each with declared parameters that are checked up front.

scikit-image does the image processing; an op here only adapts the call (float32 in [0, 1] in, float32
or bool out) and states its parameters, so `microcli preprocess --list` and the validation messages come
from one table. scikit-image is imported inside the ops so that listing them stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import OpError, PipelineError


@dataclass(frozen=True)
class Param:
    """One parameter: its type, default, allowed range or choices, and a short help text."""

    name: str
    type: type
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple[str, ...] = ()
    optional: bool = False  # None allowed (means "automatic")

    def rule(self) -> str:
        if self.choices:
            return "one of " + ", ".join(self.choices)
        kind = {int: "an integer", float: "a number", bool: "true or false"}.get(self.type, self.type.__name__)
        if self.low is not None or self.high is not None:
            lo = "-inf" if self.low is None else f"{self.low:g}"
            hi = "inf" if self.high is None else f"{self.high:g}"
            kind += f" in {'(' if self.low_open else '['}{lo}, {hi}]"
        return kind + (" or 'auto'" if self.optional else "")

    def coerce(self, op: str, raw: Any) -> Any:
        """Turn a CLI string or JSON value into a checked value, or raise PipelineError naming the rule."""
        def fail() -> PipelineError:
            return PipelineError(f"op '{op}': parameter '{self.name}' must be {self.rule()}, got {raw!r}")

        if raw is None or (self.optional and isinstance(raw, str) and raw.lower() in ("auto", "none", "")):
            if self.optional:
                return None
            raise fail()
        if self.choices:
            if str(raw) not in self.choices:
                raise fail()
            return str(raw)
        if self.type is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise fail()
        try:
            number = float(raw)
        except (TypeError, ValueError):
            raise fail() from None
        if not np.isfinite(number) or (self.type is int and number != int(number)):
            raise fail()
        value = int(number) if self.type is int else number
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            raise fail()
        if self.high is not None and value > self.high:
            raise fail()
        return value


@dataclass(frozen=True)
class OpSpec:
    name: str
    func: Callable[..., np.ndarray]
    help: str
    params: tuple[Param, ...] = ()
    gray_only: bool = False  # colour input is converted to luma first
    binary: bool = False  # output is a mask, written as 8-bit 0/255
    channel_axis: bool = False  # the skimage call handles colour natively
    unit_range: bool = False  # works on [0, 1] and clips anything else (raw-unit float images must not reach it)
    normalises: bool = False  # output lies in [0, 1] whatever the input's range
    check: Callable[[dict], None] | None = field(default=None, repr=False)  # cross-parameter rule

    def validate(self, raw: dict[str, Any]) -> dict[str, Any]:
        known = {p.name: p for p in self.params}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            allowed = ", ".join(known) or "none"
            raise PipelineError(f"op '{self.name}': unknown parameter '{unknown[0]}' (parameters: {allowed})")
        values = {p.name: p.default for p in self.params}
        values.update({k: known[k].coerce(self.name, v) for k, v in raw.items()})
        if self.check:
            self.check(values)
        return values


OPS: dict[str, OpSpec] = {}


def op(name: str, help: str, *params: Param, **flags) -> Callable:
    def register(func: Callable) -> Callable:
        OPS[name] = OpSpec(name, func, help, tuple(params), **flags)
        return func

    return register


def _require(cond: bool, op_name: str, msg: str) -> None:
    if not cond:
        raise PipelineError(f"op '{op_name}': {msg}")


def _channel_kw(image: np.ndarray) -> dict:
    return {"channel_axis": -1} if image.ndim == 3 else {}


# --- smoothing ---------------------------------------------------------------------------------------

@op("gaussian", "Gaussian blur (skimage.filters.gaussian).",
    Param("sigma", float, 1.0, "standard deviation in pixels", 0, 100, low_open=True), channel_axis=True)
def gaussian(image, *, sigma):
    from skimage.filters import gaussian as sk_gaussian

    return sk_gaussian(image, sigma=sigma, preserve_range=True, **_channel_kw(image)).astype(np.float32)


@op("median", "Median filter over a disk (skimage.filters.median); removes salt-and-pepper noise.",
    Param("radius", int, 1, "disk radius in pixels", 1, 50))
def median(image, *, radius):
    from skimage.filters import median as sk_median
    from skimage.morphology import disk

    fp = disk(radius)
    if image.ndim == 3:
        return np.stack([median(image[..., c], radius=radius) for c in range(3)], axis=-1)
    return sk_median(image, footprint=fp, mode="reflect").astype(np.float32)


@op("unsharp", "Unsharp mask sharpening (skimage.filters.unsharp_mask).",
    Param("radius", float, 1.0, "blur radius in pixels", 0, 100, low_open=True),
    Param("amount", float, 1.0, "sharpening strength", 0, 20), channel_axis=True)
def unsharp(image, *, radius, amount):
    from skimage.filters import unsharp_mask

    return unsharp_mask(image, radius=radius, amount=amount, preserve_range=True,
                        **_channel_kw(image)).astype(np.float32)


def _check_denoise(v: dict) -> None:
    _require(v["method"] == "nlm" or v["h"] is None, "denoise", "parameter 'h' applies to method=nlm only")


@op("denoise", "Total-variation (tv) or non-local means (nlm) denoising (skimage.restoration).",
    Param("method", str, "tv", "algorithm", choices=("tv", "nlm")),
    Param("weight", float, 0.1, "tv: denoising weight (higher = smoother)", 0, 10, low_open=True),
    Param("h", float, None, "nlm: cut-off distance; auto = 0.8 x estimated noise sigma", 0, 10,
          low_open=True, optional=True),
    Param("patch_size", int, 5, "nlm: patch side in pixels", 1, 31),
    Param("patch_distance", int, 6, "nlm: search radius in pixels", 1, 50),
    channel_axis=True, check=_check_denoise)
def denoise(image, *, method, weight, h, patch_size, patch_distance):
    from skimage.restoration import denoise_nl_means, denoise_tv_chambolle, estimate_sigma

    kw = _channel_kw(image)
    if method == "tv":
        return denoise_tv_chambolle(image, weight=weight, **kw).astype(np.float32)
    if h is None:
        h = 0.8 * float(np.mean(estimate_sigma(image, **kw))) or 1e-3
    return denoise_nl_means(image, h=h, patch_size=patch_size, patch_distance=patch_distance,
                            fast_mode=True, preserve_range=True, **kw).astype(np.float32)


# --- edges and derivatives ---------------------------------------------------------------------------

@op("sobel", "Sobel gradient magnitude (skimage.filters.sobel).", gray_only=True)
def sobel(image):
    from skimage.filters import sobel as sk_sobel

    return sk_sobel(image).astype(np.float32)


@op("scharr", "Scharr gradient magnitude, more rotation-invariant than Sobel (skimage.filters.scharr).",
    gray_only=True)
def scharr(image):
    from skimage.filters import scharr as sk_scharr

    return sk_scharr(image).astype(np.float32)


@op("laplace", "Laplacian edge response (skimage.filters.laplace); abs=true keeps it in [0, 1].",
    Param("ksize", int, 3, "kernel size", 3, 31), Param("abs", bool, True, "absolute response"),
    gray_only=True, check=lambda v: _require(v["ksize"] % 2 == 1, "laplace", "parameter 'ksize' must be odd"))
def laplace(image, *, ksize, abs):
    from skimage.filters import laplace as sk_laplace

    out = sk_laplace(image, ksize=ksize).astype(np.float32)
    return np.abs(out) if abs else out


def _check_canny(v: dict) -> None:
    lo, hi = v["low"], v["high"]
    if v["quantile"]:
        for name in ("low", "high"):
            _require(v[name] is None or v[name] <= 1, "canny", f"with quantile=true, '{name}' must be in [0, 1]")
    _require(lo is None or hi is None or lo <= hi, "canny", f"'low' ({lo}) must not exceed 'high' ({hi})")


@op("canny", "Canny edge detector (skimage.feature.canny): a binary edge map.",
    Param("sigma", float, 1.0, "Gaussian smoothing before the gradient", 0, 100),
    Param("low", float, None, "low hysteresis threshold (auto: 10% of dtype max)", 0, None, optional=True),
    Param("high", float, None, "high hysteresis threshold (auto: 20% of dtype max)", 0, None, optional=True),
    Param("quantile", bool, False, "read low/high as quantiles of the gradient magnitude"),
    gray_only=True, binary=True, check=_check_canny)
def canny(image, *, sigma, low, high, quantile):
    from skimage.feature import canny as sk_canny

    return sk_canny(image, sigma=sigma, low_threshold=low, high_threshold=high, use_quantiles=quantile)


# --- intensity ---------------------------------------------------------------------------------------

@op("equalize", "Global histogram equalisation (skimage.exposure.equalize_hist).",
    Param("bins", int, 256, "histogram bins", 2, 65536), normalises=True)
def equalize(image, *, bins):
    from skimage.exposure import equalize_hist

    if image.ndim == 3:  # per channel: a joint histogram over R, G and B shifts the colours
        return np.stack([equalize(image[..., c], bins=bins) for c in range(3)], axis=-1)
    return equalize_hist(image, nbins=bins).astype(np.float32)


@op("clahe", "Contrast-limited adaptive histogram equalisation (skimage.exposure.equalize_adapthist); "
             "input in [0, 1]; a flat (constant) image comes out white.",
    Param("clip", float, 0.01, "clip limit (higher = more contrast)", 0, 1, low_open=True),
    Param("kernel", int, None, "tile size in pixels (auto: 1/8 of the image)", 2, None, optional=True),
    Param("bins", int, 256, "histogram bins", 2, 65536), channel_axis=True, unit_range=True)
def clahe(image, *, clip, kernel, bins):
    from skimage.exposure import equalize_adapthist

    return equalize_adapthist(np.clip(image, 0, 1), kernel_size=kernel, clip_limit=clip,
                              nbins=bins).astype(np.float32)


def _check_stretch(v: dict) -> None:
    _require(v["low"] < v["high"], "stretch", f"'low' ({v['low']:g}) must be below 'high' ({v['high']:g})")


@op("stretch", "Contrast stretch: the low..high percentiles map to 0..1 (skimage.exposure.rescale_intensity); "
               "evens out exposure between images.",
    Param("low", float, 1.0, "lower percentile", 0, 100), Param("high", float, 99.0, "upper percentile", 0, 100),
    channel_axis=True, check=_check_stretch, normalises=True)
def stretch(image, *, low, high):
    from skimage.exposure import rescale_intensity

    lo, hi = np.percentile(image, (low, high))
    if hi <= lo:  # a flat image has no contrast to stretch
        return np.zeros_like(image, dtype=np.float32)
    return rescale_intensity(image, in_range=(lo, hi), out_range=(0.0, 1.0)).astype(np.float32)


@op("gamma", "Gamma correction out = in ** gamma (skimage.exposure.adjust_gamma).",
    Param("gamma", float, 1.0, "exponent (<1 brightens)", 0, 10, low_open=True), channel_axis=True, unit_range=True)
def gamma(image, *, gamma):
    from skimage.exposure import adjust_gamma

    return adjust_gamma(np.clip(image, 0, 1), gamma=gamma).astype(np.float32)


@op("threshold", "Global threshold to a binary mask (skimage.filters.threshold_*).",
    Param("method", str, "otsu", "how the level is chosen", choices=("otsu", "li", "yen", "triangle", "mean")),
    Param("invert", bool, False, "mark pixels below the level instead of above"),
    gray_only=True, binary=True)
def threshold(image, *, method, invert):
    import skimage.filters as skf

    level = getattr(skf, f"threshold_{method}")(image)
    return image <= level if invert else image > level


@op("invert", "Invert intensities (1 - value, skimage.util.invert).", channel_axis=True, unit_range=True)
def invert(image):
    return (1.0 - np.clip(image, 0, 1)).astype(np.float32)


# --- geometry ----------------------------------------------------------------------------------------

def _check_resize(v: dict) -> None:
    _require(v["width"] is not None or v["height"] is not None, "resize", "give 'width', 'height' or both")


@op("resize", "Resize to width x height; give one of them to keep the aspect ratio (skimage.transform).",
    Param("width", int, None, "output width in pixels", 1, 100000, optional=True),
    Param("height", int, None, "output height in pixels", 1, 100000, optional=True),
    Param("antialias", bool, True, "smooth before downsampling"), channel_axis=True, check=_check_resize)
def resize(image, *, width, height, antialias):
    from skimage.transform import resize as sk_resize

    h, w = image.shape[:2]
    if width is None:
        width = max(1, round(w * height / h))
    if height is None:
        height = max(1, round(h * width / w))
    shape = (height, width) + image.shape[2:]
    return sk_resize(image, shape, order=1, anti_aliasing=antialias, preserve_range=True).astype(np.float32)


@op("rescale", "Scale both sides by a factor (skimage.transform.rescale).",
    Param("factor", float, 0.5, "scale factor", 0, 16, low_open=True), channel_axis=True)
def rescale(image, *, factor):
    from skimage.transform import rescale as sk_rescale

    return sk_rescale(image, factor, order=1, anti_aliasing=factor < 1, preserve_range=True,
                      **_channel_kw(image)).astype(np.float32)


@op("crop", "Cut pixels off the edges, e.g. crop:bottom=64 removes an SEM data bar.",
    Param("top", int, 0, "rows removed at the top", 0, None), Param("bottom", int, 0, "rows removed at the bottom", 0, None),
    Param("left", int, 0, "columns removed at the left", 0, None), Param("right", int, 0, "columns removed at the right", 0, None),
    channel_axis=True)
def crop(image, *, top, bottom, left, right):
    h, w = image.shape[:2]
    if top + bottom >= h or left + right >= w:
        raise OpError(f"op 'crop': removing top={top} bottom={bottom} left={left} right={right} "
                      f"leaves nothing of a {w}x{h} image")
    return image[top:h - bottom, left:w - right]

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
    """One parameter: its type, default, allowed range or choices, and a short help text.

    Attributes
    ----------
    name : str
        The key in ``op:key=value`` and in pipeline JSON.
    type : type
        `int`, `float`, `bool` or `str`.
    default : Any
        The value when the key is not given (None: automatic).
    help : str
        A few words for `microcli preprocess --list`.
    low, high : float or None
        Bounds of the allowed range (None: unbounded); `high` is always included.
    low_open : bool
        Exclude `low` itself from the range.
    choices : tuple of str
        The allowed values of a string parameter (empty: any value of `type`).
    optional : bool
        None allowed (means "automatic"); written 'auto', 'none' or '' on the command line.
    """

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
        """The allowed values in words, as `--list` and the error messages show them.

        Returns
        -------
        str
            E.g. "a number in (0, 100]", "an integer in [2, inf] or 'auto'", "one of tv, nlm".
        """
        if self.choices:
            return "one of " + ", ".join(self.choices)
        kind = {int: "an integer", float: "a number", bool: "true or false"}.get(self.type, self.type.__name__)
        if self.low is not None or self.high is not None:
            lo = "-inf" if self.low is None else f"{self.low:g}"
            hi = "inf" if self.high is None else f"{self.high:g}"
            kind += f" in {'(' if self.low_open else '['}{lo}, {hi}]"
        return kind + (" or 'auto'" if self.optional else "")

    def coerce(self, op: str, raw: Any) -> Any:
        """Turn a CLI string or JSON value into a checked value, or raise PipelineError naming the rule.

        Parameters
        ----------
        op : str
            The op's name, for the message.
        raw : Any
            A string from ``op:key=value`` or a JSON value. Booleans accept 1/0, true/false, yes/no, on/off;
            an integer accepts any whole number ("2.0"); None, 'auto', 'none' and '' mean None where
            `optional`.

        Returns
        -------
        Any
            The value as `type` (str for choices), or None for an optional parameter left automatic.

        Raises
        ------
        PipelineError
            The value is not of the type, outside the range, not finite or not among the choices.
        """
        def fail() -> PipelineError:
            """The error for `raw`, naming the op, the parameter and its rule."""
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
    """One registered op: the function, its help text, its parameters and how `Step.apply` feeds it.

    Attributes
    ----------
    name : str
        The op's name in ``name:key=value``.
    func : callable
        ``func(image, **params)``: float32 image in, float32 (or bool for a mask) image out.
    help : str
        One line for `microcli preprocess --list`, naming the scikit-image function.
    params : tuple of Param
        The parameters, in the order `--list` shows them.
    gray_only : bool
        Colour input is converted to luma first.
    binary : bool
        The output is a mask, written as 8-bit 0/255.
    channel_axis : bool
        The scikit-image call handles colour natively.
    check : callable or None
        A rule between parameters, ``check(values)``, raising PipelineError.
    """

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
        """Every parameter's value: the given ones coerced and checked, the others at their defaults.

        Parameters
        ----------
        raw : dict
            Parameter name to a CLI string or JSON value.

        Returns
        -------
        dict
            Every parameter of the op, by name.

        Raises
        ------
        PipelineError
            An unknown parameter name, a value that breaks its rule, or a failed cross-parameter `check`.
        """
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
    """Decorator that registers a function in `OPS` as the op `name`.

    Parameters
    ----------
    name : str
        The op's name on the command line and in pipeline JSON.
    help : str
        One line for `microcli preprocess --list`.
    *params : Param
        The op's parameters.
    **flags
        `OpSpec` fields: ``gray_only``, ``binary``, ``channel_axis``, ``check``.

    Returns
    -------
    callable
        The decorator; it returns the function unchanged.
    """
    def register(func: Callable) -> Callable:
        """Add `func` to `OPS` and return it as it is."""
        OPS[name] = OpSpec(name, func, help, tuple(params), **flags)
        return func

    return register


def _require(cond: bool, op_name: str, msg: str) -> None:
    if not cond:
        raise PipelineError(f"op '{op_name}': {msg}")


def _channel_kw(image: np.ndarray) -> dict:
    # A positive axis: scikit-image 0.26's unsharp_mask mishandles channel_axis=-1 (it writes rows 0-2 only).
    return {"channel_axis": image.ndim - 1} if image.ndim == 3 else {}


def _noise_sigma(image: np.ndarray) -> float:
    """Gaussian noise sigma, averaged over channels: scikit-image's wavelet estimate (Donoho's median
    absolute deviation of the finest diagonal detail) when PyWavelets is installed; otherwise the same
    estimate on Haar detail coefficients, ``(a - b - c + d) / 2`` over 2x2 blocks, / 0.6745."""
    try:
        from skimage.restoration import estimate_sigma

        return float(np.mean(estimate_sigma(image, **_channel_kw(image))))
    except ImportError:
        x = image if image.ndim == 3 else image[..., None]
        h, w = (x.shape[0] // 2) * 2, (x.shape[1] // 2) * 2
        x = x[:h, :w].astype(np.float64)
        hh = (x[0::2, 0::2] - x[0::2, 1::2] - x[1::2, 0::2] + x[1::2, 1::2]) / 2
        return float(np.mean(np.median(np.abs(hh.reshape(-1, hh.shape[-1])), axis=0) / 0.6745)) if hh.size else 0.0


# --- smoothing ---------------------------------------------------------------------------------------

@op("gaussian", "Gaussian blur (skimage.filters.gaussian).",
    Param("sigma", float, 1.0, "standard deviation in pixels", 0, 100, low_open=True), channel_axis=True)
def gaussian(image, *, sigma):
    """Gaussian blur, each colour channel on its own (`skimage.filters.gaussian`, ``preserve_range=True``).

    Parameters
    ----------
    image : ndarray of float32, shape (H, W) or (H, W, 3)
        Intensities scaled from the file's own range (usually [0, 1]).
    sigma : float, default 1.0
        Standard deviation of the Gaussian kernel in pixels, in (0, 100].

    Returns
    -------
    ndarray of float32, same shape as `image`
    """
    from skimage.filters import gaussian as sk_gaussian

    return sk_gaussian(image, sigma=sigma, preserve_range=True, **_channel_kw(image)).astype(np.float32)


@op("median", "Median filter over a disk (skimage.filters.median); removes salt-and-pepper noise.",
    Param("radius", int, 1, "disk radius in pixels", 1, 50))
def median(image, *, radius):
    """Median filter over a disk (`skimage.filters.median`, ``mode="reflect"``); removes salt-and-pepper noise.

    Colour images are filtered channel by channel.

    Parameters
    ----------
    image : ndarray of float32, shape (H, W) or (H, W, 3)
        Intensities scaled from the file's own range (usually [0, 1]).
    radius : int, default 1
        Radius in pixels of the disk footprint (`skimage.morphology.disk`, 2 * radius + 1 wide), in [1, 50].

    Returns
    -------
    ndarray of float32, same shape as `image`
    """
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
    """Unsharp-mask sharpening, ``image + amount * (image - blurred)`` (`skimage.filters.unsharp_mask`).

    `blurred` is a Gaussian blur of sigma `radius`. The range is preserved, not clipped, so values may leave
    [0, 1] near edges.

    Parameters
    ----------
    image : ndarray of float32, shape (H, W) or (H, W, 3)
        Intensities scaled from the file's own range (usually [0, 1]).
    radius : float, default 1.0
        Sigma in pixels of the Gaussian blur that makes the mask, in (0, 100].
    amount : float, default 1.0
        Strength: how much of the detail (image minus blur) is added back, in [0, 20].

    Returns
    -------
    ndarray of float32, same shape as `image`

    Notes
    -----
    Colour channels are passed as ``channel_axis=2``: scikit-image 0.26's `unsharp_mask` slices the first
    axis for ``channel_axis=-1`` and leaves most of the output uninitialised.
    """
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
    """Total-variation or non-local-means denoising (`skimage.restoration`).

    Parameters
    ----------
    image : ndarray of float32, shape (H, W) or (H, W, 3)
        Intensities scaled from the file's own range (usually [0, 1]).
    method : {'tv', 'nlm'}, default 'tv'
        'tv': `denoise_tv_chambolle`, each colour channel on its own. 'nlm': `denoise_nl_means` with
        ``fast_mode=True``, patches compared over all channels.
    weight : float, default 0.1
        tv only: denoising weight in (0, 10]; higher is smoother and less faithful to the input.
    h : float or None, default None
        nlm only (PipelineError otherwise): cut-off distance in intensity units, in (0, 10]. None (auto):
        0.8 x the noise sigma (`_noise_sigma`: `skimage.restoration.estimate_sigma` when PyWavelets is
        installed, else the same robust estimate on Haar detail coefficients; 1e-3 if that is 0).
    patch_size : int, default 5
        nlm only: side of the compared patches in pixels, in [1, 31].
    patch_distance : int, default 6
        nlm only: radius in pixels of the window searched for similar patches, in [1, 50].

    Returns
    -------
    ndarray of float32, same shape as `image`
    """
    from skimage.restoration import denoise_nl_means, denoise_tv_chambolle

    kw = _channel_kw(image)
    if method == "tv":
        return denoise_tv_chambolle(image, weight=weight, **kw).astype(np.float32)
    if h is None:
        h = 0.8 * _noise_sigma(image) or 1e-3
    return denoise_nl_means(image, h=h, patch_size=patch_size, patch_distance=patch_distance,
                            fast_mode=True, preserve_range=True, **kw).astype(np.float32)


# --- edges and derivatives ---------------------------------------------------------------------------

@op("sobel", "Sobel gradient magnitude (skimage.filters.sobel).", gray_only=True)
def sobel(image):
    """Sobel gradient magnitude (`skimage.filters.sobel`); a unit step edge gives about 0.71.

    Parameters
    ----------
    image : ndarray of float32, shape (H, W)
        Intensities scaled from the file's own range (usually [0, 1]); `Step.apply` turns colour into
        luma first.

    Returns
    -------
    ndarray of float32, shape (H, W)
    """
    from skimage.filters import sobel as sk_sobel

    return sk_sobel(image).astype(np.float32)


@op("scharr", "Scharr gradient magnitude, more rotation-invariant than Sobel (skimage.filters.scharr).",
    gray_only=True)
def scharr(image):
    """Scharr gradient magnitude, more rotation-invariant than Sobel (`skimage.filters.scharr`).

    Parameters
    ----------
    image : ndarray of float32, shape (H, W)
        Intensities scaled from the file's own range (usually [0, 1]); `Step.apply` turns colour into
        luma first.

    Returns
    -------
    ndarray of float32, shape (H, W)
    """
    from skimage.filters import scharr as sk_scharr

    return sk_scharr(image).astype(np.float32)


@op("laplace", "Laplacian edge response (skimage.filters.laplace), 3x3; in [0, 4] with abs=true, clipped to "
                "[0, 1] when written.",
    Param("ksize", int, 3, "kept for old pipelines: scikit-image uses its 3x3 kernel whatever this is", 3, 31), Param("abs", bool, True, "absolute response"),
    gray_only=True, check=lambda v: _require(v["ksize"] % 2 == 1, "laplace", "parameter 'ksize' must be odd"))
def laplace(image, *, ksize, abs):
    """Laplacian edge response (`skimage.filters.laplace`).

    scikit-image 0.26 convolves with the 3x3 kernel [[0, -1, 0], [-1, 4, -1], [0, -1, 0]] whatever
    `ksize` is, so for input in [0, 1] the response lies in [-4, 4] ([0, 4] with `abs`).

    Parameters
    ----------
    image : ndarray of float32, shape (H, W)
        Intensities scaled from the file's own range (usually [0, 1]); `Step.apply` turns colour into
        luma first.
    ksize : int, default 3
        Kernel size passed as ``ksize``; odd, in [3, 31] (PipelineError otherwise).
    abs : bool, default True
        Return the absolute response; false keeps the sign.

    Returns
    -------
    ndarray of float32, shape (H, W)
    """
    from skimage.filters import laplace as sk_laplace

    out = sk_laplace(image, ksize=ksize).astype(np.float32)
    return np.abs(out) if abs else out


def _check_canny(v: dict) -> None:
    lo, hi = v["low"], v["high"]
    if v["quantile"]:
        for name in ("low", "high"):
            _require(v[name] is None or v[name] <= 1, "canny", f"with quantile=true, '{name}' must be in [0, 1]")
    # One threshold given: the other is scikit-image's automatic 0.1 (low) or 0.2 (high).
    lo_txt, hi_txt = (f"{lo}" if lo is not None else "0.1, automatic"), (f"{hi}" if hi is not None else "0.2, automatic")
    _require((0.1 if lo is None else lo) <= (0.2 if hi is None else hi), "canny",
             f"'low' ({lo_txt}) must not exceed 'high' ({hi_txt})")


@op("canny", "Canny edge detector (skimage.feature.canny): a binary edge map.",
    Param("sigma", float, 1.0, "Gaussian smoothing before the gradient", 0, 100),
    Param("low", float, None, "low hysteresis threshold (auto: 10% of dtype max)", 0, None, optional=True),
    Param("high", float, None, "high hysteresis threshold (auto: 20% of dtype max)", 0, None, optional=True),
    Param("quantile", bool, False, "read low/high as quantiles of the gradient magnitude"),
    gray_only=True, binary=True, check=_check_canny)
def canny(image, *, sigma, low, high, quantile):
    """Canny edge detector (`skimage.feature.canny`): a binary edge map.

    Parameters
    ----------
    image : ndarray of float32, shape (H, W)
        Intensities scaled from the file's own range (usually [0, 1]); `Step.apply` turns colour into
        luma first.
    sigma : float, default 1.0
        Standard deviation in pixels of the Gaussian smoothing before the gradient, in [0, 100].
    low, high : float or None, default None
        Hysteresis thresholds on the smoothed image's gradient magnitude (unnormalised
        `scipy.ndimage.sobel`), at least 0, `low` not above `high`. None (auto): 0.1 and 0.2 (10 % and
        20 % of the float dtype's maximum, 1), or the 10 % and 20 % quantiles with `quantile`.
    quantile : bool, default False
        Read `low` and `high` as quantiles of the gradient magnitude (then both in [0, 1];
        ``use_quantiles``).

    Returns
    -------
    ndarray of bool, shape (H, W)
        True on edges.
    """
    from skimage.feature import canny as sk_canny

    return sk_canny(image, sigma=sigma, low_threshold=low, high_threshold=high, use_quantiles=quantile)


# --- intensity ---------------------------------------------------------------------------------------

@op("equalize", "Global histogram equalisation (skimage.exposure.equalize_hist).",
    Param("bins", int, 256, "histogram bins", 2, 65536), normalises=True)
def equalize(image, *, bins):
    """Global histogram equalisation (`skimage.exposure.equalize_hist`): output values in (0, 1].

    Colour images are equalised channel by channel.

    Parameters
    ----------
    image : ndarray of float32, shape (H, W) or (H, W, 3)
        Intensities scaled from the file's own range (usually [0, 1]).
    bins : int, default 256
        Number of histogram bins (``nbins``), in [2, 65536].

    Returns
    -------
    ndarray of float32, same shape as `image`
    """
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
    """Contrast-limited adaptive histogram equalisation (`skimage.exposure.equalize_adapthist`).

    The input is clipped to [0, 1] first; the output spans [0, 1]. On colour images scikit-image
    equalises the HSV value channel and keeps hue and saturation.

    Parameters
    ----------
    image : ndarray of float32, shape (H, W) or (H, W, 3)
        Intensities scaled from the file's own range (usually [0, 1]).
    clip : float, default 0.01
        Clip limit (``clip_limit``), in (0, 1]; higher gives more contrast.
    kernel : int or None, default None
        Side in pixels of the contextual regions (``kernel_size``), at least 2. None (auto): 1/8 of the
        image's height by 1/8 of its width.
    bins : int, default 256
        Number of histogram bins (``nbins``), in [2, 65536].

    Returns
    -------
    ndarray of float32, same shape as `image`
    """
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
    """Contrast stretch (`skimage.exposure.rescale_intensity`): the low..high percentiles map to 0..1.

    Values outside the percentiles are clipped to 0 or 1. The percentiles are taken over all channels
    together; an image whose percentiles are equal (flat) becomes all zeros. Evens out exposure between
    images.

    Parameters
    ----------
    image : ndarray of float32, shape (H, W) or (H, W, 3)
        Intensities scaled from the file's own range (usually [0, 1]).
    low : float, default 1.0
        Lower percentile, in [0, 100].
    high : float, default 99.0
        Upper percentile, in [0, 100] and above `low` (PipelineError otherwise).

    Returns
    -------
    ndarray of float32, same shape as `image`
    """
    from skimage.exposure import rescale_intensity

    lo, hi = np.percentile(image, (low, high))
    if hi <= lo:  # a flat image has no contrast to stretch
        return np.zeros_like(image, dtype=np.float32)
    return rescale_intensity(image, in_range=(lo, hi), out_range=(0.0, 1.0)).astype(np.float32)


@op("gamma", "Gamma correction out = in ** gamma (skimage.exposure.adjust_gamma).",
    Param("gamma", float, 1.0, "exponent (<1 brightens)", 0, 10, low_open=True), channel_axis=True, unit_range=True)
def gamma(image, *, gamma):
    """Gamma correction, ``out = in ** gamma`` after clipping to [0, 1] (`skimage.exposure.adjust_gamma`).

    Parameters
    ----------
    image : ndarray of float32, shape (H, W) or (H, W, 3)
        Intensities scaled from the file's own range (usually [0, 1]).
    gamma : float, default 1.0
        Exponent, in (0, 10]; below 1 brightens, above 1 darkens.

    Returns
    -------
    ndarray of float32, same shape as `image`
    """
    from skimage.exposure import adjust_gamma

    return adjust_gamma(np.clip(image, 0, 1), gamma=gamma).astype(np.float32)


@op("threshold", "Global threshold to a binary mask (skimage.filters.threshold_*).",
    Param("method", str, "otsu", "how the level is chosen", choices=("otsu", "li", "yen", "triangle", "mean")),
    Param("invert", bool, False, "mark pixels below the level instead of above"),
    gray_only=True, binary=True)
def threshold(image, *, method, invert):
    """Global threshold to a binary mask, the level from ``skimage.filters.threshold_<method>``.

    Parameters
    ----------
    image : ndarray of float32, shape (H, W)
        Intensities scaled from the file's own range (usually [0, 1]); `Step.apply` turns colour into
        luma first.
    method : {'otsu', 'li', 'yen', 'triangle', 'mean'}, default 'otsu'
        How the level is chosen: `threshold_otsu`, `threshold_li`, ... computed on this image.
    invert : bool, default False
        Mark pixels at or below the level instead of those above it.

    Returns
    -------
    ndarray of bool, shape (H, W)
    """
    import skimage.filters as skf

    level = getattr(skf, f"threshold_{method}")(image)
    return image <= level if invert else image > level


@op("invert", "Invert intensities (1 - value, skimage.util.invert).", channel_axis=True, unit_range=True)
def invert(image):
    """Invert intensities, ``1 - value`` after clipping to [0, 1] (what `skimage.util.invert` does to floats).

    Parameters
    ----------
    image : ndarray of float32, shape (H, W) or (H, W, 3)
        Intensities scaled from the file's own range (usually [0, 1]).

    Returns
    -------
    ndarray of float32, same shape as `image`
    """
    return (1.0 - np.clip(image, 0, 1)).astype(np.float32)


# --- geometry ----------------------------------------------------------------------------------------

def _check_resize(v: dict) -> None:
    _require(v["width"] is not None or v["height"] is not None, "resize", "give 'width', 'height' or both")


@op("resize", "Resize to width x height; give one of them to keep the aspect ratio (skimage.transform).",
    Param("width", int, None, "output width in pixels", 1, 100000, optional=True),
    Param("height", int, None, "output height in pixels", 1, 100000, optional=True),
    Param("antialias", bool, True, "smooth before downsampling"), channel_axis=True, check=_check_resize)
def resize(image, *, width, height, antialias):
    """Resize to width x height with bilinear interpolation (`skimage.transform.resize`, ``order=1``).

    Parameters
    ----------
    image : ndarray of float32, shape (H, W) or (H, W, 3)
        Intensities scaled from the file's own range (usually [0, 1]).
    width, height : int or None, default None
        Output size in pixels, each in [1, 100000]; give at least one (PipelineError otherwise). When one
        is None it follows from the other and the aspect ratio (at least 1).
    antialias : bool, default True
        Gaussian smoothing before downsampling (``anti_aliasing``).

    Returns
    -------
    ndarray of float32, shape (height, width) or (height, width, 3)
    """
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
    """Scale both sides by a factor, bilinear (`skimage.transform.rescale`, ``order=1``).

    Parameters
    ----------
    image : ndarray of float32, shape (H, W) or (H, W, 3)
        Intensities scaled from the file's own range (usually [0, 1]).
    factor : float, default 0.5
        Scale factor for height and width, in (0, 16]; below 1 the image is smoothed first
        (``anti_aliasing``).

    Returns
    -------
    ndarray of float32, shape (round(H * factor), round(W * factor)[, 3])
    """
    from skimage.transform import rescale as sk_rescale

    return sk_rescale(image, factor, order=1, anti_aliasing=factor < 1, preserve_range=True,
                      **_channel_kw(image)).astype(np.float32)


@op("crop", "Cut pixels off the edges, e.g. crop:bottom=64 removes an SEM data bar.",
    Param("top", int, 0, "rows removed at the top", 0, None), Param("bottom", int, 0, "rows removed at the bottom", 0, None),
    Param("left", int, 0, "columns removed at the left", 0, None), Param("right", int, 0, "columns removed at the right", 0, None),
    channel_axis=True)
def crop(image, *, top, bottom, left, right):
    """Cut pixels off the edges, e.g. ``crop:bottom=64`` removes an SEM data bar (numpy slicing, no scikit-image).

    Parameters
    ----------
    image : ndarray of float32, shape (H, W) or (H, W, 3)
        Intensities scaled from the file's own range (usually [0, 1]).
    top, bottom, left, right : int, default 0
        Rows removed at the top and bottom, columns removed at the left and right; each at least 0.

    Returns
    -------
    ndarray of float32, shape (H - top - bottom, W - left - right[, 3])
        A view of `image`, not a copy.

    Raises
    ------
    OpError
        Nothing of the image would be left.
    """
    h, w = image.shape[:2]
    if top + bottom >= h or left + right >= w:
        raise OpError(f"op 'crop': removing top={top} bottom={bottom} left={left} right={right} "
                      f"leaves nothing of a {w}x{h} image")
    return image[top:h - bottom, left:w - right]

"""Class-activation maps: where in a micrograph the network found the evidence for a class.

Grad-CAM (Selvaraju et al. 2017) weights the feature maps of the last convolutional block (the
registry's `cam_layer`: layer4 of a ResNet, C3 of LeNet) by the gradient of the class score, sums them
and keeps the positive part; Grad-CAM++ (Chattopadhay et al. 2018) weights each position of a map by
its own share of the gradient, which separates several instances of a feature better. Both are computed
here with one forward hook and one `torch.autograd.grad` call per batch:

- the forward pass is `inference.model_logits`, the one `predict` runs (normalisation, memory layout,
  autocast), on arrays from `inputs.prepare_array`, so the probabilities printed on a heat map are the
  ones `predict` gives for the same file;
- the hook replaces the layer's output by a detached copy that requires a gradient, so autograd records
  only the small head after it (pooling and the classifier): explaining costs little more than
  predicting;
- fit=crop models see the image at native scale (`engines.network_views`: whole when it fits, else
  tiles); each view's map is placed on its view and the views are averaged per pixel (weighted towards
  each view's middle) into one map of the whole image, for the class that the averaged softmax (the
  image's prediction) chose.

The library never prints: `explain_stream` yields one `Explanation` per input, errors included, and
`render_explanation` returns the picture as an array.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .errors import UsageError
from .engines import CPU_MICRO_BATCH, Predictor, average_views, network_views
from .inference import model_logits
from .inputs import prepare_or_error, range_warning
from .models import get_model_info
from .parallel import bounded_map

METHODS = ("gradcam", "gradcam++")


@dataclass
class Explanation:
    """The heat map of one image and the prediction it explains.

    Attributes
    ----------
    path : str
        The input as given.
    array : ndarray of float32, shape (C, H, W), or None
        What the network saw: the prepared array (`inputs.prepare_array`), not normalised.
    probs : ndarray of float32, shape (K,), or None
        Softmax, equal to `predict`'s for the same file (averaged over its views for fit=crop models).
    target : int
        The class whose evidence `cam` shows (the predicted one unless another was asked for).
    cam : ndarray of float32, shape (H, W), or None
        The map at the array's resolution, scaled to a maximum of 1 (all zeros: no positive evidence).
    peak : float
        The map's maximum before scaling (0 when the class found no positive evidence anywhere).
    error : str or None
        Why the file could not be explained; the other fields are then None.
    warning : str or None
        Values far outside the training range, as `predict` warns (`inputs.range_warning`), with the path.
    """

    path: str
    array: np.ndarray | None = None
    probs: np.ndarray | None = None
    target: int = -1
    cam: np.ndarray | None = None
    peak: float = 0.0
    error: str | None = None
    warning: str | None = None


def class_index(classes: Sequence[str], name: str | None) -> int | None:
    """The index of class `name` (None for None), or a UsageError that lists the classes."""
    if name is None:
        return None
    if name not in classes:
        raise UsageError(f"--class {name}: not a class of this model (its classes: {', '.join(classes)})")
    return list(classes).index(name)


def check_method(method: str) -> str:
    if method not in METHODS:
        raise UsageError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    return method


def _cam_weights(acts: torch.Tensor, grads: torch.Tensor, method: str) -> torch.Tensor:
    """Per-channel (Grad-CAM) or per-position (Grad-CAM++) weights, shape like `acts` or (N, C, 1, 1)."""
    if method == "gradcam":
        return grads.mean((2, 3), keepdim=True)
    # Grad-CAM++ with the exponential score (the paper's closed form, as in its reference code):
    # alpha = g^2 / (2 g^2 + sum(A) g^3), weights = sum over positions of alpha * relu(g).
    g2, g3 = grads.pow(2), grads.pow(3)
    denom = 2 * g2 + acts.sum((2, 3), keepdim=True) * g3
    alpha = torch.where(grads != 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)), 0)
    return (alpha * F.relu(grads)).sum((2, 3), keepdim=True)


class CamExplainer:
    """Class-activation maps with a loaded `Predictor`'s network, exactly as it predicts.

    Parameters
    ----------
    predictor : Predictor
        Its network, device, precision and input spec are used (TTA is not: a map is of one view).
    method : str, default 'gradcam'
        'gradcam' or 'gradcam++'.

    Raises
    ------
    UsageError
        An unknown method.
    """

    def __init__(self, predictor: Predictor, *, method: str = "gradcam"):
        self.predictor = predictor
        self.method = check_method(method)
        self.engine = predictor.engine  # heat maps need gradients: the eager PyTorch network of a bundle
        if self.engine.name != "torch" or getattr(self.engine, "exported", False):
            raise UsageError("explain needs a model bundle run by PyTorch (not an exported file or another engine)")
        info = get_model_info(predictor.bundle.arch)
        self.layer = self.engine.model.get_submodule(info.cam_layer)
        self.geometry = {"stride": info.cam_stride, "offset": info.cam_offset}
        for p in self.engine.model.parameters():  # gradients flow only from the hooked layer on
            p.requires_grad_(False)

    @property
    def classes(self) -> list[str]:
        return self.predictor.classes

    def _forward(self, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """fp32 logits (V, K) of network inputs, and the hooked layer's output as a leaf that requires a
        gradient: autograd records only the head after the layer, the layers before it run as in predict."""
        p = self.engine
        captured: list[torch.Tensor] = []

        def hook(_module, _inputs, output):
            leaf = output.detach().requires_grad_(True)
            captured.append(leaf)
            return leaf

        handle = self.layer.register_forward_hook(hook)
        try:
            with torch.enable_grad():
                logits = model_logits(p.model, views, p.spec, p.device, p.dtype, p.channels_last)
        finally:
            handle.remove()
        return logits, captured[0]

    def _cam(self, logits: torch.Tensor, acts: torch.Tensor, target: np.ndarray) -> np.ndarray:
        """Maps (V, h, w) at the layer's resolution for each view's `target` class."""
        t = torch.as_tensor(target, device=logits.device, dtype=torch.long)
        with torch.enable_grad():
            (grads,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), acts)
        acts, grads = acts.detach().float(), grads.float()
        return F.relu((_cam_weights(acts, grads, self.method) * acts).sum(1)).cpu().numpy()

    def _views_cam(self, views: torch.Tensor, pick: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Softmax (V, K) and maps (V, h, w) of network inputs; `pick(probs)` gives each view's target."""
        logits, acts = self._forward(views)
        probs = F.softmax(logits.detach(), 1).cpu().numpy()
        return probs, self._cam(logits, acts, pick(probs))

    def explain_arrays(self, arrays: Sequence[np.ndarray], *, target: int | None = None,
                       batch_size: int = 64) -> list[tuple[np.ndarray, int, np.ndarray, float]]:
        """(probs, target, cam, peak) per prepared array; `cam` at the array's resolution, max 1.

        Parameters
        ----------
        arrays : sequence of ndarray, shape (C, H, W)
            From `inputs.prepare_array` with this model's spec.
        target : int or None
            The class to explain; None: each image's predicted class (of its views' mean softmax for
            fit=crop models, as predict gives it).
        batch_size : int, default 64
            Network inputs at a time (16 on a CPU, where that is faster, as in `Predictor`).
        """
        if not len(arrays):
            return []
        step = min(batch_size, CPU_MICRO_BATCH) if self.engine.on_cpu else batch_size
        views = network_views(arrays, self.predictor.spec)
        batches = list(views.batches(step))
        # One forward pass per view; the backward passes wait until every view of an image has voted, as
        # the image's class is that of its views' mean softmax. Only the small heads are kept meanwhile.
        passes = [self._forward(torch.from_numpy(x)) for x, _, _ in batches]
        probs = average_views(np.concatenate([F.softmax(lg.detach(), 1).cpu().numpy() for lg, _ in passes]),
                              views.owner, len(arrays))
        targets = probs.argmax(1) if target is None else np.full(len(arrays), target)
        cams: list[list] = [[] for _ in arrays]  # per image: (box, map) of each of its views
        for (lg, acts), (_, o, boxes) in zip(passes, batches):
            for n, box, cam in zip(o, boxes, self._cam(lg, acts, targets[o])):
                cams[n].append((box, cam))
        return [(probs[n], int(targets[n]), *_finish(_combine_views(a.shape[-2:], cams[n], self.geometry)))
                for n, a in enumerate(arrays)]


def _upsample(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a (h, w) map to `size` (display only: the map is already in input pixels)."""
    t = torch.from_numpy(np.ascontiguousarray(cam, dtype=np.float32))[None, None]
    return F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False)[0, 0].numpy()


def place_map(cam: np.ndarray, size: tuple[int, int], *, stride: float, offset: float) -> np.ndarray:
    """A layer's (h, w) map on the input's `size` pixels: cell i is centred on pixel ``offset + stride * i``
    (the registry's `cam_stride` / `cam_offset`); bilinear between cell centres, the edge cells' values
    beyond them.

    Stretching the map over the image instead (what most Grad-CAM code does) would shift LeNet's maps, whose
    unpadded convolutions leave a border, by up to 6 px of 48.
    """
    out = []
    for n, (m, length) in enumerate(zip(cam.shape, size)):
        u = np.clip((np.arange(length) - offset) / stride, 0, m - 1)
        lo = np.floor(u).astype(int)
        hi = np.minimum(lo + 1, m - 1)
        out.append((lo, hi, (u - lo).astype(np.float32)))
    (r0, r1, fy), (c0, c1, fx) = out
    top = cam[r0][:, c0] * (1 - fx) + cam[r0][:, c1] * fx
    bottom = cam[r1][:, c0] * (1 - fx) + cam[r1][:, c1] * fx
    return (top * (1 - fy[:, None]) + bottom * fy[:, None]).astype(np.float32)


def _combine_views(shape: tuple[int, int], cams: list, geometry: dict) -> np.ndarray:
    """Views' maps ((y, x, height, width) box and map, `engines.view_boxes`) combined per pixel into one
    map of the whole (h, w) array: a mean weighted by a window that fades towards each view's edges
    (overlap-add), so that where views overlap the one that sees a pixel in its middle counts most, and
    no seam shows along their borders. A single view covering the array gives its own map."""
    h, w = shape
    total = np.zeros((h, w), np.float32)
    weight = np.zeros((h, w), np.float32)
    for (y, x, vh, vw), cam in cams:
        window = _window(vh, vw)
        total[y:y + vh, x:x + vw] += window * place_map(cam, (vh, vw), **geometry)
        weight[y:y + vh, x:x + vw] += window
    return total / weight


@functools.lru_cache(maxsize=8)
def _window(h: int, w: int) -> np.ndarray:
    """The overlap-add weight of an h x w view: a sine ramp across each axis, > 0 everywhere (read only:
    shared by every view of that shape)."""
    ramps = [np.sin(np.pi * (np.arange(n) + 0.5) / n).astype(np.float32) for n in (h, w)]
    return np.outer(*ramps)


def _finish(cam: np.ndarray) -> tuple[np.ndarray, float]:
    """Scale a map to a maximum of 1; returns it and its maximum before (0: no positive evidence)."""
    cam = np.maximum(cam, 0)
    peak = float(cam.max()) if cam.size else 0.0
    return (cam / peak if peak > 0 else np.zeros_like(cam)).astype(np.float32), peak


def explain_stream(explainer: CamExplainer, paths: Iterable[str], *, target: int | None = None,
                   batch_size: int = 64, workers: int = 0, max_pixels: int | None = None,
                   on_path: Callable[[str], None] | None = None) -> Iterator[Explanation]:
    """One `Explanation` per path, in order, decoded by `workers` threads while the network runs.

    Parameters
    ----------
    explainer : CamExplainer
    paths : iterable of str
        Consumed lazily, as in `predict.predict_stream`.
    target : int or None
        The class to explain; None: each image's predicted class.
    batch_size : int, default 64
        Images per batch.
    workers : int, default 0
        Decoding threads (0: in this process).
    max_pixels : int or None
        Decompression-bomb guard (None: the default limit; 0: none).
    on_path : callable or None
        Sees each path before it is read.

    Yields
    ------
    Explanation
        With `error` set for a file that could not be read; the others go on.
    """
    spec = explainer.predictor.spec

    def tap(ps):
        for p in ps:
            if on_path is not None:
                on_path(p)
            yield p

    results = bounded_map(_prepare_with_path, ((p, spec, max_pixels) for p in tap(paths)), workers=workers,
                          chunk=8, threads=True)
    pending: list[tuple[str, object]] = []
    for item in results:
        pending.append(item)
        if sum(not isinstance(g, str) for _, g in pending) >= batch_size:
            yield from _flush(explainer, pending, target, batch_size)
            pending = []
    yield from _flush(explainer, pending, target, batch_size)


def _prepare_with_path(args):
    return args[0], prepare_or_error(args)


def _flush(explainer: CamExplainer, pending, target: int | None, batch_size: int) -> Iterator[Explanation]:
    arrays = [g for _, g in pending if not isinstance(g, str)]
    done = iter(explainer.explain_arrays(arrays, target=target, batch_size=batch_size))
    for path, got in pending:
        if isinstance(got, str):
            yield Explanation(path, error=got)
        else:
            probs, t, cam, peak = next(done)
            warning = range_warning([got], explainer.predictor.spec)
            yield Explanation(path, got, probs, t, cam, peak, warning=f"{path}: {warning}" if warning else None)


# --- the picture ---------------------------------------------------------------------------------------

def render_explanation(expl: Explanation, classes: Sequence[str], *, title: str | None = None,
                       chosen: bool = False, top: int = 3, longest: int = 512) -> np.ndarray:
    """The picture of one explanation: the micrograph as the network saw it, the same with the heat map
    over it, a colour bar, and the top classes with their probabilities as bars.

    Parameters
    ----------
    expl : Explanation
        Without an error.
    classes : sequence of str
    title : str or None
        The first line (default: the path).
    chosen : bool, default False
        The class was chosen by the user (--class), not predicted: said in the picture.
    top : int, default 3
        How many classes to list.
    longest : int, default 512
        The longest side of each of the two panels, in pixels.

    Returns
    -------
    ndarray of uint8, shape (H, W, 3)
    """
    from PIL import Image, ImageDraw

    from .figures import class_colors, class_label, display_gray, fit_display, font, heat_lut, heat_overlay, resize_rgb

    h, w = expl.array.shape[-2:]
    dh, dw = fit_display(h, w, longest=longest)
    gray = resize_rgb(display_gray(expl.array), dh, dw)
    heat = _upsample(expl.cam, (dh, dw)) if (dh, dw) != (h, w) else expl.cam
    over = heat_overlay(gray, heat)
    pad, gap, bar_w = 12, 10, 14
    f_title, f_text, f_small = font(15, True), font(14), font(12)
    order = np.argsort(-expl.probs, kind="stable")[:top]
    line = 22
    head = pad + 2 * line
    foot = pad + len(order) * line + pad
    width = pad + dw + gap + dw + gap + bar_w + 46
    width = max(width, 420)
    height = head + dh + foot
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    target = class_label(classes[expl.target], 60).replace("\n", " ")
    draw.text((pad, pad), _ellipsize(title or expl.path, f_title, width - 2 * pad), font=f_title, fill="black")
    how = "chosen with --class" if chosen else "predicted"
    sub = f"evidence for: {target} ({how}, p = {expl.probs[expl.target]:.3f})"
    if expl.peak <= 0:
        sub += "  - no positive evidence anywhere"
    draw.text((pad, pad + line), _ellipsize(sub, f_text, width - 2 * pad), font=f_text, fill="#333333")
    canvas.paste(Image.fromarray(gray), (pad, head))
    canvas.paste(Image.fromarray(over), (pad + dw + gap, head))
    # colour bar: high at the top
    x0 = pad + 2 * dw + 2 * gap
    lut = heat_lut()
    ramp = np.repeat(lut[np.linspace(255, 0, dh).round().astype(int)][:, None], bar_w, 1)
    canvas.paste(Image.fromarray(ramp), (x0, head))
    draw.text((x0 + bar_w + 4, head), "high", font=f_small, fill="#333333")
    draw.text((x0 + bar_w + 4, head + dh - 14), "low", font=f_small, fill="#333333")
    # top classes with bars in the class colours
    colours = class_colors(len(classes))
    y = head + dh + pad
    bar_x, bar_len = pad + 260, max(80, width - pad - 260 - 60)
    for r, k in enumerate(order):
        name = class_label(classes[k], 60).replace("\n", " ")
        text = _ellipsize(f"{r + 1}. {name}", f_text, 250)
        draw.text((pad, y), text, font=f_title if k == expl.target else f_text, fill="black")
        draw.rectangle((bar_x, y + 3, bar_x + bar_len, y + 15), outline="#bbbbbb")
        draw.rectangle((bar_x, y + 3, bar_x + round(bar_len * float(expl.probs[k])), y + 15), fill=colours[k])
        draw.text((bar_x + bar_len + 6, y), f"{expl.probs[k]:.3f}", font=f_text, fill="black")
        y += line
    return np.asarray(canvas)


def _ellipsize(text: str, fnt, width: int) -> str:
    """`text`, cut in the middle with '...' so it fits `width` pixels (paths keep their file name)."""
    if fnt.getlength(text) <= width:
        return text
    lo, hi = 0, len(text)
    while lo < hi:  # the longest cut that fits
        mid = (lo + hi + 1) // 2
        keep = text[:mid // 3] + "..." + text[len(text) - (mid - mid // 3):]
        if fnt.getlength(keep) <= width:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo // 3] + "..." + text[len(text) - (lo - lo // 3):]


def thumbnail(expl: Explanation, *, side: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """Two small uint8 (H, W, 3) pictures of an explanation: the micrograph and the heat map over it."""
    from .figures import display_gray, fit_display, heat_overlay, resize_rgb

    h, w = expl.array.shape[-2:]
    dh, dw = fit_display(h, w, longest=side, shortest=min(side, 96))
    gray = resize_rgb(display_gray(expl.array), dh, dw)
    return gray, heat_overlay(gray, _upsample(expl.cam, (dh, dw)))

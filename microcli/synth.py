"""Procedural synthetic micrographs of six microstructures a metallographer would recognise.

Each image draws its own orientation, feature scale, contrast, noise, blur and illumination gradient,
so that telling the classes apart takes texture, not a mean grey level. Image `i` of class `c` depends
only on (seed, c, i): asking for more images per class leaves the first ones unchanged.

With specimens (`SynthSpec.specimens`), images come the way a lab makes them: each specimen of a class
is one piece of material, with its own microstructure (a field twice the image side), magnification,
orientation, exposure, contrast, illumination, blur and noise level drawn once, and each image is a
field of view of it with a little acquisition jitter. Images of a specimen look alike, which is what
makes a random split of such data overstate accuracy. `SynthSpec.imbalance` makes class sizes uneven.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import OutputExistsError, UsageError
from .io import write_image

Generator = Callable[[np.random.Generator, int], np.ndarray]


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    return np.mgrid[0:size, 0:size].astype(np.float32)


def _voronoi(rng: np.random.Generator, size: int, n: int) -> np.ndarray:
    from scipy.spatial import cKDTree

    seeds = rng.uniform(0, size, (max(n, 2), 2))
    yy, xx = _grid(size)
    _, labels = cKDTree(seeds).query(np.stack([yy.ravel(), xx.ravel()], 1))
    return labels.reshape(size, size)


def _area_scale(size: int) -> float:
    return (size / 128.0) ** 2


def equiaxed(rng: np.random.Generator, size: int) -> np.ndarray:
    """Equiaxed grains: polygonal grains of varied etch contrast separated by dark boundaries."""
    from skimage.segmentation import find_boundaries

    labels = _voronoi(rng, size, int(rng.uniform(12, 60) * _area_scale(size)))
    shades = rng.uniform(0.45, 0.85, labels.max() + 1)
    img = shades[labels]
    img[find_boundaries(labels, mode="thick" if rng.random() < 0.5 else "inner")] = rng.uniform(0.1, 0.25)
    return img


def lamellar(rng: np.random.Generator, size: int) -> np.ndarray:
    """Pearlite-like colonies: each colony a stack of parallel lamellae at its own angle."""
    labels = _voronoi(rng, size, int(rng.uniform(3, 12) * _area_scale(size)))
    yy, xx = _grid(size)
    spacing = rng.uniform(3.0, 7.0)
    img = np.empty((size, size), np.float32)
    for lab in range(labels.max() + 1):
        m = labels == lab
        theta = rng.uniform(0, np.pi)
        lam = spacing * rng.uniform(0.8, 1.25)
        phase = np.cos(theta) * xx[m] + np.sin(theta) * yy[m]
        img[m] = 0.55 + 0.3 * np.tanh(2.5 * np.sin(2 * np.pi * phase / lam + rng.uniform(0, 6.3)))
    return img


def spheroidite(rng: np.random.Generator, size: int) -> np.ndarray:
    """Spheroidised carbides: many small round particles scattered in a bright ferrite matrix."""
    from skimage.draw import disk

    img = np.full((size, size), rng.uniform(0.7, 0.85), np.float32)
    rmean = rng.uniform(1.5, 3.5) * size / 128
    n = int(rng.uniform(0.004, 0.012) * size * size / (rmean**2 * np.pi) * np.pi * 4)
    for _ in range(n):
        r = max(1.0, rng.normal(rmean, rmean * 0.25))
        rr, cc = disk((rng.uniform(0, size), rng.uniform(0, size)), r, shape=img.shape)
        img[rr, cc] = rng.uniform(0.15, 0.3)
    return img


def dendritic(rng: np.random.Generator, size: int) -> np.ndarray:
    """Dendrites: trunks with regularly spaced secondary arms, dark against the interdendritic matrix."""
    from skimage.draw import line
    from skimage.morphology import dilation, disk

    mask = np.zeros((size, size), bool)

    def draw(y, x, angle, length):
        y1, x1 = y + length * np.sin(angle), x + length * np.cos(angle)
        rr, cc = line(int(y), int(x), int(y1), int(x1))
        ok = (rr >= 0) & (rr < size) & (cc >= 0) & (cc < size)
        mask[rr[ok], cc[ok]] = True

    arm_spacing = rng.uniform(4, 8) * size / 128
    for _ in range(rng.integers(2, 6)):
        y, x = rng.uniform(0, size, 2)
        angle = rng.uniform(0, 2 * np.pi)
        trunk = rng.uniform(0.5, 1.0) * size
        draw(y, x, angle, trunk)
        arm_len = rng.uniform(0.08, 0.2) * size
        for t in np.arange(arm_spacing, trunk, arm_spacing):
            py, px = y + t * np.sin(angle), x + t * np.cos(angle)
            fade = 1 - 0.6 * t / trunk
            for side in (1, -1):
                draw(py, px, angle + side * np.pi / 2 * rng.uniform(0.85, 1.15), arm_len * fade * rng.uniform(0.6, 1))
    mask = dilation(mask, disk(max(1, round(size / 128))))
    img = np.full((size, size), rng.uniform(0.6, 0.8), np.float32)
    img[mask] = rng.uniform(0.2, 0.35)
    return img


def porosity(rng: np.random.Generator, size: int) -> np.ndarray:
    """Porosity: a few large, irregular, black voids plus small round gas pores in a lightly etched matrix."""
    from skimage.draw import disk, polygon

    img = np.full((size, size), rng.uniform(0.6, 0.75), np.float32)
    img += _smooth_noise(rng, size, size / 16) * 0.06
    for _ in range(rng.integers(2, 8)):
        r0 = rng.uniform(0.04, 0.12) * size
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        r = r0 * (1 + sum(rng.uniform(0, 0.25) * np.cos(k * t + rng.uniform(0, 6.3)) for k in range(2, 6)))
        cy, cx = rng.uniform(0, size, 2)
        rr, cc = polygon(cy + r * np.sin(t), cx + r * np.cos(t), shape=img.shape)
        img[rr, cc] = rng.uniform(0.02, 0.1)
    for _ in range(rng.integers(0, 10)):
        rr, cc = disk(tuple(rng.uniform(0, size, 2)), rng.uniform(1, 3) * size / 128, shape=img.shape)
        img[rr, cc] = 0.05
    return img


def martensite(rng: np.random.Generator, size: int) -> np.ndarray:
    """Acicular martensite: packets of thin needles at a few preferred angles inside prior grains."""
    from skimage.draw import ellipse

    labels = _voronoi(rng, size, int(rng.uniform(2, 6) * _area_scale(size)))
    angles = {lab: rng.uniform(0, np.pi, 3) for lab in range(labels.max() + 1)}
    img = np.full((size, size), rng.uniform(0.45, 0.6), np.float32)
    n = int(rng.uniform(80, 160) * _area_scale(size))
    for _ in range(n):
        cy, cx = rng.uniform(0, size, 2)
        lab = labels[min(int(cy), size - 1), min(int(cx), size - 1)]
        rot = rng.choice(angles[lab]) + rng.normal(0, 0.05)
        length = rng.uniform(0.05, 0.2) * size
        rr, cc = ellipse(cy, cx, max(0.8, rng.uniform(0.6, 1.6) * size / 128), length, shape=img.shape, rotation=rot)
        img[rr, cc] = rng.uniform(0.15, 0.9)
    return img


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    n = gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), sigma)
    return n / (np.abs(n).max() + 1e-6)


CLASSES: dict[str, Generator] = {
    "equiaxed": equiaxed,
    "lamellar": lamellar,
    "spheroidite": spheroidite,
    "dendritic": dendritic,
    "porosity": porosity,
    "martensite": martensite,
}


def _acquisition(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """What a microscope adds: orientation, blur, uneven illumination, contrast, noise."""
    from scipy.ndimage import gaussian_filter

    size = img.shape[0]
    img = np.rot90(img, rng.integers(0, 4))
    if rng.random() < 0.5:
        img = img[:, ::-1]
    img = gaussian_filter(img, rng.uniform(0.3, 1.2))
    yy, xx = _grid(size) / size - 0.5
    a = rng.uniform(0, 2 * np.pi)
    light = 1 + rng.uniform(0, 0.35) * (np.cos(a) * xx + np.sin(a) * yy) - rng.uniform(0, 0.3) * (xx**2 + yy**2)
    img = img * light * rng.uniform(0.8, 1.15) + rng.uniform(-0.08, 0.08)
    img = img + rng.normal(0, rng.uniform(0.01, 0.05), img.shape)
    return np.clip(img, 0, 1).astype(np.float32)


def generate(class_name: str, *, seed: int, index: int, size: int = 128) -> np.ndarray:
    """One float32 (size, size) micrograph of `class_name`, fully determined by (seed, class, index)."""
    cls_idx = list(CLASSES).index(class_name)
    rng = np.random.default_rng(np.random.SeedSequence([seed, cls_idx, index]))
    return _acquisition(rng, CLASSES[class_name](rng, size))


# --- specimens: several images of one piece of material ---------------------------------------------------

_SPECIMEN_STREAM = 1  # third SeedSequence word: keeps specimen draws apart from the plain generate() stream


@dataclass(frozen=True)
class Specimen:
    """One piece of material and how it was imaged; every image of it shares all of this."""

    field: np.ndarray  # float32 (2 * size, 2 * size): the microstructure, larger than one field of view
    zoom: float  # field-of-view side / image side (magnification)
    rot90: int
    flip: bool
    blur: float
    light_angle: float
    light_tilt: float
    vignette: float
    gain: float
    offset: float
    noise: float


def make_specimen(class_name: str, *, seed: int, specimen: int, size: int = 128) -> Specimen:
    """Specimen number `specimen` of `class_name`, fully determined by (seed, class, specimen, size)."""
    cls_idx = list(CLASSES).index(class_name)
    rng = np.random.default_rng(np.random.SeedSequence([seed, cls_idx, _SPECIMEN_STREAM, specimen]))
    field = CLASSES[class_name](rng, 2 * size).astype(np.float32)
    return Specimen(field, zoom=float(rng.uniform(0.7, 1.3)), rot90=int(rng.integers(0, 4)),
                    flip=bool(rng.random() < 0.5),
                    blur=float(rng.uniform(0.3, 1.2)), light_angle=float(rng.uniform(0, 2 * np.pi)),
                    light_tilt=float(rng.uniform(0, 0.35)), vignette=float(rng.uniform(0, 0.3)),
                    gain=float(rng.uniform(0.75, 1.2)), offset=float(rng.uniform(-0.1, 0.1)),
                    noise=float(rng.uniform(0.01, 0.06)))


def specimen_image(sp: Specimen, class_name: str, *, seed: int, specimen: int, index: int,
                   size: int = 128) -> np.ndarray:
    """Image `index` of a specimen: a field of view of it, imaged with the specimen's settings and a
    little jitter (exposure +-3 %, offset +-0.015, blur and light +-10 %, fresh noise)."""
    from scipy.ndimage import gaussian_filter
    from skimage.transform import resize

    cls_idx = list(CLASSES).index(class_name)
    rng = np.random.default_rng(np.random.SeedSequence([seed, cls_idx, _SPECIMEN_STREAM, specimen, index]))
    big = sp.field.shape[0]
    w = min(big, round(size * sp.zoom))
    # Of three random places, the one with the most contrast: an operator picks a field that shows the
    # structure (sparse classes, porosity and dendrites, would otherwise give empty, unlabellable fields).
    corners = rng.integers(0, big - w + 1, (3, 2))
    y0, x0 = max(corners, key=lambda c: float(sp.field[c[0]:c[0] + w, c[1]:c[1] + w].std()))
    img = sp.field[y0:y0 + w, x0:x0 + w]
    if w != size:
        img = resize(img, (size, size), order=1, anti_aliasing=w > size, preserve_range=True)
    img = np.rot90(img, sp.rot90)
    if sp.flip:
        img = img[:, ::-1]
    img = gaussian_filter(img.astype(np.float32), sp.blur * rng.uniform(0.9, 1.1))
    yy, xx = _grid(size) / size - 0.5
    a = sp.light_angle + rng.normal(0, 0.1)
    light = (1 + sp.light_tilt * rng.uniform(0.9, 1.1) * (np.cos(a) * xx + np.sin(a) * yy)
             - sp.vignette * (xx**2 + yy**2))
    img = img * light * sp.gain * rng.uniform(0.97, 1.03) + sp.offset + rng.uniform(-0.015, 0.015)
    img = img + rng.normal(0, sp.noise, img.shape)
    return np.clip(img, 0, 1).astype(np.float32)


@dataclass(frozen=True)
class SynthSpec:
    """What `write_dataset` writes.

    per_class : images of the largest (first) class.
    specimens : 0 (default): every image independent, OUT/<class>/<class>_NNNN.png. N > 0: the images of
        each class come from N specimens, image i from specimen i mod N, written as
        OUT/<class>/<class>_sSS_NNNN.png, with OUT/manifest.csv (path,label,group) naming the specimen.
    imbalance : ratio of the largest to the smallest class; sizes fall geometrically from `per_class`
        (first class) to `per_class / imbalance` (last), each at least 2. 1 (default): all equal.
    """

    per_class: int = 16
    size: int = 128
    seed: int = 0
    bit_depth: int = 8
    classes: tuple[str, ...] = tuple(CLASSES)
    specimens: int = 0
    imbalance: float = 1.0


def class_sizes(spec: SynthSpec) -> dict[str, int]:
    """Images per class: geometric from `per_class` down to `per_class / imbalance`, at least 2 each."""
    c = len(spec.classes)
    if spec.imbalance == 1 or c == 1:
        return {name: spec.per_class for name in spec.classes}
    return {name: max(min(2, spec.per_class), round(spec.per_class * spec.imbalance ** (-j / (c - 1))))
            for j, name in enumerate(spec.classes)}


def _check_spec(spec: SynthSpec) -> None:
    if spec.specimens < 0:
        raise UsageError(f"--specimens must be 0 (off) or more, got {spec.specimens}")
    if not spec.imbalance >= 1:
        raise UsageError(f"--imbalance is the largest over the smallest class size, at least 1, got {spec.imbalance}")
    unknown = [c for c in spec.classes if c not in CLASSES]
    if unknown:
        raise UsageError(f"unknown synthetic class(es) {', '.join(map(repr, unknown))}; known: {', '.join(CLASSES)}")


def write_dataset(out_dir: str | Path, spec: SynthSpec, *, overwrite: bool = False) -> Iterator[Path]:
    """Write the images of every class under OUT/<class>/; yields each path as it is written.

    With ``spec.specimens`` the last file written is OUT/manifest.csv (``path,label,group``, paths
    relative to OUT, rows in class and file order), which `microcli.data.discover` reads with its groups.
    """
    out_dir = Path(out_dir)
    _check_spec(spec)
    sizes = class_sizes(spec)
    if not spec.specimens:
        for name in spec.classes:
            for i in range(sizes[name]):
                img = generate(name, seed=spec.seed, index=i, size=spec.size)
                yield write_image(out_dir / name / f"{name}_{i:04d}.png", img, bit_depth=spec.bit_depth,
                                  overwrite=overwrite)
        return
    manifest = out_dir / "manifest.csv"
    if manifest.exists() and not overwrite:
        raise OutputExistsError(f"{manifest}: exists (use --force to overwrite)")
    rows = []
    for name in spec.classes:
        n = sizes[name]
        files = {}
        for s in range(min(spec.specimens, n)):
            sp = make_specimen(name, seed=spec.seed, specimen=s, size=spec.size)
            for i in range(s, n, spec.specimens):
                img = specimen_image(sp, name, seed=spec.seed, specimen=s, index=i, size=spec.size)
                rel = f"{name}/{name}_s{s:02d}_{i:04d}.png"
                yield write_image(out_dir / rel, img, bit_depth=spec.bit_depth, overwrite=overwrite)
                files[i] = (rel, name, f"{name}_s{s:02d}")
        rows += [files[i] for i in sorted(files)]
    tmp = manifest.with_name(f".{manifest.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["path", "label", "group"])
            w.writerows(rows)
        os.replace(tmp, manifest)
    finally:
        tmp.unlink(missing_ok=True)
    yield manifest

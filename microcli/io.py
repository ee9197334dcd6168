"""Reading, writing and finding micrographs, respecting how they are stored.

Every image comes back as float32 scaled from its file's own dtype range (uint8 / 255, uint16 / 65535),
so 16-bit data is never squeezed into 8 bits. Float images (32-bit TIFF) are kept as they are.
Grayscale is the default for micrographs: ``mode="auto"`` returns (H, W) unless the image really has
colour, then (H, W, 3).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import numpy as np
from PIL import Image, ImageFile

from .errors import (
    EmptyFileError,
    ImageTooLargeError,
    NotAnImageError,
    OutputExistsError,
    TruncatedImageError,
    UnsupportedImageError,
    UsageError,
)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
TIFF_EXTENSIONS = (".tif", ".tiff")
TMP_MARK = ".tmp"  # atomic_path's temporary files: .<name>.tmp<pid>
DEFAULT_MAX_PIXELS = 200_000_000  # ~14k x 14k: large SEM montages pass, bombs do not
ColorMode = Literal["auto", "gray", "rgb"]

# Our own pixel guard (check_pixels) replaces Pillow's global one, so that the limit is one setting.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False

_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "png",
    b"\xff\xd8\xff": "jpeg",
    b"BM": "bmp",
    b"II*\x00": "tiff",
    b"MM\x00*": "tiff",
    b"II+\x00": "tiff",  # BigTIFF
    b"MM\x00+": "tiff",
}


class MicrocliWarning(UserWarning):
    """Something the user should hear about that did not stop the work (multi-page TIFF...)."""


@dataclass(frozen=True)
class Micrograph:
    """A decoded image: `data` is float32, (H, W) or (H, W, 3); `bit_depth` is the file's (8, 16, 32)."""

    data: np.ndarray
    bit_depth: int
    path: str


def max_pixels_default() -> int:
    """The pixel limit from ``MICROCLI_MAX_PIXELS`` (default 200 Mpx; 0: no limit).

    Raises
    ------
    UsageError : the variable is not a whole number >= 0. Commands call this once before any file is
        read, so a bad value is one message, not one failure per file.
    """
    raw = os.environ.get("MICROCLI_MAX_PIXELS")
    if raw is None or not raw.strip():
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw.strip().replace("_", ""))
    except ValueError:
        value = -1
    if value < 0:
        raise UsageError(f"MICROCLI_MAX_PIXELS must be a whole number >= 0 (0: no limit), got {raw!r}")
    return value


def resolve_max_pixels(max_pixels: int | None) -> int:
    """`max_pixels`, or the default when None; UsageError for a negative value or a bad environment variable."""
    if max_pixels is None:
        return max_pixels_default()
    if max_pixels < 0:
        raise UsageError(f"--max-pixels must be at least 0 (0: no limit), got {max_pixels}")
    return max_pixels


_FILE_KINDS = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def check_regular_file(path: str | Path) -> None:
    """Raise NotAnImageError unless `path` is a regular file (after symlinks), without opening it.

    Opening a FIFO would wait for a writer forever, and a symlink loop fails with ELOOP: both are named
    here so that a folder holding one is still processed.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise NotAnImageError(path, "broken symlink") from None
        raise NotAnImageError(path, "no such file") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotAnImageError(path, "symlink loop") from None
        raise NotAnImageError(path, f"cannot be opened: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise NotAnImageError(path, "is a directory")
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _FILE_KINDS if test(st.st_mode)), "not a regular file")
        raise NotAnImageError(path, f"{kind}; only regular files are read")


def sniff_format(path: str | Path) -> str:
    """Return 'png', 'jpeg', 'bmp' or 'tiff' from the file's magic bytes, or raise a typed error.
    Only regular files are opened (`check_regular_file`)."""
    check_regular_file(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise NotAnImageError(path, f"cannot be opened: {exc.strerror or exc}") from None
    if not head:
        raise EmptyFileError(path)
    for magic, fmt in _MAGIC.items():
        if head.startswith(magic):
            return fmt
    if head[:4] in (b"GIF8", b"RIFF") or head[4:8] == b"ftyp":
        raise UnsupportedImageError(path, "readable formats: PNG, JPEG, BMP, TIFF")
    raise NotAnImageError(path, "content is not PNG, JPEG, BMP or TIFF")


def check_pixels(path: str | Path, height: int, width: int, max_pixels: int | None) -> None:
    """Raise ImageTooLargeError when height x width exceeds the limit (None: the default; 0: none)."""
    limit = resolve_max_pixels(max_pixels)
    if limit and height * width > limit:
        raise ImageTooLargeError(path, f"{width}x{height} = {width * height:,} pixels > limit {limit:,}")


def read_image(
    path: str | Path, *, mode: ColorMode = "auto", max_pixels: int | None = None, size_hint: int | None = None
) -> Micrograph:
    """Read one micrograph.

    Parameters
    ----------
    path : path of a PNG, JPEG, BMP or TIFF file.
    mode : 'auto' (grayscale unless the image really has colour), 'gray' or 'rgb'.
    max_pixels : decompression-bomb guard; default ``MICROCLI_MAX_PIXELS`` or 200 Mpx.
    size_hint : a JPEG may be decoded at a reduced scale no smaller than this many pixels on each
        side (Pillow's draft mode); callers that resize anyway save most of the decoding time.

    Raises
    ------
    EmptyFileError, NotAnImageError, UnsupportedImageError, TruncatedImageError, ImageTooLargeError
    """
    fmt = sniff_format(path)
    if fmt == "tiff":
        data, depth = _read_tiff(path, max_pixels)
    else:
        data, depth = _read_pillow(path, fmt, mode, max_pixels, size_hint)
    return Micrograph(_to_mode(data, mode, path), depth, str(path))


def _read_pillow(path, fmt, mode, max_pixels, size_hint) -> tuple[np.ndarray, int]:
    try:
        img = Image.open(path)
    except Image.UnidentifiedImageError:
        raise TruncatedImageError(path, f"{fmt.upper()} header cannot be parsed") from None
    except OSError as exc:
        raise TruncatedImageError(path, str(exc)) from None
    with img:
        check_pixels(path, img.height, img.width, max_pixels)
        if fmt == "png" and _png_is_16bit_colour(path):
            warnings.warn(f"{path}: 16-bit colour PNG is read at 8 bits per channel", MicrocliWarning, 2)
        if fmt == "jpeg" and (mode == "gray" or size_hint):
            # Decoding only the luma plane (and at a reduced scale) is several times faster.
            scale = (img.width, img.height) if not size_hint else (size_hint, size_hint)
            img.draft("L" if mode == "gray" else img.mode, scale)
        try:
            img.load()
        except (OSError, SyntaxError, ValueError) as exc:
            raise TruncatedImageError(path, str(exc)) from None
        return _pillow_to_array(img, path)


def _png_is_16bit_colour(path) -> bool:
    with open(path, "rb") as fh:
        ihdr = fh.read(26)
    return len(ihdr) == 26 and ihdr[24] == 16 and ihdr[25] in (2, 6)


def _pillow_to_array(img: Image.Image, path) -> tuple[np.ndarray, int]:
    m = img.mode
    if m == "P" or m == "PA":
        img = img.convert("RGBA" if "transparency" in img.info or m == "PA" else "RGB")
        m = img.mode
    if m == "1":
        return np.asarray(img, dtype=np.float32), 8
    if m in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(img).astype(np.float32) / 65535.0, 16
    if m == "I":
        arr = np.asarray(img)
        if arr.min() < 0 or arr.max() > 65535:
            raise UnsupportedImageError(path, "32-bit integer pixels outside the 16-bit range")
        return arr.astype(np.float32) / 65535.0, 16
    if m == "F":
        return np.asarray(img, dtype=np.float32), 32
    if m in ("L", "LA", "RGB", "RGBA", "CMYK", "YCbCr"):
        if m == "CMYK" or m == "YCbCr":
            img = img.convert("RGB")
        arr = np.asarray(img)
        if arr.ndim == 3 and arr.shape[2] in (2, 4):
            arr = arr[..., :-1]  # drop alpha: micrographs carry no meaning in it
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[..., 0]
        return arr.astype(np.float32) / 255.0, 8
    raise UnsupportedImageError(path, f"Pillow mode {m!r}")


def _read_tiff(path, max_pixels) -> tuple[np.ndarray, int]:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            pages = tif.pages
            if len(pages) == 0:
                raise TruncatedImageError(path, "TIFF has no pages")
            page = pages[0]
            shape = page.shape
            if len(pages) > 1:
                warnings.warn(f"{path}: multi-page TIFF ({len(pages)} pages); using the first page",
                              MicrocliWarning, 3)
            if len(shape) < 2:
                raise UnsupportedImageError(path, f"TIFF page of shape {shape}")
            axes = page.axes
            h, w = shape[axes.index("Y")], shape[axes.index("X")]
            check_pixels(path, h, w, max_pixels)
            arr = page.asarray()
    except (TruncatedImageError, UnsupportedImageError, ImageTooLargeError):
        raise
    except (tifffile.TiffFileError, ValueError, OSError, IndexError, KeyError) as exc:
        raise TruncatedImageError(path, str(exc) or type(exc).__name__) from None
    if "S" in axes and axes.index("S") == 0 and arr.ndim == 3:  # planar RGB
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 3 and arr.shape[-1] in (2, 4):
        arr = arr[..., :-1]
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2 and not (arr.ndim == 3 and arr.shape[-1] == 3):
        raise UnsupportedImageError(path, f"TIFF page of shape {arr.shape} (axes {axes})")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0, 8
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0, 16
    if arr.dtype == bool:
        return arr.astype(np.float32), 8
    if arr.dtype.kind == "f":
        arr = arr.astype(np.float32)
        if not np.isfinite(arr).all():
            raise UnsupportedImageError(path, "float TIFF contains NaN or infinity")
        return arr, 32
    raise UnsupportedImageError(path, f"TIFF sample type {arr.dtype}")


def has_colour(data: np.ndarray, tol: float = 2.5 / 255) -> bool:
    """True when an (H, W, 3) array's channels differ by more than JPEG chroma noise."""
    if data.ndim == 2:
        return False
    step = max(1, int(np.sqrt(data.shape[0] * data.shape[1] / 65536)))  # subsample big images
    d = data[::step, ::step]
    return float(np.abs(d[..., 0] - d[..., 1]).max()) > tol or float(np.abs(d[..., 1] - d[..., 2]).max()) > tol


def to_gray(data: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of an (H, W, 3) array; a 2-D array is returned as it is."""
    if data.ndim == 2:
        return data
    # ITU-R 601 luma, the weights Pillow uses, so that 'gray' matches Image.convert('L').
    return (data[..., 0] * 0.299 + data[..., 1] * 0.587 + data[..., 2] * 0.114).astype(np.float32)


def _to_mode(data: np.ndarray, mode: ColorMode, path) -> np.ndarray:
    if mode == "gray":
        return to_gray(data)
    if mode == "rgb":
        return data if data.ndim == 3 else np.repeat(data[..., None], 3, axis=2)
    if mode == "auto":
        return data if data.ndim == 3 and has_colour(data) else (data if data.ndim == 2 else data[..., 0])
    raise ValueError(f"mode must be 'auto', 'gray' or 'rgb', got {mode!r}")


@contextlib.contextmanager
def atomic_path(path: str | Path, *, keep_suffix: bool = False) -> Iterator[Path]:
    """A temporary name next to `path`, renamed to `path` when the block ends without an error.

    The one way microcli writes a file: a crash, Ctrl-C or a full disk leaves the old file (or none),
    never a half-written one. The temporary file is hidden (`.name.tmpPID`) and removed on failure.
    `keep_suffix` keeps the extension, for writers that choose the format by it (Pillow, matplotlib).

    Examples
    --------
    >>> with atomic_path("out.png", keep_suffix=True) as tmp:   # doctest: +SKIP
    ...     Image.fromarray(arr).save(tmp)
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}" + (path.suffix if keep_suffix else ""))
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", *, durable: bool = False) -> Iterator[IO]:
    """`open(path, mode)` through `atomic_path`; text modes are UTF-8 with newline=''.
    `durable=True` also flushes the data to disk before the rename (model files)."""
    text = "b" not in mode
    with atomic_path(path) as tmp, open(tmp, mode, **({"encoding": "utf-8", "newline": ""} if text else {})) as fh:
        yield fh
        if durable:
            fh.flush()
            os.fsync(fh.fileno())


def write_image(path: str | Path, data: np.ndarray, *, bit_depth: int = 8, overwrite: bool = False) -> Path:
    """Write a PNG or TIFF (chosen by suffix).

    Boolean arrays (edges, thresholds) are written as 8-bit 0/255. Float arrays are clipped to [0, 1]
    and written at `bit_depth` 8 or 16, or, with `bit_depth` 32 (TIFF only), written as float32 with
    their values as they are. The file is written to a temporary name and renamed, so a crash never
    leaves a half-written output.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: exists (use --force to overwrite)")
    suffix = path.suffix.lower()
    if suffix not in (".png", *TIFF_EXTENSIONS):
        raise ValueError(f"{path}: can only write .png or .tif/.tiff")
    if data.dtype == bool:
        arr = data.astype(np.uint8) * 255
    elif bit_depth == 32:
        if suffix not in TIFF_EXTENSIONS:
            raise ValueError(f"{path}: 32-bit float images can only be written as .tif/.tiff")
        arr = np.asarray(data, dtype=np.float32)
    elif bit_depth == 16:
        arr = np.round(np.clip(data, 0, 1) * 65535).astype(np.uint16)
    elif bit_depth == 8:
        arr = np.round(np.clip(data, 0, 1) * 255).astype(np.uint8)
    else:
        raise ValueError(f"bit_depth must be 8, 16 or 32, got {bit_depth}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, keep_suffix=True) as tmp:
        if suffix in TIFF_EXTENSIONS:
            import tifffile

            tifffile.imwrite(tmp, arr, photometric="rgb" if arr.ndim == 3 else "minisblack",
                             compression="zlib")
        else:
            Image.fromarray(arr).save(tmp, format="PNG", compress_level=3)
    return path


@dataclass(frozen=True)
class FoundImage:
    """A file to process: `path` as the user would write it, `rel` its path relative to `root`, the
    folder it was found in (the input folder, or the folder of a file named explicitly)."""

    path: str
    rel: str
    root: str = "."


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def walk_images(root: str | Path, *, recursive: bool = True, exclude: Iterable[Path] = ()) -> Iterator[FoundImage]:
    """Images under `root`, sorted, hidden files and folders skipped, symlinked folders followed once.

    Every entry with an image extension that is not a folder is returned, even a symlink loop, a broken
    symlink or a FIFO: reading it then fails with a message that names it (`check_regular_file`), and the
    rest of the folder is still processed."""
    root = str(root)
    excluded = {Path(p).resolve() for p in exclude}
    seen: set[str] = set()

    def visit(folder: str, rel: str) -> Iterator[FoundImage]:
        real = os.path.realpath(folder)
        if real in seen or Path(real) in excluded:
            return
        seen.add(real)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            sub_rel = f"{rel}/{entry.name}" if rel else entry.name
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError:  # a symlink loop (ELOOP): not a folder; named when it is read
                is_dir = False
            if is_dir:
                if recursive:
                    yield from visit(entry.path, sub_rel)
            elif is_image_name(entry.name):
                yield FoundImage(entry.path, sub_rel, root)

    yield from visit(root, "")


def read_path_list(stream: IO[str], *, nul: bool = False) -> Iterator[str]:
    """Paths from a stream: one per line, or NUL-separated (`find -print0`). Blank entries are skipped."""
    if nul:
        buf = ""
        while chunk := stream.read(65536):
            buf += chunk
            *parts, buf = buf.split("\0")
            yield from (p for p in parts if p)
        if buf.strip("\n"):
            yield buf.rstrip("\n")
    else:
        for line in stream:
            line = line.rstrip("\r\n")
            if line.strip():
                yield line


def find_images(
    inputs: Iterable[str], *, recursive: bool = True, stdin: IO[str] | None = None, nul: bool = False,
    exclude: Iterable[Path] = (),
) -> Iterator[FoundImage]:
    """Expand files, folders and '-' (paths from `stdin`) into images, in the order given.

    A file named explicitly is always returned, whatever its extension, so that reading it reports a
    clear error if it is not an image; files inside folders are filtered by extension.
    """
    for item in inputs:
        if item == "-":
            if stdin is None:
                raise ValueError("'-' given but no stdin stream")
            for p in read_path_list(stdin, nul=nul):
                yield FoundImage(p, os.path.basename(p), os.path.dirname(p) or ".")
        elif os.path.isdir(item):
            yield from walk_images(item, recursive=recursive, exclude=exclude)
        else:
            yield FoundImage(item, os.path.basename(item), os.path.dirname(item) or ".")


def image_shape(path: str | Path) -> tuple[int, int]:
    """(height, width) from the file header alone, without decoding pixels."""
    if sniff_format(path) == "tiff":
        import tifffile

        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            return page.shape[page.axes.index("Y")], page.shape[page.axes.index("X")]
    with Image.open(path) as img:
        return img.height, img.width

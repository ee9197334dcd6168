"""The error hierarchy. The library raises these; the CLI maps them to a message and an exit code."""

from __future__ import annotations

from pathlib import Path


class MicrocliError(Exception):
    """Base class of every error microcli raises on purpose.

    Attributes
    ----------
    exit_code : int
        The CLI's exit status for it: 1 (error), 2 for usage errors (`UsageError`, `PipelineError`).
    """

    exit_code = 1


class UsageError(MicrocliError):
    """Options that contradict each other or name something that does not exist (exit code 2)."""

    exit_code = 2


class ImageReadError(MicrocliError):
    """An image file that cannot be read. `path` names it, `rule` says which check it failed.

    The message is ``"<path>: <rule> (<detail>)"``; each subclass sets its own `rule`.

    Parameters
    ----------
    path : str or Path
        The file.
    detail : str, optional
        What the reader found, e.g. "no such file"; left out of the message when empty.

    Attributes
    ----------
    path : str
    detail : str
    rule : str
        The class's one-phrase reason, "unreadable image" here.
    """

    rule = "unreadable image"

    def __init__(self, path: str | Path, detail: str = ""):
        self.path = str(path)
        self.detail = detail
        super().__init__(f"{self.path}: {self.rule}" + (f" ({detail})" if detail else ""))


class EmptyFileError(ImageReadError):
    """A file of 0 bytes."""

    rule = "empty file (0 bytes)"


class NotAnImageError(ImageReadError):
    """Not an image: a directory, a missing file, or content that is not PNG, JPEG, BMP or TIFF."""

    rule = "not an image file"


class UnsupportedImageError(ImageReadError):
    """A format (GIF, WebP, HEIF...), pixel layout or sample type microcli does not read."""

    rule = "unsupported image format or layout"


class TruncatedImageError(ImageReadError):
    """A PNG, JPEG, BMP or TIFF whose header or data cannot be decoded."""

    rule = "truncated or corrupt image data"


class ImageTooLargeError(ImageReadError):
    """More pixels than `max_pixels` allows (default: ``MICROCLI_MAX_PIXELS`` or 200 Mpx)."""

    rule = "too many pixels (decompression-bomb guard; raise --max-pixels if the file is trusted)"


class PipelineError(MicrocliError):
    """A preprocessing op or parameter that is not valid (exit code 2)."""

    exit_code = 2


class OpError(MicrocliError):
    """A valid op that cannot be applied to this particular image (crop larger than the image...)."""


class DataError(MicrocliError):
    """A dataset that cannot be used: empty class folder, single class, bad manifest..."""


class CheckpointError(MicrocliError):
    """A file that is not a microcli model bundle, or one this version cannot load."""


class NotInstalledError(MicrocliError):
    """An optional package that this action needs is not installed; the message names the extra."""


class ExportError(MicrocliError):
    """An export that failed its check (the exported model disagrees with the bundle) or its exporter."""


class OutputExistsError(MicrocliError):
    """An output that would overwrite an existing file or an input without --force."""


def describe(path: str | Path, exc: BaseException) -> str:
    """The one-line message for a file that failed: our typed errors say it themselves; anything else
    (a decoder surprise) is named with its type, so that one bad image never kills a batch silently.

    Parameters
    ----------
    path : str or Path
        The file that failed.
    exc : BaseException
        What it raised.

    Returns
    -------
    str
        ``str(exc)`` for a `MicrocliError` that names the file, ``"<path>: <exc>"`` for one that does not
        (an op that cannot be applied to this image knows the image, not its file), else
        ``"<path>: <type>: <exc>"``.
    """
    if not isinstance(exc, MicrocliError):
        return f"{path}: {type(exc).__name__}: {exc}"
    return str(exc) if str(path) in str(exc) else f"{path}: {exc}"

"""The error hierarchy. The library raises these; the CLI maps them to a message and an exit code."""

from __future__ import annotations

from pathlib import Path


class MicrocliError(Exception):
    """Base class of every error microcli raises on purpose."""

    exit_code = 1


class UsageError(MicrocliError):
    """Options that contradict each other or name something that does not exist."""

    exit_code = 2


class ImageReadError(MicrocliError):
    """An image file that cannot be read. `path` names it, `rule` says which check it failed."""

    rule = "unreadable image"

    def __init__(self, path: str | Path, detail: str = ""):
        self.path = str(path)
        self.detail = detail
        super().__init__(f"{self.path}: {self.rule}" + (f" ({detail})" if detail else ""))


class EmptyFileError(ImageReadError):
    rule = "empty file (0 bytes)"


class NotAnImageError(ImageReadError):
    rule = "not an image file"


class UnsupportedImageError(ImageReadError):
    rule = "unsupported image format or layout"


class TruncatedImageError(ImageReadError):
    rule = "truncated or corrupt image data"


class ImageTooLargeError(ImageReadError):
    rule = "too many pixels (decompression-bomb guard; raise --max-pixels if the file is trusted)"


class PipelineError(MicrocliError):
    """A preprocessing op or parameter that is not valid."""

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
    (a decoder surprise) is named with its type, so that one bad image never kills a batch silently."""
    return str(exc) if isinstance(exc, MicrocliError) else f"{path}: {type(exc).__name__}: {exc}"

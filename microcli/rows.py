"""Where prediction rows go: stdout or a file, as CSV, TSV or JSON lines, one row at a time.

Rows on stdout are flushed as they are written, so a pipe sees each row at once. A file is written under
a temporary name and renamed at the end (or appended to with `append`); it never replaces an existing
file without `force`, and never one of the images being predicted.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path
from typing import IO

from .errors import OutputExistsError, UsageError
from .io import IMAGE_EXTENSIONS, TMP_MARK

FORMATS = ("csv", "tsv", "jsonl")


class RowWriter:
    """csv/tsv with a header, or JSON lines. In csv/tsv a row with an "error" field is left out (errors go
    to stderr, never into the table); in JSON lines it is written as it is."""

    def __init__(self, fh: IO[str], fmt: str, columns: list[str], *, header: bool = True):
        if fmt not in FORMATS:
            raise UsageError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        self.fh, self.fmt = fh, fmt
        if fmt != "jsonl":
            self.w = csv.DictWriter(fh, fieldnames=columns, delimiter="\t" if fmt == "tsv" else ",",
                                    extrasaction="ignore", lineterminator="\n")
            if header:
                self.w.writeheader()

    def write(self, row: dict) -> None:
        """Write one row (flushed at once on stdout)."""
        if self.fmt == "jsonl":
            self.fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        elif "error" not in row:
            self.w.writerow({k: (str(v).lower() if isinstance(v, bool) else v) for k, v in _flat(row).items()})


FLAT_PREFIX = {"fractions": "frac"}  # a nested object in JSON lines, <prefix>_<key> columns in CSV/TSV


def _flat(row: dict) -> dict:
    if not any(isinstance(v, dict) for v in row.values()):
        return row
    out = {}
    for k, v in row.items():
        if isinstance(v, dict):
            out.update({f"{FLAT_PREFIX.get(k, k)}_{kk}": vv for kk, vv in v.items()})
        else:
            out[k] = v
    return out


class RowSink:
    """A `RowWriter` on stdout or on `output`, with the file rules of every microcli output.

    Parameters
    ----------
    output : a file, or None for stdout. Its folder is created if missing.
    fmt, columns : see `RowWriter`.
    append : add rows to an existing file (no second header).
    force : replace an existing file.
    stdout : the stream used when `output` is None.

    Raises
    ------
    UsageError : `output` is a folder, or `append` without a file.
    OutputExistsError : `output` exists and neither `append` nor `force` is set, or (at `commit`) it is one
        of the inputs (`note_input`).

    Use as a context manager: rows reach `output` only when the block ends without an error.
    """

    def __init__(self, output: str | Path | None, fmt: str, columns: list[str], *, append: bool = False,
                 force: bool = False, stdout: IO[str] | None = None):
        self.output = Path(output) if output is not None else None
        self._inputs: set[str] = set()
        self._tmp: Path | None = None
        self._append_from: int | None = None  # the size of the file appended to, before this run
        self.writer_format_hint = {"csv": ".csv", "tsv": ".tsv", "jsonl": ".jsonl"}.get(fmt, fmt)
        if self.output is None:
            if append:
                raise UsageError("--append needs --output FILE")
            self.fh, header = stdout or sys.stdout, True
        else:
            if append:
                self._check_header(fmt, columns)
            self.fh, header = self._open(append, force)
        self.writer = RowWriter(self.fh, fmt, columns, header=header)

    def _check_header(self, fmt: str, columns: list[str]) -> None:
        """A csv/tsv file appended to must have this run's columns; a jsonl file must hold JSON lines (they name
        their own keys)."""
        if not self.output.is_file() or not self.output.stat().st_size:
            return
        if fmt == "jsonl":
            with open(self.output, "rb") as fh:
                first = fh.readline().lstrip()
            if not first.startswith(b"{"):
                raise UsageError(f"--append {self.output}: its first line is not a JSON object, so it is not a "
                                 "JSON lines file; append with the --format it was written in, or write another file")
            return
        with open(self.output, newline="", encoding="utf-8", errors="replace") as fh:
            have = next(csv.reader(fh, delimiter="\t" if fmt == "tsv" else ","), [])
        if have != columns:
            raise UsageError(f"--append {self.output}: its columns ({', '.join(have)}) are not this run's "
                             f"({', '.join(columns)}); the rows would not line up. Append with the same model, "
                             "--format and column options, or write another file")

    def _open(self, append: bool, force: bool) -> tuple[IO[str], bool]:
        out = self.output
        if out.is_dir():
            raise UsageError(f"--output {out}: is a folder; give a file name")
        if out.suffix.lower() in IMAGE_EXTENSIONS:
            raise UsageError(f"--output {out}: rows are text ({self.writer_format_hint}); an image file name "
                             "is refused so that no micrograph is ever overwritten")
        exists = out.exists()
        if exists and not (append or force):
            raise OutputExistsError(f"{out}: exists; use --force to replace it or --append to add rows")
        out.parent.mkdir(parents=True, exist_ok=True)
        if append:
            self._append_from = out.stat().st_size if exists else 0
            return open(out, "a", newline="", encoding="utf-8"), not self._append_from
        self._tmp = out.with_name(f".{out.name}{TMP_MARK}{os.getpid()}")
        return open(self._tmp, "w", newline="", encoding="utf-8"), True

    def note_input(self, path: str) -> None:
        """Remember an input, so that the output never replaces it."""
        if self.output is not None:
            self._inputs.add(os.path.realpath(path))
            if os.path.realpath(self.output) in self._inputs:
                if self._append_from is not None:  # rows already appended to an input: take them back
                    self.fh.flush()
                    os.truncate(self.output, self._append_from)
                raise OutputExistsError(f"--output {self.output}: is one of the inputs; choose another "
                                        "file name")

    def write(self, row: dict) -> None:
        """Write one row (flushed at once on stdout)."""
        self.writer.write(row)
        if self.output is None:
            self.fh.flush()

    def commit(self) -> None:
        """Flush stdout, or move the finished file into place."""
        if self.output is None:
            self.fh.flush()
            return
        self.fh.close()
        if self._tmp is not None:
            os.replace(self._tmp, self.output)
            self._tmp = None

    def discard(self) -> None:
        """Keep what was appended (it was flushed row by row); drop an unfinished new file."""
        if self.output is None:
            return
        self.fh.close()
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> RowSink:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        elif exc_type is not BrokenPipeError:
            self.discard()


def tile_rows(path: str, tiles, classes: list[str]) -> list[list]:
    """The --per-tile CSV rows of one image: path, x, y, class, p_<class>..."""
    return [[path, x, y, classes[int(q.argmax())], *[f"{v:.6f}" for v in q]] for x, y, q in tiles]

"""What every command shares: the stderr console, error-to-exit-code mapping, progress bars."""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from ..options import Device, Engine, Precision

EXIT_CODES = ("Exit codes: 0 success; 1 error (nothing useful done); 2 usage error; 3 partial success "
              "(some inputs failed, the rest were processed and the failures listed on stderr).")

# Off a terminal (logs, CI, pipes) rich would assume 80 columns and squeeze the report tables.
err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 140)
out = Console(highlight=False, width=None if sys.stdout.isatty() else 140)  # tables for people


def say(label: str, message: str) -> None:
    """One line on stderr: `label` (rich markup) then `message` as plain text. The message is never
    wrapped (a long path stays on the line it names) nor read as markup (a file may be named 'a[1].png')."""
    from rich.markup import escape

    err.print(f"{label} {escape(message)}", markup=True, highlight=False, soft_wrap=True)


def abort(message: str, code: int = 1) -> NoReturn:
    """One red line on stderr, then exit with `code` (1 error, 2 usage)."""
    say("[bold red]error:[/]", message)
    raise typer.Exit(code)


def warn(message: str) -> None:
    """One yellow 'warning:' line on stderr."""
    say("[yellow]warning:[/]", message)


def failed(message: str) -> None:
    """The line naming one input that failed (the batch goes on)."""
    say("[red]failed:[/]", message)


@contextlib.contextmanager
def errors_to_exit() -> Iterator[None]:
    """Turn the library's typed errors into one red line on stderr and the error's exit code; an OSError (a path
    under a file, a folder that cannot be written) into one line naming the path, exit 1."""
    from ..errors import MicrocliError

    def show_warning(message, category, filename, lineno, file=None, line=None):
        warn(str(message))

    old = warnings.showwarning
    warnings.showwarning = show_warning
    try:
        yield
    except MicrocliError as exc:
        abort(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        abort("interrupted", 130)
    except BrokenPipeError:
        raise  # `| head`: quiet_broken_pipe's to handle, or Python's
    except OSError as exc:  # a file system refusal the library did not foresee: the path and the reason, no traceback
        where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
        abort(f"{where}: {exc.strerror or exc}" if where else str(exc), 1)
    finally:
        warnings.showwarning = old


@contextlib.contextmanager
def quiet_broken_pipe() -> Iterator[None]:
    """`| head` closing the pipe is success, not an error: leave at once with exit 0, no traceback."""
    try:
        yield
    except BrokenPipeError:
        import os

        sys.stderr.close()
        os._exit(0)


def stdout_to_devnull() -> None:
    """The reader of stdout has gone (`| head`) where rows are not the whole output (explain's pictures):
    later rows go to /dev/null and the work goes on."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def progress(quiet: bool = False):
    """A rich progress bar on stderr, shown only on a terminal and not with --quiet."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=err, transient=True, disable=quiet or not err.is_terminal)


def stdin_stream():
    """The stream '-' reads paths from (stdin)."""
    return sys.stdin


# --- options that mean the same in every command (declared once) ----------------------------------------

ModelArg = Annotated[Path, typer.Argument(help="A model bundle (.pt), a run folder (its best.pt), or an ONNX or "
                                                "TorchScript file made by 'microcli export'.")]
EngineOpt = Annotated[Engine, typer.Option("--engine", help="What runs the network. auto: on a CPU the fastest "
                                                            "installed runtime (OpenVINO, then ONNX Runtime: pip "
                                                            "install 'microcli\\[fast]'), else torch.")]
DeviceOpt = Annotated[Device, typer.Option("--device", help="auto: CUDA, then Apple MPS, then CPU.")]
PrecisionOpt = Annotated[Precision, typer.Option("--precision", help="auto: bf16 (or fp16) on CUDA; on CPU bf16 "
                                                                     "for training where native, fp32 for inference.")]
WorkersOpt = Annotated[int, typer.Option("--workers", "-j", min=-1, help="Parallel decoders: -1 auto (chosen from "
                                                                         "the cores), 0 none (this process), N.")]
ThreadsOpt = Annotated[int, typer.Option("--threads", min=0, help="Threads that run the network (0: all cores).")]
MaxPixelsOpt = Annotated[int, typer.Option("--max-pixels", min=0, help="Refuse images with more pixels "
                                                                       "(default 200M or $MICROCLI_MAX_PIXELS; 0: no limit).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images the network sees at a time.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite existing outputs (never inputs).")]
RecursiveOpt = Annotated[bool, typer.Option("--recursive", "-r", help="Descend into sub-folders.")]
NullOpt = Annotated[bool, typer.Option("-0", "--null", help="Paths on stdin are NUL-separated (find -print0).")]

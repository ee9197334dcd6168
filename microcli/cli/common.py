"""What every command shares: the stderr console, error-to-exit-code mapping, progress bars."""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator

import typer
from rich.console import Console

EXIT_CODES = ("Exit codes: 0 success; 1 error (nothing useful done); 2 usage error; 3 partial success "
              "(some inputs failed, the rest were processed and the failures listed on stderr).")

# Off a terminal (logs, CI, pipes) rich would assume 80 columns and squeeze the report tables.
err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 140)
out = Console(highlight=False, width=None if sys.stdout.isatty() else 140)  # tables for people


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", markup=True, highlight=False)
    return typer.Exit(code)


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/] {message}", markup=True, highlight=False)


@contextlib.contextmanager
def errors_to_exit() -> Iterator[None]:
    """Turn the library's typed errors into one red line on stderr and the error's exit code."""
    from ..errors import MicrocliError

    def show_warning(message, category, filename, lineno, file=None, line=None):
        warn(str(message))

    old = warnings.showwarning
    warnings.showwarning = show_warning
    try:
        yield
    except MicrocliError as exc:
        raise fail(str(exc), exc.exit_code) from None
    except KeyboardInterrupt:
        raise fail("interrupted", 130) from None
    finally:
        warnings.showwarning = old


def progress(quiet: bool = False):
    """A rich progress bar on stderr, shown only on a terminal and not with --quiet."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=err, transient=True, disable=quiet or not err.is_terminal)


def stdin_stream():
    return sys.stdin

"""The Typer application. Command modules import the library lazily, so `--help` never loads torch."""

from __future__ import annotations

import inspect

import typer

from .. import __version__
from .common import EXIT_CODES
from .evaluate import evaluate
from .export import export
from .explain import explain
from .info import info
from .predict import predict
from .preprocess import list_ops, preprocess
from .split import split
from .synth import synth
from .train import train

app = typer.Typer(
    name="microcli",
    help="Classify micrographs: classical filters, CNN training, evaluation, batch prediction and export.\n\n"
    + EXIT_CODES,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"microcli {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """Classify micrographs: classical filters, CNN training, evaluation and batch prediction."""
    pass


def _command(fn, name: str | None = None) -> None:
    """Register a command whose help ends with the exit codes. The docstring is dedented and each prose
    paragraph joined into one line (rich would keep the source's line breaks); indented lines, the
    examples, stay as they are."""
    paragraphs = inspect.cleandoc(fn.__doc__).split("\n\n") + [EXIT_CODES]
    fn.__doc__ = "\n\n".join(p if p.startswith(" ") else " ".join(p.split("\n")) for p in paragraphs)
    app.command(name)(fn)


for _fn in (synth, preprocess, split, train, evaluate, predict, explain):
    _command(_fn)
app.command("filters")(list_ops)
app.command()(info)
app.command()(export)


def main() -> None:
    """The `microcli` console script."""
    app()

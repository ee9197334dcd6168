"""The Typer application. Command modules import the library lazily, so `--help` never loads torch."""

from __future__ import annotations

import typer

from .. import __version__
from .common import EXIT_CODES
from .evaluate import evaluate
from .export import export
from .info import info
from .predict import predict
from .preprocess import list_ops, preprocess
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
    pass


app.command()(synth)
app.command()(preprocess)
app.command("filters")(list_ops)
app.command()(train)
app.command()(evaluate)
app.command()(predict)
app.command()(info)
app.command()(export)


def main() -> None:
    app()

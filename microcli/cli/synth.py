from __future__ import annotations

import inspect
from pathlib import Path

import typer

from .common import EXIT_CODES, err, errors_to_exit


def synth(
    out_dir: Path = typer.Argument(..., help="Folder to write <class>/<class>_NNNN.png into."),
    per_class: int = typer.Option(16, "--per-class", "-n", min=1, help="Images per class."),
    size: int = typer.Option(128, "--size", min=32, max=4096, help="Image side in pixels."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same bytes."),
    bit_depth: int = typer.Option(8, "--bit-depth", help="8 or 16 bits per pixel."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing files."),
) -> None:
    """Write labelled synthetic micrographs, one folder per class (equiaxed grains, pearlite-like lamellae,
    spheroidite, dendrites, porosity, martensite needles).

    Example: microcli synth /tmp/synth --per-class 50 --size 128 --seed 1
    """
    from ..synth import CLASSES, SynthSpec, write_dataset

    if bit_depth not in (8, 16):
        raise typer.BadParameter("must be 8 or 16", param_hint="--bit-depth")
    with errors_to_exit():
        n = sum(1 for _ in write_dataset(out_dir, SynthSpec(per_class, size, seed, bit_depth), overwrite=force))
    err.print(f"wrote {n} images in {len(CLASSES)} classes to {out_dir}")


# cleandoc first: an unindented line appended to an indented docstring would stop click from dedenting it
synth.__doc__ = inspect.cleandoc(synth.__doc__) + "\n\n" + EXIT_CODES

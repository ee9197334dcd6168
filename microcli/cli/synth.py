from __future__ import annotations

from pathlib import Path

import typer

from .common import err, errors_to_exit


def synth(
    out_dir: Path = typer.Argument(..., help="Folder to write <class>/<class>_NNNN.png into."),
    per_class: int = typer.Option(16, "--per-class", "-n", min=1, help="Images per class (of the largest class "
                                                                     "with --imbalance)."),
    size: int = typer.Option(128, "--size", min=32, max=4096, help="Image side in pixels."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same bytes."),
    bit_depth: int = typer.Option(8, "--bit-depth", help="8 or 16 bits per pixel."),
    specimens: int = typer.Option(0, "--specimens", min=0,
                                  help="Specimens per class: images of one specimen share its microstructure, "
                                       "magnification, orientation, exposure and noise. Writes OUT/manifest.csv "
                                       "(path,label,group). 0: every image independent."),
    imbalance: float = typer.Option(1.0, "--imbalance", min=1.0,
                                    help="Largest over smallest class size; sizes fall geometrically from "
                                         "--per-class (first class) to --per-class/R (last), at least 2."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing files."),
) -> None:
    """Write labelled synthetic micrographs, one folder per class (equiaxed grains, pearlite-like lamellae,
    spheroidite, dendrites, porosity, martensite needles).

    Examples:

      microcli synth /tmp/synth --per-class 50 --size 128 --seed 1

      microcli synth /tmp/grouped --per-class 60 --specimens 5 --imbalance 10   # then: microcli split
      /tmp/grouped/manifest.csv -o split.csv --test 0.2
    """
    from ..synth import SynthSpec, class_sizes, write_dataset

    if bit_depth not in (8, 16):
        raise typer.BadParameter("must be 8 or 16", param_hint="--bit-depth")
    spec = SynthSpec(per_class, size, seed, bit_depth, specimens=specimens, imbalance=imbalance)
    with errors_to_exit():
        n = sum(1 for p in write_dataset(out_dir, spec, overwrite=force) if p.suffix == ".png")
    sizes = class_sizes(spec)
    detail = "" if imbalance == 1 else f" ({', '.join(f'{c} {k}' for c, k in sizes.items())})"
    grouped = f", {specimens} specimens per class, groups in {out_dir / 'manifest.csv'}" if specimens else ""
    err.print(f"wrote {n} images in {len(sizes)} classes{detail} to {out_dir}{grouped}")



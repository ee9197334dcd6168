from __future__ import annotations

from pathlib import Path

import typer

from .common import err, errors_to_exit, warn


def split(
    data: Path = typer.Argument(..., help="Class folders DATA/<class>/... or a CSV manifest path,label[,group] "
                                          "(not already split)."),
    output: Path = typer.Option(..., "--output", "-o", help="The CSV manifest to write: path,label,group,split."),
    val: float = typer.Option(0.2, "--val", min=0.0, max=0.95, help="Fraction of each class to validate on."),
    test: float = typer.Option(0.0, "--test", min=0.0, max=0.95, help="Fraction of each class to test on."),
    group_by: str = typer.Option(None, "--group-by", metavar="REGEX",
                                 help="Group (specimen) from each file name: the first capture group, else the "
                                      "whole match. Replaces a manifest's group column."),
    seed: int = typer.Option(0, "--seed", help="Same data, same seed, same split."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output (never an input)."),
) -> None:
    """Split labelled images into train/val/test, keeping each group (specimen) on one side.

    Each held-out side gets about the asked fraction of every class, and every class with 2 groups or more
    is held out. A class that cannot be held out (a single group) stays in train and is named in a warning.
    Without groups (no group column, no --group-by) every image is its own group.

    Writes a manifest that train and evaluate read as split data; prints the images per class and side on
    stderr. Paths in it are relative to its folder when the images lie under it.

    Examples:

      microcli split sample_images -o split.csv --val 0.2 --test 0.2 --seed 1

      microcli split scans/ -o scans/split.csv --test 0.25 --group-by '^(specimen\\d+)_'

      microcli split manifest.csv -o split.csv --val 0.15 --test 0.15
    """
    from ..report import split_table
    from ..splits import per_class_counts, write_split_manifest

    with errors_to_exit():
        done = write_split_manifest(data, output, val=val, test=test, seed=seed, group_by=group_by, force=force)
    parts = done.result.splits()
    err.print(split_table(per_class_counts(parts, done.classes),
                          per_class_counts(parts, done.classes, groups=True) if done.grouped else None))
    for message in done.result.warnings:
        warn(message)
    sizes = ", ".join(f"{name} {len(items)}" for name, items in parts.items())
    err.print(f"wrote {sum(len(v) for v in parts.values())} rows ({sizes}) to {done.path}")



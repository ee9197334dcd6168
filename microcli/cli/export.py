from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..options import ExportFormat
from .common import EXIT_CODES, ForceOpt, ModelArg, err, errors_to_exit


def export(
    model: ModelArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="The file to write (.onnx, .ts, or .zip for "
                                                                "bioimageio).")],
    fmt: Annotated[ExportFormat, typer.Option("--format", "-f", help="onnx, torchscript, or a bioimage.io model "
                                                                     "package (zip). Default: from the output's "
                                                                     "suffix.")] = None,
    opset: Annotated[int, typer.Option("--opset", min=13, max=23, help="ONNX opset.")] = 17,
    author: Annotated[list[str], typer.Option("--author", help="bioimageio: an author's name (repeatable; "
                                                               "default: the user name).")] = None,
    license_: Annotated[str, typer.Option("--license", help="bioimageio: the package's licence, an SPDX id.")]
    = "CC-BY-4.0",
    force: ForceOpt = False,
) -> None:
    """Export a trained model for use outside microcli: an ONNX file, a TorchScript file, or a bioimage.io
    model package (Fiji/deepImageJ, ilastik...).

    The exported network takes the prepared image (float32, batch x C x S x S, pixels scaled to [0, 1]
    by the file's bit depth, classical pipeline applied, fitted to S) and returns softmax probabilities;
    normalisation is inside. Class names, input, pipeline, normalisation and versions travel with it, so
    `microcli predict`, `evaluate` and `info` take the file as they take a bundle. Before anything is
    written the export is checked: its softmax on a few of the training run's images must match the
    PyTorch model's within 1e-4, else the command fails and writes nothing.

    Examples:

      microcli export runs/r18 -o r18.onnx

      microcli export runs/r18/best.pt -o r18.ts --format torchscript

      microcli export runs/r18 -o r18-bioimageio.zip --author "A. Metallographer" --license MIT
    """
    from ..export import export_model

    with errors_to_exit():
        result = export_model(model, output, fmt=fmt.value if fmt else None, force=force, opset=opset,
                              authors=author or None, license=license_)
    for note in result.notes:
        err.print(f"note: {note}")
    checks = "; ".join(f"{name}" + (f" run by {', '.join(c['runtimes'])}" if c.get("runtimes") else "")
                       + f": max softmax difference {c['max_abs_diff']:.2g} on {c['images']}"
                       for name, c in result.checks.items())
    err.print(f"wrote {result.path} ({result.format}, {result.size / 1e6:.1f} MB, {result.seconds:.1f} s); "
              f"checked against PyTorch ({checks})")


export.__doc__ += "\n\n" + EXIT_CODES

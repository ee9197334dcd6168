from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..options import CamMethod, Device, Precision, RowFormat
from .common import (BatchSizeOpt, DeviceOpt, ForceOpt, MaxPixelsOpt, ModelArg, NullOpt, PrecisionOpt, RecursiveOpt,
                     ThreadsOpt, WorkersOpt, abort, err, errors_to_exit, quiet_broken_pipe, stdin_stream,
                     stdout_to_devnull, warn)


_InputsOpt = Annotated[list[str], typer.Argument(help="Files, folders, glob patterns, or '-' for paths on stdin.")]
_OutputOpt = Annotated[Path, typer.Option("--output", "-o", help="Folder for the heat maps (one PNG per image, "
                                                                 "<name>_cam.png).")]
_ClassNameOpt = Annotated[str, typer.Option("--class", help="Show the evidence for this class instead of the predicted "
                                                            "one.")]
_MethodOpt = Annotated[CamMethod, typer.Option("--method", help="gradcam, or gradcam++ (each position weighted by its "
                                                                "own share of the gradient).")]
_FiltersOpt = Annotated[Path, typer.Option("--filters", help="Write a PNG of the first layer's kernels beside the "
                                                             "classical kernels they resemble, and (with an input) its "
                                                             "feature maps beside microcli preprocess outputs of the "
                                                             "first image.")]
_FmtOpt = Annotated[RowFormat, typer.Option("--format", "-f", help="Row format on stdout.")]


def explain(
    model: ModelArg,
    inputs: _InputsOpt = None,
    output: _OutputOpt = None,
    class_name: _ClassNameOpt = None,
    method: _MethodOpt = CamMethod.gradcam,
    filters: _FiltersOpt = None,
    fmt: _FmtOpt = RowFormat.csv,
    force: ForceOpt = False,
    recursive: RecursiveOpt = False,
    null: NullOpt = False,
    batch_size: BatchSizeOpt = 64,
    workers: WorkersOpt = -1,
    threads: ThreadsOpt = 0,
    device: DeviceOpt = Device.auto,
    precision: PrecisionOpt = Precision.auto,
    max_pixels: MaxPixelsOpt = None,
) -> None:
    """Show what the model sees: for every image a PNG with the micrograph as the network sees it, a
    class-activation heat map over it (Grad-CAM on the last convolutional block) and the top-3 classes
    with their probabilities.

    The map shows the evidence for the predicted class, or for --class NAME. The probabilities are the
    ones predict gives; fit=crop models are explained view by view and the views averaged per pixel.
    One row per image goes to stdout: path, class, confidence, top2/top3, explained (the class shown),
    map (the PNG). An unreadable file is named on stderr, the others go on (exit 3).

    Examples:

      microcli explain runs/lenet sample_images/lamellar -o cams/

      microcli explain runs/r18 scan.png --class martensite -o cams/

      microcli explain runs/r18 --filters filters.png sample_images/lamellar/lamellar_0000.png
    """
    from ..checkpoint import load_bundle
    from ..errors import OutputExistsError, UsageError
    from ..explain import CamExplainer, class_index, explain_stream, render_explanation
    from ..inference import Predictor, set_threads
    from ..kernels import plot_filters
    from ..outputs import PictureFolder
    from ..parallel import auto_workers
    from ..predict import Prediction, expand_inputs, prediction_row, row_columns
    from ..rows import RowSink

    failed = done = 0
    with errors_to_exit(), quiet_broken_pipe():
        if not inputs and filters is None:
            raise UsageError("give INPUTS and -o OUT for heat maps, or --filters FILE")
        if inputs and output is None and filters is None:
            raise UsageError("give -o OUT: the folder for the heat maps")
        set_threads(threads)
        bundle = load_bundle(model)
        target = class_index(bundle.classes, class_name)
        paths = expand_inputs(inputs or [], recursive=recursive, stdin=stdin_stream(), nul=null)
        if filters is not None:
            first = next(iter(paths), None)
            if first is not None:
                paths = _chain([first], paths)
            if filters.exists() and not force:
                raise OutputExistsError(f"{filters}: exists; use --force to replace it")
            plot_filters(filters, bundle, image=first)
            err.print(f"filters: {filters}")
            if output is None:
                return
        pictures = PictureFolder(output, suffix="_cam.png", force=force)
        explainer = CamExplainer(Predictor(bundle, device=device.value, precision=precision.value),
                                 method=method.value)
        classes = bundle.classes
        cols = row_columns(classes, top_k=3) + ["explained", "map"]
        try:
            sink = RowSink(None, fmt.value, cols)  # writes the header
        except BrokenPipeError:  # nobody reads the rows at all
            stdout_to_devnull()
            sink = RowSink(None, fmt.value, cols)
        with sink:

            def emit(row: dict) -> None:  # `| head` may stop reading rows: the heat maps are still written
                try:
                    sink.write(row)
                except BrokenPipeError:
                    stdout_to_devnull()

            for ex in explain_stream(explainer, paths, target=target, batch_size=batch_size,
                                     workers=auto_workers(workers, threads=True), max_pixels=max_pixels):
                if ex.error:
                    failed += 1
                    err.print(f"[red]failed:[/] {ex.error}", markup=True)
                    emit({"path": ex.path, "error": ex.error})
                    continue
                if ex.warning:
                    warn(ex.warning)
                where = pictures.write(ex.path, render_explanation(ex, classes, chosen=target is not None))
                row = prediction_row(Prediction(ex.path, ex.probs), classes, top_k=3)
                emit({**row, "explained": classes[ex.target], "map": str(where)})
                done += 1
    if failed:
        err.print(f"{failed} of {failed + done} input(s) failed")
        raise typer.Exit(3)
    if done == 0:
        abort("no images found in " + ", ".join(inputs), 1)


def _chain(first, rest):
    yield from first
    yield from rest

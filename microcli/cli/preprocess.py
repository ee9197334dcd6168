from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from .common import (ForceOpt, MaxPixelsOpt, NullOpt, QuietOpt, WorkersOpt, abort, err, errors_to_exit,
                     failed, out, progress, stdin_stream, warn)


def list_ops() -> None:
    """Show every preprocessing op with its parameters, defaults and a one-line description."""
    from rich.table import Table

    from ..preprocess import OPS
    from ..preprocess.pipeline import _fmt

    table = Table(title="preprocessing ops (use as --op NAME:key=value,...)")
    for col in ("op", "parameters (default; allowed)", "what it does"):
        table.add_column(col, overflow="fold")
    for name, spec in OPS.items():
        params = "\n".join(f"{p.name}={_fmt(p.default)}; {p.rule()}" for p in spec.params) or "-"
        table.add_row(name, params, spec.help)
    out.print(table)


_InputsOpt = Annotated[list[str], typer.Argument(help="Image files, folders, or '-' for paths on stdin.")]
_OutDirOpt = Annotated[Path, typer.Option("--out", "-o", help="Output folder; the input tree is mirrored in it.")]
_OpOpt = Annotated[list[str], typer.Option("--op", help="NAME[:key=value,...], repeatable, applied in order.")]
_PipelineFileOpt = Annotated[Path, typer.Option("--pipeline", help="Read the ops from a pipeline.json instead.")]
_ListOpt = Annotated[bool, typer.Option("--list", help="List the ops and their parameters, then exit.")]
_JobsOpt = Annotated[int, typer.Option("--jobs", min=0, hidden=True, help="Old spelling: processes, 0 = all cores.")]
_RecursiveOpt = Annotated[bool, typer.Option("--recursive/--no-recursive", "-r", help="Descend into sub-folders.")]


def preprocess(
    inputs: _InputsOpt = None,
    out_dir: _OutDirOpt = None,
    op: _OpOpt = None,
    pipeline_file: _PipelineFileOpt = None,
    list_: _ListOpt = False,
    workers: WorkersOpt = -1,
    jobs: _JobsOpt = None,
    force: ForceOpt = False,
    recursive: _RecursiveOpt = True,
    null: NullOpt = False,
    max_pixels: MaxPixelsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Apply classical filters (scikit-image) to images or whole folders, as a pipeline.

    Outputs mirror the input tree under OUT; TIFF stays TIFF, everything else becomes PNG; 16-bit in gives
    16-bit out, binary results (canny, threshold) are 8-bit 0/255. The resolved pipeline is saved as
    OUT/pipeline.json, which `--pipeline` and `microcli train --preprocess` accept; an OUT whose
    pipeline.json holds other steps is refused without --force.

    Examples:

      microcli preprocess sample_images -o /tmp/edges --op gaussian:sigma=1 --op canny:sigma=2

      microcli preprocess scan.tif -o out --op crop:bottom=64 --op clahe:clip=0.02

      find . -name '*.tif' -print0 | microcli preprocess - -0 -o out --op denoise:method=nlm
    """
    from ..io import find_images, resolve_max_pixels
    from ..parallel import auto_workers
    from ..preprocess import Pipeline
    from ..preprocess.batch import PIPELINE_FILE, plan_jobs, run_batch, summarize, write_pipeline_file

    if list_:
        list_ops()
        return
    if not inputs:
        abort("no INPUTS given (files, folders or '-'); see --help", 2)
    if out_dir is None:
        abort("missing --out/-o OUTPUT_FOLDER", 2)
    with errors_to_exit():
        max_pixels = resolve_max_pixels(max_pixels)  # a bad MICROCLI_MAX_PIXELS: one message, exit 2
        if pipeline_file is not None:
            if op:
                abort("give either --op or --pipeline, not both", 2)
            pipeline = Pipeline.from_file(pipeline_file)
        else:
            pipeline = Pipeline.parse(op or [])
        if not pipeline:
            abort("no --op given; see 'microcli preprocess --list'", 2)
        found = list(find_images(inputs, recursive=recursive, stdin=stdin_stream(), nul=null, exclude=[out_dir]))
        if not found:
            inside = [i for i in inputs if i != "-" and Path(i).is_dir() and Path(i).resolve().is_relative_to(
                out_dir.resolve())]
            if inside:  # every image was skipped as lying in the output folder
                abort(f"-o {out_dir}: is the input folder {inside[0]} or holds it, and the output folder is never "
                      "read as input; write to another folder (inputs are never overwritten)", 2)
            abort("no images found in " + ", ".join(inputs), 1)
        plan = plan_jobs(found, out_dir, force=force)
        new_dir = not out_dir.exists()
        new_file = write_pipeline_file(out_dir, pipeline, force=force)
        summary = None
        with progress(quiet) as bar:
            task = bar.add_task("preprocess", total=len(plan))
            n = (jobs or os.cpu_count()) if jobs is not None else auto_workers(workers)
            for result, summary in summarize(run_batch(plan, pipeline, workers=n, max_pixels=max_pixels,
                                                       force=force)):
                for w in result.warnings:
                    warn(w)
                if not result.ok:
                    failed(result.error)
                bar.advance(task)
    err.print(f"{summary.done} written, {summary.failed} failed, {summary.seconds:.1f} s, "
              f"{summary.files_per_s:.1f} files/s -> {out_dir}")
    if summary.failed and not summary.done:
        if new_file:  # leave OUT as it was: nothing was made by this pipeline
            (out_dir / PIPELINE_FILE).unlink(missing_ok=True)
            if new_dir and not any(out_dir.iterdir()):
                out_dir.rmdir()
        abort(f"all {summary.failed} input(s) failed; nothing was written", 1)
    if summary.failed:
        raise typer.Exit(3)



from __future__ import annotations

import csv
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer

from ..options import Aggregate, Device, Engine, OnError, Precision, RowFormat
from .common import (BatchSizeOpt, DeviceOpt, EngineOpt, ForceOpt, MaxPixelsOpt, ModelArg, NullOpt, PrecisionOpt,
                     RecursiveOpt, ThreadsOpt, WorkersOpt, abort, err, errors_to_exit, quiet_broken_pipe,
                     stdin_stream, warn)
from .common import failed as report_failure


ROW_SUFFIXES = {".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}  # anything else: csv
_FmtOpt = Annotated[RowFormat, typer.Option("--format", "-f", help="Row format \\[default: from the -o file's suffix "
                                                                   "(.tsv, .jsonl), else csv].",
                                             show_default=False)]
_OutputOpt = Annotated[Path, typer.Option("--output", "-o", help="Write rows to FILE (atomically) instead of stdout.")]
_AppendOpt = Annotated[bool, typer.Option("--append", help="With -o: append rows (no second header).")]
_TopKOpt = Annotated[int, typer.Option("--top-k", "-k", min=1, help="Also give the 2nd..K-th classes.")]
_AllProbsOpt = Annotated[bool, typer.Option("--all-probs", help="A p_<class> column for every class.")]
_MinConfidenceOpt = Annotated[float, typer.Option("--min-confidence", min=0, max=1, help="Mark rows below P as "
                                                                                         "uncertain (an 'uncertain' "
                                                                                         "column).")]
_TileOpt = Annotated[int, typer.Option("--tile", min=8, help="Classify SIZE x SIZE tiles at native scale and aggregate "
                                                             "them (large micrographs).")]
_StrideOpt = Annotated[int, typer.Option("--stride", min=1, help="Tile step (default: the tile size).")]
_AggregateOpt = Annotated[Aggregate, typer.Option("--aggregate", help="How tile softmaxes combine.")]
_PerTileOpt = Annotated[Path, typer.Option("--per-tile", help="Write tile rows (path,x,y,class,p_...) as CSV.")]
_MapDirOpt = Annotated[Path, typer.Option("--map", help="With --tile: write a class map per image (tile classes as a "
                                                        "colour overlay, legend with area fractions) into DIR, and add "
                                                        "the fractions to the rows.")]
_FractionsOpt = Annotated[bool, typer.Option("--fractions", help="With --tile: the area fraction of each class "
                                                                 "(frac_<class> columns; 'fractions' in jsonl), tile "
                                                                 "softmaxes averaged per pixel.")]
_OnErrorOpt = Annotated[OnError, typer.Option("--on-error", help="continue (exit 3 at the end) or fail.")]
_ShardOpt = Annotated[str, typer.Option("--shard", help="K/N: only the K-th of N deterministic slices of the inputs.")]


def predict(
    model: ModelArg,
    inputs: Annotated[list[str], typer.Argument(help="Files, folders, glob patterns, or '-' for paths on stdin.")],
    fmt: _FmtOpt = None,
    output: _OutputOpt = None,
    append: _AppendOpt = False,
    force: ForceOpt = False,
    recursive: RecursiveOpt = False,
    null: NullOpt = False,
    top_k: _TopKOpt = 1,
    all_probs: _AllProbsOpt = False,
    min_confidence: _MinConfidenceOpt = None,
    tile: _TileOpt = None,
    stride: _StrideOpt = None,
    aggregate: _AggregateOpt = Aggregate.mean,
    per_tile: _PerTileOpt = None,
    map_dir: _MapDirOpt = None,
    fractions: _FractionsOpt = False,
    on_error: _OnErrorOpt = OnError.continue_,
    shard: _ShardOpt = None,
    batch_size: BatchSizeOpt = 64,
    workers: WorkersOpt = -1,
    engine: EngineOpt = Engine.auto,
    threads: ThreadsOpt = 0,
    device: DeviceOpt = Device.auto,
    precision: PrecisionOpt = Precision.auto,
    max_pixels: MaxPixelsOpt = None,
) -> None:
    """Classify images and stream one row per image, in input order, to stdout.

    Columns: path, class, confidence [, uncertain] [, top2_class, top2_confidence, ...] [, p_<class>...].
    An unreadable file gives a row with an "error" field (jsonl) or a line on stderr (csv/tsv); the other
    files are still predicted and the exit code is 3 (1 when every input failed).

    Examples:

      microcli predict runs/lenet sample_images -r > predictions.csv

      find scans -name '*.png' | microcli predict runs/lenet/best.pt - --format jsonl | jq -r .class

      microcli predict model.pt 'montage/*.tif' --tile 256 --per-tile tiles.csv

      microcli predict model.pt big.tif --tile 128 --stride 64 --map maps/    # class map + frac_<class>

      microcli predict model.pt /data/night -r --shard 3/16 -o part3.csv    # one job of a SLURM array

      microcli predict model.onnx scans -r --engine onnxruntime             # an exported model
    """
    from ..engines import Predictor, load_for_engine
    from ..errors import UsageError
    from ..io import atomic_open, resolve_max_pixels
    from ..parallel import auto_workers
    from ..predict import TileSpec, expand_inputs, parse_shard, predict_stream, prediction_row, row_columns, shard_of
    from ..modelfile import resolve_model_path
    from ..outputs import PictureFolder, check_output_files
    from ..rows import RowSink

    failed = done = 0
    with errors_to_exit(), quiet_broken_pipe():
        max_pixels = resolve_max_pixels(max_pixels)  # a bad MICROCLI_MAX_PIXELS: one message, exit 2
        k_n = parse_shard(shard)
        want_fractions = fractions or map_dir is not None
        if want_fractions and not tile:
            raise UsageError(("--map" if map_dir is not None else "--fractions") + " needs --tile SIZE")
        if not tile and (stride or per_tile is not None):
            raise UsageError(("--stride" if stride else "--per-tile") + " needs --tile SIZE")
        # -o has its own rules for an existing file (--append, --force, RowSink); both never name the model
        check_output_files({"--output": output, "--per-tile": per_tile}, force=True,
                           protected=[resolve_model_path(model)])
        check_output_files({"--per-tile": per_tile}, force=force)
        loaded = load_for_engine(model, engine=engine.value, device=device.value, precision=precision.value)
        predictor = Predictor(loaded, device=device.value, precision=precision.value, engine=engine.value,
                              threads=threads, on_message=warn)
        classes = predictor.classes
        cols = row_columns(classes, top_k=top_k, all_probs=all_probs, uncertain=min_confidence is not None,
                           fractions=want_fractions)
        maps = PictureFolder(map_dir, suffix="_classmap.png", force=force) if map_dir is not None else None
        paths = shard_of(expand_inputs(inputs, recursive=recursive, stdin=stdin_stream(), nul=null), k_n)
        tiles = TileSpec(tile, stride or tile, aggregate.value) if tile else None
        row_format = fmt.value if fmt else ROW_SUFFIXES.get(output.suffix.lower() if output else "", "csv")
        with RowSink(output, row_format, cols, append=append, force=force) as sink, \
                (atomic_open(per_tile) if per_tile else nullcontext()) as tile_fh:
            extras = _Extras(classes, tiles, maps, want_fractions, tile_fh, max_pixels)
            # Paths from a pipe may come slowly: rows for what is ready go out when it pauses (0.2 s).
            stall = 0.2 if "-" in inputs else None
            n_workers = auto_workers(workers, threads=True)
            for pred in predict_stream(predictor, paths, batch_size=batch_size, workers=n_workers, tile=tiles,
                                       max_pixels=max_pixels, on_path=_guard(sink, per_tile), flush_after=stall):
                sink.write(prediction_row(pred, classes, top_k=top_k, all_probs=all_probs,
                                          min_confidence=min_confidence, fractions=extras.fractions(pred)))
                if pred.error:
                    failed += 1
                    report_failure(pred.error)
                    if on_error == OnError.fail:
                        sink.commit()
                        abort(f"stopping at the first failure (--on-error fail); {done} rows written", 1)
                else:
                    done += 1
                    if pred.warning:
                        warn(pred.warning)
    if failed and done == 0:
        abort(f"all {failed} input(s) failed; nothing was predicted", 1)
    if failed:
        err.print(f"{failed} of {failed + done} input(s) failed")
        raise typer.Exit(3)
    if done == 0:
        nested = not recursive and any(_has_sub_folders(i) for i in inputs)
        abort("no images found in " + ", ".join(inputs) + (" (sub-folders are read with -r/--recursive)"
                                                            if nested else ""), 1)



class _Extras:
    """What --per-tile, --fractions and --map add for each prediction: tile rows, area fractions, class
    map pictures."""

    def __init__(self, classes, tiles, maps, want_fractions: bool, tile_fh, max_pixels):
        self.classes, self.tiles, self.maps = classes, tiles, maps
        self.want, self.max_pixels = want_fractions, max_pixels
        self.tile_w = csv.writer(tile_fh) if tile_fh else None
        if self.tile_w:
            self.tile_w.writerow(["path", "x", "y", "class", *[f"p_{c}" for c in classes]])

    def fractions(self, pred) -> dict | None:
        """Write this image's tile rows and class map; its area fractions (None without --fractions/--map)."""
        from ..classmap import class_map, class_map_picture
        from ..rows import tile_rows

        if pred.error:
            return None
        if self.tile_w and pred.tiles:
            self.tile_w.writerows(tile_rows(pred.path, pred.tiles, self.classes))
        if not self.want:
            return None
        cmap = class_map(pred.shape, pred.tiles, self.tiles.size)
        if self.maps is not None:
            self.maps.write(pred.path, class_map_picture(pred.path, cmap, self.classes, size=self.tiles.size,
                                                         stride=self.tiles.stride, max_pixels=self.max_pixels))
        return cmap.fractions


def _has_sub_folders(path: str) -> bool:
    """A folder with folders in it (where predict without -r finds no image of a class-folder tree)."""
    try:
        with os.scandir(path) as entries:
            return any(e.is_dir() for e in entries)
    except OSError:  # not a folder, or not readable
        return False


def _guard(sink, per_tile: Path | None):
    """The callback that hears each input before it is read: neither -o nor --per-tile may be one of them."""
    from ..outputs import check_output_files

    if per_tile is None:
        return sink.note_input

    def note(path: str) -> None:
        sink.note_input(path)
        check_output_files({"--per-tile": per_tile}, force=True, protected=[path])
    return note

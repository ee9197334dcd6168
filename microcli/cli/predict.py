from __future__ import annotations

import csv
import json
import os
import sys
from enum import Enum
from pathlib import Path

import typer

from .common import EXIT_CODES, err, errors_to_exit, fail, stdin_stream
from .train import Device, Precision


class RowFormat(str, Enum):
    csv = "csv"
    tsv = "tsv"
    jsonl = "jsonl"


class Aggregate(str, Enum):
    mean = "mean"
    vote = "vote"
    max = "max"


class OnError(str, Enum):
    continue_ = "continue"
    fail = "fail"


class RowWriter:
    """csv/tsv with a header, or JSON lines; flushed after every batch so pipes see rows at once."""

    def __init__(self, fh, fmt: str, columns: list[str], header: bool = True):
        self.fh, self.fmt = fh, fmt
        if fmt != "jsonl":
            self.w = csv.DictWriter(fh, fieldnames=columns, delimiter="\t" if fmt == "tsv" else ",",
                                    extrasaction="ignore", lineterminator="\n")
            if header:
                self.w.writeheader()

    def write(self, row: dict) -> None:
        if self.fmt == "jsonl":
            self.fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        elif "error" not in row:  # csv/tsv: errors go to stderr, never into the table
            self.w.writerow({k: (str(v).lower() if isinstance(v, bool) else v) for k, v in row.items()})


def predict(
    model: Path = typer.Argument(..., help="A model bundle (.pt) or a run folder (its best.pt)."),
    inputs: list[str] = typer.Argument(..., help="Files, folders, glob patterns, or '-' for paths on stdin."),
    fmt: RowFormat = typer.Option(RowFormat.csv, "--format", "-f", help="Row format."),
    output: Path = typer.Option(None, "--output", "-o", help="Write rows to FILE (atomically) instead of stdout."),
    append: bool = typer.Option(False, "--append", help="With -o: append rows (no second header)."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Descend into sub-folders."),
    null: bool = typer.Option(False, "-0", "--null", help="Paths on stdin are NUL-separated (find -print0)."),
    top_k: int = typer.Option(1, "--top-k", "-k", min=1, help="Also give the 2nd..K-th classes."),
    all_probs: bool = typer.Option(False, "--all-probs", help="A p_<class> column for every class."),
    min_confidence: float = typer.Option(None, "--min-confidence", min=0, max=1,
                                         help="Mark rows below P as uncertain (an 'uncertain' column)."),
    tile: int = typer.Option(None, "--tile", min=8, help="Classify SIZE x SIZE tiles at native scale and "
                                                         "aggregate them (large micrographs)."),
    stride: int = typer.Option(None, "--stride", min=1, help="Tile step (default: the tile size)."),
    aggregate: Aggregate = typer.Option(Aggregate.mean, "--aggregate", help="How tile softmaxes combine."),
    per_tile: Path = typer.Option(None, "--per-tile", help="Write tile rows (path,x,y,class,p_...) as CSV."),
    on_error: OnError = typer.Option(OnError.continue_, "--on-error", help="continue (exit 3 at the end) or fail."),
    shard: str = typer.Option(None, "--shard", help="K/N: only the K-th of N deterministic slices of the inputs."),
    batch_size: int = typer.Option(64, "--batch-size", "-b", min=1),
    workers: int = typer.Option(-1, "--workers", help="Decoding threads (-1: half the cores, at least 1; 0: none)."),
    threads: int = typer.Option(0, "--threads", min=0, help="torch threads (0: all cores)."),
    device: Device = typer.Option(Device.auto, "--device"),
    precision: Precision = typer.Option(Precision.auto, "--precision", help="auto: bf16 on CUDA, fp32 on CPU."),
    max_pixels: int = typer.Option(None, "--max-pixels", help="Refuse images with more pixels (default 200M)."),
) -> None:
    """Classify images and stream one row per image, in input order, to stdout.

    Columns: path, class, confidence [, uncertain] [, top2_class, top2_confidence, ...] [, p_<class>...].
    An unreadable file gives a row with an "error" field (jsonl) or a line on stderr (csv/tsv); the other
    files are still predicted and the exit code is 3.

    Examples:

      microcli predict runs/lenet sample_images -r > predictions.csv

      find scans -name '*.png' | microcli predict runs/lenet/best.pt - --format jsonl | jq -r .class

      microcli predict model.pt 'montage/*.tif' --tile 256 --per-tile tiles.csv

      microcli predict model.pt /data/night -r --shard 3/16 -o part3.csv    # one job of a SLURM array
    """
    from ..checkpoint import load_bundle
    from ..parallel import auto_workers
    from ..inference import Predictor, set_threads
    from ..predict import TileSpec, expand_inputs, parse_shard, predict_stream, prediction_row, row_columns

    if append and output is None:
        raise fail("--append needs --output FILE", 2)
    with errors_to_exit():
        k_n = parse_shard(shard)
        set_threads(threads)
        predictor = Predictor(load_bundle(model), device=device.value, precision=precision.value)
        classes = predictor.classes
        tiles = TileSpec(tile, stride or tile, aggregate.value) if tile else None
        paths = expand_inputs(inputs, recursive=recursive, stdin=stdin_stream(), nul=null)
        if k_n:
            from ..predict import shard as take_shard

            paths = take_shard(paths, *k_n)
        n_workers = auto_workers(workers, threads=True)
        cols = row_columns(classes, top_k=top_k, all_probs=all_probs, uncertain=min_confidence is not None)
        fh, tmp = _open_output(output, append)
        failed = done = 0
        tile_fh = open(per_tile, "w", newline="") if per_tile else None
        tile_w = csv.writer(tile_fh) if tile_fh else None
        if tile_w:
            tile_w.writerow(["path", "x", "y", "class", *[f"p_{c}" for c in classes]])
        try:
            writer = RowWriter(fh, fmt.value, cols, header=not (append and output.exists() and output.stat().st_size))
            for pred in predict_stream(predictor, paths, batch_size=batch_size, workers=n_workers, tile=tiles,
                                       max_pixels=max_pixels):
                row = prediction_row(pred, classes, top_k=top_k, all_probs=all_probs, min_confidence=min_confidence)
                writer.write(row)
                if pred.error:
                    failed += 1
                    err.print(f"[red]failed:[/] {pred.error}", markup=True)
                    if on_error == OnError.fail:
                        fh.flush()
                        raise fail(f"stopping at the first failure (--on-error fail); {done} rows written", 1)
                else:
                    done += 1
                    if tile_w and pred.tiles:
                        for x, y, q in pred.tiles:
                            tile_w.writerow([pred.path, x, y, classes[int(q.argmax())], *[f"{v:.6f}" for v in q]])
                fh.flush()
            _close_output(fh, tmp, output)
            tmp = None
        except BrokenPipeError:  # `| head` closed the pipe: that is success, not an error
            sys.stderr.close()
            os._exit(0)
        finally:
            if tmp is not None:
                fh.close()
                tmp.unlink(missing_ok=True)
            if tile_fh:
                tile_fh.close()
    if failed:
        err.print(f"{failed} of {failed + done} input(s) failed")
        raise typer.Exit(3)
    if done == 0:
        raise fail("no images found in " + ", ".join(inputs), 1)


predict.__doc__ += "\n\n" + EXIT_CODES


def _open_output(output: Path | None, append: bool):
    if output is None:
        return sys.stdout, None
    if append:
        return open(output, "a", newline="", encoding="utf-8"), None
    tmp = output.with_name(f".{output.name}.tmp{os.getpid()}")
    return open(tmp, "w", newline="", encoding="utf-8"), tmp


def _close_output(fh, tmp: Path | None, output: Path | None) -> None:
    if output is None:
        fh.flush()
        return
    fh.close()
    if tmp is not None:
        os.replace(tmp, output)

"""Batch prediction that streams: rows come out in input order while later files are still being read.

Inputs are consumed lazily (a `find` pipe can still be running), decoded in worker processes with a
bounded look-ahead (memory stays flat for any number of files), classified in batches, and yielded one
`Prediction` per input. A file that cannot be read yields a Prediction with `error` set, never a
neighbour's result.
"""

from __future__ import annotations

import glob
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from .inputs import InputSpec, fit_array, load_for_model, prepare_or_error, range_warning, to_chw
from .parallel import FLUSH, bounded_map
from .errors import UsageError, describe
from .engines import Predictor
from .io import IMAGE_EXTENSIONS, find_images


@dataclass
class Prediction:
    """One input's result: softmax probabilities, or the error that names the file; tiles and shape with --tile."""
    path: str
    probs: np.ndarray | None = None  # (K,) softmax, aggregated over tiles when tiling
    error: str | None = None
    tiles: list[tuple[int, int, np.ndarray]] | None = None  # (x, y, probs) per tile
    warning: str | None = None  # e.g. values far outside the training range (inputs.range_warning)
    shape: tuple[int, int] | None = None  # (height, width) of the image the tiles were cut from


@dataclass(frozen=True)
class TileSpec:
    """`--tile`: tile side and stride in pixels, and how tile probabilities combine."""
    size: int
    stride: int
    aggregate: str = "mean"  # mean | vote | max


def expand_inputs(inputs: Iterable[str], *, recursive: bool, stdin=None, nul: bool = False) -> Iterator[str]:
    """Files, folders, glob patterns and '-' (stdin), lazily and in the order given."""
    for item in inputs:
        if item != "-" and not os.path.exists(item) and glob.has_magic(item):
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                yield item  # reported as "no such file" in its row
            for m in matches:
                if os.path.isdir(m):
                    yield from (f.path for f in find_images([m], recursive=recursive))
                elif m.lower().endswith(IMAGE_EXTENSIONS):
                    yield m
            continue
        yield from (f.path for f in find_images([item], recursive=recursive, stdin=stdin, nul=nul))


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """`--shard K/N` as (K, N), None when not given; a UsageError for anything else."""
    if not text:
        return None
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard must look like K/N (e.g. 2/8), got {text!r}") from None
    if not 1 <= k <= n:
        raise UsageError(f"--shard {text}: K must be between 1 and N")
    return k, n


def shard_of(paths: Iterable[str], k_n: tuple[int, int] | None) -> Iterable[str]:
    """The K-th of N deterministic slices (`parse_shard`): input number i (from 0) goes to slice i % N + 1.
    None: every path."""
    if k_n is None:
        return paths
    k, n = k_n
    return (p for i, p in enumerate(paths) if i % n == k - 1)


def _tiles_or_error(args) -> tuple[list[tuple[int, int]], list[np.ndarray], tuple[int, int]] | str:
    path, spec, tile, max_pixels = args
    try:
        arr = load_for_model(path, spec, max_pixels=max_pixels)
        if max(arr.shape[:2]) <= tile.size:  # no larger than one tile: the whole image is the tile, as it is
            return [(0, 0)], [to_chw(fit_array(arr, spec.img_size, spec.fit))], arr.shape[:2]
        if min(arr.shape[:2]) < tile.size:  # thinner than a tile: widened to one
            arr = fit_array(arr, tile.size, "crop")
        h, w = arr.shape[:2]
        ys = list(range(0, h - tile.size + 1, tile.stride))
        xs = list(range(0, w - tile.size + 1, tile.stride))
        ys += [h - tile.size] if ys[-1] != h - tile.size else []  # cover the bottom and right edges
        xs += [w - tile.size] if xs[-1] != w - tile.size else []
        coords = [(x, y) for y in ys for x in xs]
        tiles = [to_chw(fit_array(arr[y:y + tile.size, x:x + tile.size], spec.img_size, spec.fit)) for x, y in coords]
        return coords, tiles, (h, w)
    except UsageError:  # a bad setting, not a bad file (see prepare_or_error)
        raise
    except Exception as exc:
        return describe(path, exc)


def aggregate(probs: np.ndarray, how: str) -> np.ndarray:
    """One probability vector from a large image's tile probabilities: mean, vote or max."""
    if how == "mean":
        return probs.mean(0)
    if how == "vote":
        return np.bincount(probs.argmax(1), minlength=probs.shape[1]) / len(probs)
    if how == "max":
        m = probs.max(0)
        return m / m.sum()
    raise UsageError(f"--aggregate must be mean, vote or max, got {how!r}")


def predict_stream(predictor: Predictor, paths: Iterable[str], *, batch_size: int = 64, workers: int = 0,
                   tile: TileSpec | None = None, max_pixels: int | None = None, threads: bool = True,
                   on_path: Callable[[str], None] | None = None,
                   flush_after: float | None = None) -> Iterator[Prediction]:
    """One Prediction per path, in order, streamed batch by batch. Files are decoded by `workers`
    threads (or processes, threads=False) while the model runs. `on_path` sees each path before it is
    read (the output's guard against overwriting an input).

    `flush_after` (seconds; for paths from a pipe): `paths` is read on a background thread, and when a
    path has waited that long with no next path in sight, the images already read are predicted and
    yielded at once instead of waiting for a full batch (`mark_stalls`). A fast source never stalls, so
    it keeps its full batches.
    """
    spec: InputSpec = predictor.spec
    if flush_after is not None:
        paths = mark_stalls(paths, flush_after)
    if on_path is not None:
        paths = _tap(paths, on_path)
    if tile is None:
        args = (p if p is FLUSH else (p, spec, max_pixels) for p in paths)
        results = bounded_map(_prepare_with_path, args, workers=workers, chunk=16, threads=threads)
    else:
        args = (p if p is FLUSH else (p, spec, tile, max_pixels) for p in paths)
        results = bounded_map(_tiles_with_path, args, workers=workers, chunk=1, ahead=2 * max(workers, 1),
                              threads=threads)
    pending: list[tuple[str, object]] = []
    n_arrays = 0
    for result in results:
        if result is FLUSH:
            yield from _flush(predictor, pending, tile, batch_size)
            pending, n_arrays = [], 0
            continue
        path, got = result
        pending.append((path, got))
        if not isinstance(got, str):
            n_arrays += len(got[1]) if tile else 1
        if n_arrays >= batch_size:
            yield from _flush(predictor, pending, tile, batch_size)
            pending, n_arrays = [], 0
    yield from _flush(predictor, pending, tile, batch_size)


def _tap(paths: Iterable, fn: Callable[[str], None]) -> Iterator:
    for p in paths:
        if p is not FLUSH:
            fn(p)
        yield p


def mark_stalls(items: Iterable, after: float) -> Iterator:
    """`items`, read on a daemon thread, with `parallel.FLUSH` inserted when the oldest item handed out
    since the last FLUSH is `after` seconds old and the next item has not arrived. While items keep
    coming (a folder, a fast `find`) no FLUSH is inserted; a slow pipe gets one per pause, so nothing
    waits longer than about `after` for a batch to fill. An error in `items` is raised here."""
    box: queue.Queue = queue.Queue()
    end = object()

    def read() -> None:
        try:
            for it in items:
                box.put((it, None))
            box.put((end, None))
        except BaseException as exc:  # handed to the consumer, raised there
            box.put((end, exc))

    threading.Thread(target=read, name="microcli-input", daemon=True).start()
    since = None  # when the oldest item not yet flushed was handed out
    while True:
        try:
            wait = None if since is None else max(0.0, after - (time.monotonic() - since))
            it, exc = box.get(timeout=wait)
        except queue.Empty:
            yield FLUSH
            since = None
            continue
        if it is end:
            if exc is not None:
                raise exc
            return
        if since is None:
            since = time.monotonic()
        yield it


def _prepare_with_path(args):
    return args[0], prepare_or_error(args)


def _tiles_with_path(args):
    return args[0], _tiles_or_error(args)


def _flush(predictor: Predictor, pending, tile: TileSpec | None, batch_size: int) -> Iterator[Prediction]:
    arrays = []
    for _, got in pending:
        if not isinstance(got, str):
            arrays.extend(got[1] if tile else [got])
    probs = predictor.predict_arrays(arrays, batch_size) if arrays else None
    i = 0
    for path, got in pending:
        if isinstance(got, str):
            yield Prediction(path, error=got)
            continue
        warning = range_warning([got] if tile is None else got[1], predictor.spec)
        warning = f"{path}: {warning}" if warning else None
        if tile is None:
            yield Prediction(path, probs[i], warning=warning)
            i += 1
        else:
            coords, tiles, shape = got
            p = probs[i:i + len(tiles)]
            i += len(tiles)
            yield Prediction(path, aggregate(p, tile.aggregate), tiles=[(x, y, q) for (x, y), q in zip(coords, p)],
                             warning=warning, shape=shape)


def prediction_row(pred: Prediction, classes: list[str], *, top_k: int = 1, all_probs: bool = False,
                   min_confidence: float | None = None, fractions: np.ndarray | None = None) -> dict:
    """The output row of one prediction: path, class, confidence[, uncertain][, top-k][, p_<class>...]
    [, fractions: {class: area fraction} (`classmap.class_map`), written as frac_<class> columns in CSV]."""
    row: dict = {"path": pred.path}
    if pred.error is not None:
        row["error"] = pred.error
        return row
    order = np.argsort(-pred.probs, kind="stable")
    row["class"] = classes[order[0]]
    row["confidence"] = round(float(pred.probs[order[0]]), 6)
    if min_confidence is not None:
        row["uncertain"] = bool(pred.probs[order[0]] < min_confidence)
    for r in range(1, min(top_k, len(classes))):
        row[f"top{r + 1}_class"] = classes[order[r]]
        row[f"top{r + 1}_confidence"] = round(float(pred.probs[order[r]]), 6)
    if all_probs:
        row.update({f"p_{c}": round(float(p), 6) for c, p in zip(classes, pred.probs)})
    if fractions is not None:
        row["fractions"] = {c: round(float(f), 6) for c, f in zip(classes, fractions)}
    return row


def row_columns(classes: list[str], *, top_k: int = 1, all_probs: bool = False, uncertain: bool = False,
                fractions: bool = False) -> list[str]:
    """The CSV/TSV header of predict's rows for these options."""
    cols = ["path", "class", "confidence"] + (["uncertain"] if uncertain else [])
    for r in range(1, min(top_k, len(classes))):
        cols += [f"top{r + 1}_class", f"top{r + 1}_confidence"]
    return cols + ([f"p_{c}" for c in classes] if all_probs else []) + ([f"frac_{c}" for c in classes] if fractions else [])

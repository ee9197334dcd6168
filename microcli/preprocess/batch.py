"""Apply a pipeline to many files: outputs mirror the input tree, inputs are never overwritten."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import MicrocliError, OpError, OutputExistsError, UsageError, describe
from ..io import TIFF_EXTENSIONS, FoundImage, atomic_open, read_image, write_image
from ..parallel import bounded_map
from .pipeline import Pipeline


@dataclass(frozen=True)
class Job:
    """One file to filter: the source and the output it will be written to."""
    source: str
    target: str


@dataclass(frozen=True)
class FileResult:
    """What happened to one job: its error (None: written) and the warnings raised on the way."""
    source: str
    target: str
    error: str | None = None
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class BatchSummary:
    """Running totals of a batch: files written and failed, seconds, and the failures."""
    done: int = 0
    failed: int = 0
    seconds: float = 0.0
    failures: list[FileResult] = field(default_factory=list)

    @property
    def files_per_s(self) -> float:
        return (self.done + self.failed) / self.seconds if self.seconds else 0.0


def output_name(rel: str) -> str:
    """TIFF stays TIFF; everything else becomes PNG, which holds 16 bits and loses nothing (JPEG would)."""
    stem, ext = os.path.splitext(rel)
    return rel if ext.lower() in TIFF_EXTENSIONS else stem + ".png"


def _relative_names(found: list[FoundImage]) -> list[str]:
    """Each input's path under OUT: relative to its input folder when every input came from one folder
    (one folder given, or files of one folder), else relative to the folder the inputs have in common,
    so that the tree is kept (`find data | ...`, or two class folders that both hold img001.tif)."""
    roots = {os.path.abspath(f.root) for f in found}
    if len(roots) < 2:
        return [f.rel for f in found]
    try:
        base = os.path.commonpath(sorted(roots))
    except ValueError:  # different drives: nothing in common
        return [f.rel for f in found]
    return [os.path.relpath(os.path.join(os.path.abspath(f.root), f.rel), base) for f in found]


def plan_jobs(found: Iterable[FoundImage], out_dir: str | Path, *, force: bool = False) -> list[Job]:
    """Map inputs to outputs under out_dir; refuse collisions, overwriting inputs, or existing outputs."""
    out_dir = Path(out_dir)
    jobs, by_target = [], {}
    sources = set()
    found = list(found)
    for f, rel in zip(found, _relative_names(found)):
        target = out_dir / output_name(rel)
        key = os.path.normcase(os.path.abspath(target))
        if key in by_target:
            raise UsageError(f"{f.path} and {by_target[key]} would both be written to {target}; "
                             "process them in separate runs or folders")
        by_target[key] = f.path
        sources.add(os.path.normcase(os.path.realpath(f.path)))
        jobs.append(Job(f.path, str(target)))
    for job in jobs:
        if os.path.normcase(os.path.realpath(job.target)) in sources:
            raise UsageError(f"{job.target}: output would overwrite an input; choose another output folder")
    if not force:
        existing = [j.target for j in jobs if os.path.exists(j.target)]
        if existing:
            more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
            raise OutputExistsError(f"{existing[0]}{more} already exist; use --force to overwrite")
    return jobs


PIPELINE_FILE = "pipeline.json"


def write_pipeline_file(out_dir: str | Path, pipeline: Pipeline, *, force: bool = False) -> bool:
    """Write OUT/pipeline.json, the steps that made the files in OUT, before any of them is written.

    An existing pipeline.json with the same steps is kept (adding files made the same way to OUT keeps it
    true); one with other steps is replaced only with `force`, since it describes the files already there.
    Returns True when this call created the file.

    Raises
    ------
    OutputExistsError : OUT/pipeline.json describes another pipeline and `force` is not set.
    """
    path = Path(out_dir) / PIPELINE_FILE
    existed = path.exists()
    if existed:
        try:
            old = Pipeline.from_json(path.read_text(encoding="utf-8"))
        except (MicrocliError, OSError, UnicodeDecodeError):
            old = None
        if old == pipeline:
            return False
        if not force:
            what = f"the pipeline '{old}'" if old is not None else "something this microcli cannot read"
            raise OutputExistsError(f"{path}: exists and describes {what}, not '{pipeline}' (the files already in "
                                    f"{out_dir} were made by it); use --force to replace it, or another --out folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as fh:
        fh.write(pipeline.to_json() + "\n")
    return not existed


def output_bit_depth(input_depth: int, target: str) -> int:
    """8 in, 8 out; 16 in, 16 out; float in, float32 TIFF out with the values unclipped (a float TIFF in
    raw units, 0..1000 say, would otherwise become a white 16-bit image)."""
    if input_depth == 32 and Path(target).suffix.lower() in TIFF_EXTENSIONS:
        return 32
    return 16 if input_depth >= 16 else 8


def _check_float_range(path: str, data, pipeline: Pipeline) -> None:
    """OpError when a float image outside [0, 1] would reach an op that clips to [0, 1]."""
    step = pipeline.clipping_step()
    if step is None:
        return
    lo, hi = float(data.min()), float(data.max())
    if lo < 0 or hi > 1:
        raise OpError(f"{path}: float image with values in [{lo:.4g}, {hi:.4g}]; op '{step.op}' works on [0, 1] "
                      "and would clip them: put 'stretch' before it, or rescale the image to [0, 1]")


def process_one(job: Job, pipeline: Pipeline, max_pixels: int | None, force: bool) -> FileResult:
    """Read, filter and write one file; any failure is returned as the message naming the file."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            img = read_image(job.source, max_pixels=max_pixels)
            if img.bit_depth == 32:
                _check_float_range(job.source, img.data, pipeline)
            out = pipeline.apply(img.data)
            write_image(job.target, out, bit_depth=output_bit_depth(img.bit_depth, job.target), overwrite=force)
            error = None
        except UsageError:  # a bad setting (MICROCLI_MAX_PIXELS), not a bad file: stop the batch
            raise
        except Exception as exc:  # one bad image never kills the batch; the message still names it
            error = describe(job.source, exc)
    return FileResult(job.source, job.target, error, tuple(str(w.message) for w in caught))


def _process(args) -> FileResult:
    return process_one(*args)


def run_batch(jobs: list[Job], pipeline: Pipeline, *, workers: int = 0, max_pixels: int | None = None,
              force: bool = False) -> Iterator[FileResult]:
    """Yield one FileResult per job, in order, working in `workers` processes (0: in this process)."""
    n = max(1, workers)
    # Small chunks keep the progress bar moving; several per worker keep the pool's overhead low.
    chunk = max(1, min(16, len(jobs) // (n * 4)))
    yield from bounded_map(_process, ((j, pipeline, max_pixels, force) for j in jobs),
                           workers=0 if workers <= 1 or len(jobs) <= 2 else workers, chunk=chunk, ahead=4 * n)


def summarize(results: Iterable[FileResult]) -> Iterator[tuple[FileResult, BatchSummary]]:
    """Pass results through while keeping a running summary (for progress bars)."""
    summary = BatchSummary()
    start = time.perf_counter()
    for r in results:
        if r.ok:
            summary.done += 1
        else:
            summary.failed += 1
            summary.failures.append(r)
        summary.seconds = time.perf_counter() - start
        yield r, summary

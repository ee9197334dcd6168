from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import typer

from .common import EXIT_CODES, err, errors_to_exit, out, progress
from .train import Device, Precision


class Split(str, Enum):
    auto = "auto"
    train = "train"
    val = "val"
    test = "test"
    all = "all"


class ReportFormat(str, Enum):
    table = "table"
    json = "json"


def evaluate(
    model: Path = typer.Argument(..., help="A model bundle (.pt) or a run folder (its best.pt)."),
    data: Path = typer.Argument(None, help="Class folders, split folders or a CSV manifest; omitted: the run's "
                                           "own split.csv."),
    split: Split = typer.Option(Split.auto, "--split", help="auto: test if the data has one; else val for the "
                                                            "run's own split, all for DATA."),
    top_k: int = typer.Option(None, "--top-k", min=1, help="Top-k accuracy (default 2 with more than 2 classes)."),
    fmt: ReportFormat = typer.Option(None, "--format", "-f", help="table (people) or json (programs) on stdout."),
    json_file: Path = typer.Option(None, "--json", help="Write the full report as JSON."),
    csv_file: Path = typer.Option(None, "--csv", help="Write the per-class table as CSV."),
    confusion_csv: Path = typer.Option(None, "--confusion-csv", help="Write the confusion matrix (counts) as CSV."),
    misclassified: Path = typer.Option(None, "--misclassified", help="Write the wrong predictions, worst first."),
    plot: Path = typer.Option(None, "--plot", help="Write the confusion matrices (counts, normalised) as PNG."),
    tta: bool = typer.Option(False, "--tta", help="Average over flips and 90-degree rotations."),
    batch_size: int = typer.Option(256, "--batch-size", "-b", min=1),
    workers: int = typer.Option(-1, "--workers", help="Decoding threads (-1: half the cores, at least 1; 0: none)."),
    device: Device = typer.Option(Device.auto, "--device"),
    precision: Precision = typer.Option(Precision.auto, "--precision", help="auto: bf16 on CUDA, fp32 on CPU."),
    max_pixels: int = typer.Option(None, "--max-pixels", help="Refuse images with more pixels (default 200M)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Softmax confusion report of a model on labelled images: accuracy, balanced accuracy, macro/weighted
    precision-recall-F1, top-k, log loss, calibration error, per-class table, confusion matrix, the most
    confused pairs and the misclassified images (worst first).

    Tables go to stdout on a terminal (or with --format table), else to stderr; --format json prints the
    whole report as JSON on stdout. Labels the model does not know are listed and excluded (exit 3).

    Examples:

      microcli evaluate runs/lenet --split val

      microcli evaluate runs/lenet/best.pt sample_images --plot cm.png --misclassified wrong.csv

      microcli evaluate model.pt test_data --format json | jq .overall.macro_f1
    """
    from ..checkpoint import load_bundle
    from ..parallel import auto_workers
    from ..evaluate import evaluate_items, items_for
    from ..inference import Predictor
    from ..report import plot_confusion, report_renderable, write_confusion_csv, write_json, \
        write_misclassified_csv, write_per_class_csv

    with errors_to_exit():
        chosen = split.value
        if chosen == "auto":
            chosen = _auto_split(model, data)
        items = items_for(model, data, chosen)
        predictor = Predictor(load_bundle(model), device=device.value, precision=precision.value, tta=tta)
        with progress(quiet) as bar:
            task = bar.add_task("evaluating", total=len(items))
            result = evaluate_items(predictor, items, workers=auto_workers(workers, threads=True),
                                    batch_size=batch_size, top_k=top_k, max_pixels=max_pixels,
                                    on_progress=lambda d, t: bar.update(task, completed=d, total=t))
        report = result.report
        report["source"] = {"model": str(model), "data": str(data) if data else None, "split": chosen, "tta": tta}
        for label, n in sorted(result.unknown.items()):
            err.print(f"[yellow]excluded:[/] {n} image(s) labelled {label!r}, a class this model does not know "
                      f"(its classes: {', '.join(predictor.classes)})", markup=True)
        for _, why in result.failures:
            err.print(f"[red]failed:[/] {why}", markup=True)
        for path, write in ((json_file, write_json), (csv_file, write_per_class_csv),
                            (confusion_csv, write_confusion_csv), (misclassified, write_misclassified_csv),
                            (plot, plot_confusion)):
            if path is not None:
                write(path, report)
    title = f"{report['overall']['images']} images ({chosen})"
    if fmt == ReportFormat.json:
        print(json.dumps(report, indent=2))
    elif fmt == ReportFormat.table or out.is_terminal:
        out.print(report_renderable(report, title))
    else:
        err.print(report_renderable(report, title))
    if result.partial:
        raise typer.Exit(3)


evaluate.__doc__ += "\n\n" + EXIT_CODES


def _auto_split(model: Path, data: Path | None) -> str:
    from ..data import discover, read_split_csv

    if data is None:
        run = model if model.is_dir() else model.parent
        parts = read_split_csv(run / "split.csv") if (run / "split.csv").is_file() else {}
        return "test" if "test" in parts else "val"
    found = discover(data)
    return "test" if "test" in found.splits else "val" if "val" in found.splits else "all"

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..options import Device, Engine, Precision, ReportFormat, Split
from .common import (BatchSizeOpt, DeviceOpt, EngineOpt, ForceOpt, MaxPixelsOpt, ModelArg, PrecisionOpt, QuietOpt,
                     ThreadsOpt, WorkersOpt, err, errors_to_exit, failed, out, progress, say, warn)

_DataOpt = Annotated[Path, typer.Argument(help="Class folders, split folders or a CSV manifest; omitted: the run's own "
                                               "split.csv.")]
_SplitOpt = Annotated[Split, typer.Option("--split", help="auto: test if the data has one; else val for the run's own "
                                                          "split, all for DATA.")]
_TopKOpt = Annotated[int, typer.Option("--top-k", min=1, help="Top-k accuracy (default 2 with more than 2 classes).")]
_FmtOpt = Annotated[ReportFormat, typer.Option("--format", "-f", help="table (people) or json (programs) on stdout.")]
_JsonFileOpt = Annotated[Path, typer.Option("--json", help="Write the full report as JSON.")]
_CsvFileOpt = Annotated[Path, typer.Option("--csv", help="Write the per-class table as CSV.")]
_ConfusionCsvOpt = Annotated[Path, typer.Option("--confusion-csv", help="Write the confusion matrix (counts) as CSV.")]
_MisclassifiedOpt = Annotated[Path, typer.Option("--misclassified", help="Write the wrong predictions, worst first.")]
_PlotOpt = Annotated[Path, typer.Option("--plot", help="Write the confusion matrices (counts, normalised) as PNG.")]
_HtmlFileOpt = Annotated[Path, typer.Option("--html", help="Write one self-contained HTML page: metrics, matrices, "
                                                           "curves, the misclassified images with heat maps (opens "
                                                           "offline).")]
_TtaOpt = Annotated[bool, typer.Option("--tta", help="Average over flips and 90-degree rotations.")]


def evaluate(
    model: ModelArg,
    data: _DataOpt = None,
    split: _SplitOpt = Split.auto,
    top_k: _TopKOpt = None,
    fmt: _FmtOpt = None,
    json_file: _JsonFileOpt = None,
    csv_file: _CsvFileOpt = None,
    confusion_csv: _ConfusionCsvOpt = None,
    misclassified: _MisclassifiedOpt = None,
    plot: _PlotOpt = None,
    html_file: _HtmlFileOpt = None,
    tta: _TtaOpt = False,
    batch_size: BatchSizeOpt = 256,
    workers: WorkersOpt = -1,
    engine: EngineOpt = Engine.auto,
    threads: ThreadsOpt = 0,
    device: DeviceOpt = Device.auto,
    precision: PrecisionOpt = Precision.auto,
    max_pixels: MaxPixelsOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Softmax confusion report of a model on labelled images: accuracy, balanced accuracy, macro/weighted
    precision-recall-F1, top-k, log loss, calibration error, per-class table, confusion matrix, the most
    confused pairs and the misclassified images (worst first).

    Tables go to stdout on a terminal (or with --format table), else to stderr; --format json prints the
    whole report as JSON on stdout. Labels the model does not know are listed and excluded (exit 3).

    Examples:

      microcli evaluate runs/lenet --split val

      microcli evaluate runs/lenet/best.pt sample_images --plot cm.png --misclassified wrong.csv

      microcli evaluate runs/lenet sample_images --html report.html

      microcli evaluate model.pt test_data --format json | jq .overall.macro_f1
    """
    from ..evaluate import evaluate as run_evaluate
    from ..modelfile import resolve_model_path
    from ..outputs import check_output_files
    from ..parallel import auto_workers
    from ..report import REPORT_WRITERS, report_renderable

    files = {"--json": json_file, "--csv": csv_file, "--confusion-csv": confusion_csv,
             "--misclassified": misclassified, "--plot": plot, "--html": html_file}
    with errors_to_exit():
        model_file = resolve_model_path(model)
        data_file = [data] if data is not None and Path(data).is_file() else []
        check_output_files(files, force=force, protected=[model_file, model_file.parent / "split.csv", *data_file])
        with progress(quiet) as bar:
            task = bar.add_task("evaluating", total=None)
            result = run_evaluate(model, data, split=split.value, device=device.value, precision=precision.value,
                                  tta=tta, engine=engine.value, threads=threads,
                                  workers=auto_workers(workers, threads=True), batch_size=batch_size,
                                  top_k=top_k, max_pixels=max_pixels, on_message=warn,
                                  on_progress=lambda d, t: bar.update(task, completed=d, total=t))
        report = result.report
        for label, n in sorted(result.unknown.items()):
            say("[yellow]excluded:[/]", f"{n} image(s) labelled {label!r}, a class this model does not know "
                                        f"(its classes: {', '.join(result.classes)})")
        for _, why in result.failures:
            failed(why)
        for message in result.warnings:
            warn(message)
        check_output_files(files, force=True, protected=result.paths + [p for p, _ in result.failures])
        writers = {"--json": "json", "--csv": "per_class", "--confusion-csv": "confusion_csv",
                   "--misclassified": "misclassified", "--plot": "plot"}  # --html: below
        for option, kind in writers.items():
            if files[option] is not None:
                REPORT_WRITERS[kind](files[option], report)
        if html_file is not None:
            from ..html_report import write_html_report

            write_html_report(html_file, result, model=model, workers=auto_workers(workers, threads=True))
    title = f"{report['overall']['images']} images ({result.split})"
    if fmt == ReportFormat.json:
        print(json.dumps(report, indent=2))
    elif fmt == ReportFormat.table or out.is_terminal:
        out.print(report_renderable(report, title))
    else:
        err.print(report_renderable(report, title))
    if result.partial:
        raise typer.Exit(3)



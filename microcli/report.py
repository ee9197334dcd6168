"""Rendering confusion reports and training curves: rich tables for people, CSV/JSON/PNG files for programs.

The library builds renderables and files; it never prints. The CLI decides where tables go.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from .io import atomic_open


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _num(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _with_interval(o: dict, key: str, fmt) -> str:
    """'97.8 % (95.9-99.1)': the value and, when the report has one, its 95 % interval."""
    ci = (o.get("ci95") or {}).get(key)
    unit = " %" if fmt is _pct else ""
    return fmt(o[key]) + unit + (f" ({fmt(ci[0])}-{fmt(ci[1])})" if ci else "")


def summary_table(report: dict, title: str = "summary") -> Table:
    """Overall metrics; accuracy, balanced accuracy and macro F1 with their 95 % intervals in brackets
    (schema 2 reports; older ones show the values alone)."""
    o = report["overall"]
    t = Table(title=title, show_header=False)
    t.add_column("metric")
    t.add_column("value", justify="right")
    rows = [("images", str(o["images"])), ("accuracy", _with_interval(o, "accuracy", _pct)),
            ("balanced accuracy", _with_interval(o, "balanced_accuracy", _pct)),
            ("macro F1", _with_interval(o, "macro_f1", _num)),
            ("macro precision / recall", f"{_num(o['macro_precision'])} / {_num(o['macro_recall'])}"),
            ("weighted F1", _num(o["weighted_f1"])), (f"top-{o['top_k']} accuracy", _pct(o["top_k_accuracy"]) + " %"),
            ("log loss", _num(o["log_loss"], 4)), ("expected calibration error", _num(o["ece"], 4))]
    if o.get("ci_method"):
        rows.append(("(in brackets: 95 % interval)", o["ci_method"]))
    for r in rows:
        t.add_row(*r)
    return t


def split_table(images: dict[str, dict[str, int]], groups: dict[str, dict[str, int]] | None = None,
                title: str = "split (images per class)") -> Table:
    """Images per class and side (`splits.per_class_counts`); with `groups`, "images (groups)" in each cell."""
    sides = list(images)
    classes = list(next(iter(images.values()))) if images else []
    t = Table(title=title if groups is None else "split (images (groups) per class)")
    t.add_column("class", no_wrap=True)
    for s in [*sides, "total"]:
        t.add_column(s, justify="right", no_wrap=True)

    def cell(counts: list[int], gcounts: list[int] | None, i: int) -> str:
        text = str(counts[i])
        return text if gcounts is None else f"{text} ({gcounts[i]})"

    def row(label: str, pick) -> None:
        counts = [pick(images[s]) for s in sides]
        counts.append(sum(counts))
        gcounts = None
        if groups is not None:
            gcounts = [pick(groups[s]) for s in sides]
            gcounts.append(sum(gcounts))
        t.add_row(label, *(cell(counts, gcounts, i) for i in range(len(counts))),
                  style="bold" if label == "total" else None)

    for c in classes:
        row(c, lambda d, c=c: d[c])
    row("total", lambda d: sum(d.values()))
    return t


def per_class_table(report: dict) -> Table:
    """Precision, recall, F1, support and confidences per class, as a rich table."""
    t = Table(title="per class (conf.: mean softmax confidence of right / wrong predictions)")
    t.add_column("class", no_wrap=True)
    for col in ("precision", "recall", "F1", "support", "predicted", "conf. right", "conf. wrong"):
        t.add_column(col, justify="right", no_wrap=True)
    for c in report["per_class"]:
        t.add_row(c["class"], _num(c["precision"]), _num(c["recall"]), _num(c["f1"]), str(c["support"]),
                  str(c["predicted"]), _num(c["mean_confidence_correct"]), _num(c["mean_confidence_wrong"]))
    return t


def confusion_table(report: dict) -> Table:
    """Counts, each cell shaded by its row-normalised share (green diagonal, red confusions)."""
    classes = report["classes"]
    counts, norm = report["confusion"]["counts"], report["confusion"]["normalized"]
    t = Table(title="confusion matrix (rows: true, columns: predicted)")
    t.add_column("true \\ predicted", no_wrap=True)
    for c in classes:
        t.add_column(c, justify="right", overflow="fold", min_width=min(len(c), 12))
    for i, c in enumerate(classes):
        cells = []
        for j in range(len(classes)):
            share = norm[i][j]
            if counts[i][j] == 0:
                style = "dim"
            elif i == j:
                style = "bold green" if share >= 0.9 else "green"
            else:
                style = "bold red" if share >= 0.1 else "red"
            cells.append(Text(str(counts[i][j]), style=style))
        t.add_row(c, *cells)
    return t


def confused_pairs_text(report: dict, n: int = 5) -> Text:
    """The `n` most frequent (true -> predicted) confusions as text."""
    pairs = report["most_confused"][:n]
    if not pairs:
        return Text("no confusions", style="green")
    lines = ["most confused (true -> predicted):"]
    lines += [f"  {p['true']} -> {p['predicted']}: {p['count']}" for p in pairs]
    return Text("\n".join(lines))


def report_renderable(report: dict, title: str = "summary") -> Group:
    """Summary, per-class table, confusion matrix and confused pairs, for a rich console."""
    return Group(summary_table(report, title), per_class_table(report), confusion_table(report),
                 confused_pairs_text(report))


def report_text(report: dict, title: str = "summary", width: int = 120) -> str:
    """The report as plain text (the run folder's `*report.txt`)."""
    console = Console(width=width, record=True, file=open(os.devnull, "w"), color_system=None)
    console.print(report_renderable(report, title))
    return console.export_text()


# --- files ---------------------------------------------------------------------------------------------

def _atomic_write(path: str | Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as fh:
        write(fh)


def write_json(path, obj) -> None:
    """Write `obj` as indented JSON, atomically."""
    _atomic_write(path, lambda fh: (json.dump(obj, fh, indent=2), fh.write("\n")))


def _write_rows(path, header: Sequence[str], rows) -> None:
    def write(fh):
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)

    _atomic_write(path, write)


def write_per_class_csv(path, report: dict) -> None:
    """Write the per-class table as CSV."""
    keys = ["class", "precision", "recall", "f1", "support", "predicted", "mean_confidence_correct",
            "mean_confidence_wrong"]
    _write_rows(path, keys, ([c[k] if c[k] is not None else "" for k in keys] for c in report["per_class"]))


def write_confusion_csv(path, report: dict) -> None:
    """Counts with class names on both axes: first column the true class, header the predicted ones."""
    classes = report["classes"]
    _write_rows(path, ["true\\predicted", *classes],
                ([c, *row] for c, row in zip(classes, report["confusion"]["counts"])))


def write_misclassified_csv(path, report: dict) -> None:
    """Write the wrong predictions, worst (lowest p_true) first, as CSV."""
    keys = ["path", "true", "predicted", "p_true", "p_predicted"]
    _write_rows(path, keys, ([m[k] for k in keys] for m in report["misclassified"]))


def confusion_figure(report: dict):
    """Counts and row-normalised matrices side by side, in the shared look (`microcli.figures`): class
    names with spaces, wrapped; cells, fonts and figure sized for 2 to 30 classes."""
    import numpy as np

    from .figures import MATRIX_CMAP, class_font_size, class_label, pyplot, styled

    classes = report["classes"]
    k = len(classes)
    labels = [class_label(c) for c in classes]
    counts = np.array(report["confusion"]["counts"])
    norm = np.array(report["confusion"]["normalized"])
    fs = class_font_size(k)
    side = max(4.0, 0.42 * k + 2.8)
    with styled():
        fig, axes = pyplot().subplots(1, 2, figsize=(2 * side + 1.2, 0.85 * side + 1.2), layout="constrained")
        for ax, mat, title, fmt in ((axes[0], counts, "counts", "d"), (axes[1], norm, "row-normalised (recall)", ".2f")):
            im = ax.imshow(norm, cmap=MATRIX_CMAP, vmin=0, vmax=1)
            ax.set_title(title)
            ax.set_xticks(range(k), labels, rotation=45 if k > 3 else 0, ha="right" if k > 3 else "center",
                          rotation_mode="anchor", fontsize=fs)
            ax.set_yticks(range(k), labels, fontsize=fs)
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
            ax.spines[:].set_visible(False)
            ax.tick_params(length=0)
            if k <= 30:
                for i in range(k):
                    for j in range(k):
                        ax.text(j, i, format(mat[i, j], fmt), ha="center", va="center", fontsize=fs - 1,
                                color="white" if norm[i, j] > 0.5 else "black")
        fig.colorbar(im, ax=axes, shrink=0.8, label="share of the true class")
        acc = report["overall"]["accuracy"]
        fig.suptitle(f"{report['overall']['images']} images, accuracy {100 * acc:.1f} %")
    return fig


def plot_confusion(path, report: dict) -> None:
    """Write `confusion_figure` as PNG (atomically)."""
    from .figures import save_fig

    save_fig(confusion_figure(report), path)


def curves_figure(rows: Sequence[dict], *, title: str | None = None):
    """Loss and accuracy per epoch, train and validation, in the shared look (`microcli.figures`)."""
    from .figures import EXTRA_COLOR, TRAIN_COLOR, VAL_COLOR, pyplot, styled

    pyplot()
    from matplotlib.ticker import MaxNLocator

    ep = [r["epoch"] for r in rows]
    with styled():
        fig, (a, b) = pyplot().subplots(1, 2, figsize=(10, 4), layout="constrained")
        a.plot(ep, [r["train_loss"] for r in rows], "o-", color=TRAIN_COLOR, label="train")
        a.plot(ep, [r["val_loss"] for r in rows], "o-", color=VAL_COLOR, label="validation")
        a.set(xlabel="epoch", ylabel="loss", title="loss")
        b.plot(ep, [r["train_acc"] for r in rows], "o-", color=TRAIN_COLOR, label="train accuracy")
        b.plot(ep, [r["val_acc"] for r in rows], "o-", color=VAL_COLOR, label="validation accuracy")
        b.plot(ep, [r["val_macro_f1"] for r in rows], "s--", color=EXTRA_COLOR, label="validation macro F1")
        b.set(xlabel="epoch", ylabel="score", title="accuracy", ylim=(0, 1.02))
        for ax in (a, b):
            ax.grid(True)
            ax.legend()
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if title:
            fig.suptitle(title)
    return fig


def plot_curves(path, rows: Sequence[dict]) -> None:
    """Loss and accuracy per epoch, train and validation (`curves_figure`), as PNG."""
    from .figures import save_fig

    save_fig(curves_figure(rows), path)


def write_report_text(path, report: dict) -> None:
    """Write `report_text` to a file, atomically."""
    _atomic_write(path, lambda fh: fh.write(report_text(report)))


# Every file form of a report, by kind, and its name in a run folder.
REPORT_WRITERS = {"json": write_json, "text": write_report_text, "per_class": write_per_class_csv,
                  "confusion_csv": write_confusion_csv, "misclassified": write_misclassified_csv,
                  "plot": plot_confusion}
REPORT_NAMES = {"json": "report.json", "text": "report.txt", "per_class": "per_class.csv",
                "confusion_csv": "confusion.csv", "misclassified": "misclassified.csv", "plot": "confusion.png"}


def write_report_files(folder, report: dict, *, stem: str = "") -> dict[str, Path]:
    """The report as files in `folder`: json, txt, per-class/confusion/misclassified CSV, confusion PNG,
    each named `stem` + its name in REPORT_NAMES. Returns the paths by kind."""
    files = {kind: Path(folder) / f"{stem}{name}" for kind, name in REPORT_NAMES.items()}
    for kind, path in files.items():
        REPORT_WRITERS[kind](path, report)
    return files

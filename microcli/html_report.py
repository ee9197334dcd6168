"""One self-contained HTML page of an evaluation: numbers, matrices, curves and the images themselves.

`evaluate --html FILE`, `RUN/report.html` (train) and `RUN/cv_report.html` (cross-validation) are this
page: overall metrics with their intervals, the per-class table, the confusion matrix (counts and
row-normalised), the training curves, the most confused pairs, the misclassified images worst first
(lowest probability of the true class) each with its heat map for the predicted class, and a few
correct images per class for contrast.

Everything is inline: pictures are data: URIs, the style and the small script are in the page, so it
opens offline, from a mail attachment or a USB stick, with no server. It stays small for any number of
images: at most `max_misclassified` thumbnails (the rest are listed in a table of at most `table_rows`
rows) and `correct_per_class` correct examples per class; the page says what it left out. Thumbnails are
JPEG (about 6 kB each), so a page with the default caps stays near 1-2 MB.
"""

from __future__ import annotations

import base64
import csv
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from . import __version__
from .io import atomic_open

MAX_MISCLASSIFIED = 100
CORRECT_PER_CLASS = 3
TABLE_ROWS = 1000
THUMB = 144  # thumbnail side in pixels
METRIC_NAMES = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "macro_f1": "macro F1"}


@dataclass
class Gallery:
    """The evaluated images behind a report: paths, true class indices and softmax (N, K)."""

    paths: list[str]
    labels: np.ndarray
    probs: np.ndarray


@dataclass
class Selection:
    """Which images the page shows: misclassified (worst first), and correct ones per class."""

    misclassified: list[int]  # all of them, worst first (lowest p(true), then path)
    shown: list[int]  # the first `max_misclassified` of them, with thumbnails
    correct: dict[int, list[int]]  # class index -> the most confident correct images


def select_images(gallery: Gallery, k: int, *, max_misclassified: int = MAX_MISCLASSIFIED,
                  correct_per_class: int = CORRECT_PER_CLASS) -> Selection:
    """Pick the images to show, in the order of `metrics.confusion_report`'s misclassified list.

    Parameters
    ----------
    gallery : Gallery
    k : int
        Number of classes.
    max_misclassified : int
        Thumbnails of misclassified images at most.
    correct_per_class : int
        Correct examples per class at most (the most confident ones).

    Returns
    -------
    Selection
    """
    pred = gallery.probs.argmax(1)
    y = np.asarray(gallery.labels, int)
    p_true = gallery.probs[np.arange(len(y)), y]
    wrong = [int(i) for i in np.flatnonzero(pred != y)]
    wrong.sort(key=lambda i: (p_true[i], gallery.paths[i]))
    correct = {}
    for c in range(k):
        mine = [int(i) for i in np.flatnonzero((pred == y) & (y == c))]
        mine.sort(key=lambda i: (-p_true[i], gallery.paths[i]))
        correct[c] = mine[:correct_per_class]
    return Selection(wrong, wrong[:max_misclassified], correct)


# --- heat maps for the chosen images -----------------------------------------------------------------

def explain_paths(model, paths: Sequence[str], *, workers: int = 0) -> list:
    """`explain.Explanation` of each path with `model` (a bundle path or a loaded bundle), re-reading the
    files exactly as predict does; a file that cannot be read gives one with `error` set."""
    from .checkpoint import Bundle, load_bundle
    from .explain import CamExplainer, explain_stream
    from .inference import Predictor

    if not len(paths):
        return []
    bundle = model if isinstance(model, Bundle) else load_bundle(model)
    explainer = CamExplainer(Predictor(bundle, precision="fp32"))
    return list(explain_stream(explainer, paths, workers=workers))


def explain_arrays_of(model, paths: Sequence[str], arrays: Sequence[np.ndarray]) -> list:
    """As `explain_paths`, for images already prepared (a cross-validation's arrays in RAM)."""
    from .checkpoint import load_bundle
    from .explain import CamExplainer, Explanation
    from .inference import Predictor

    if not len(arrays):
        return []
    explainer = CamExplainer(Predictor(load_bundle(model), precision="fp32"))
    return [Explanation(p, a, probs, t, cam, peak)
            for p, a, (probs, t, cam, peak) in zip(paths, arrays, explainer.explain_arrays(list(arrays)))]


# --- writing the page ----------------------------------------------------------------------------------

def write_html_report(path: str | Path, result, *, model, title: str | None = None,
                      max_misclassified: int = MAX_MISCLASSIFIED, correct_per_class: int = CORRECT_PER_CLASS,
                      table_rows: int = TABLE_ROWS, workers: int = 0) -> Path:
    """The page of an `evaluate.EvalResult` (`evaluate --html`, `RUN/report.html`).

    Parameters
    ----------
    path : str or Path
        The HTML file (written atomically; its folder is created).
    result : evaluate.EvalResult
        With its paths, labels and probabilities.
    model : str or Path
        The bundle (or run folder) that was evaluated: heat maps are computed with it, and training
        curves come from the metrics.csv beside it, if there is one.
    title : str or None
        The page's heading (default: what was evaluated).
    max_misclassified, correct_per_class, table_rows : int
        The caps (see the module docstring).
    workers : int
        Decoding threads for the heat maps.

    Returns
    -------
    Path
    """
    from .checkpoint import resolve_model_path

    bundle_path = resolve_model_path(model)
    report, classes = result.report, result.classes
    gallery = Gallery(list(result.paths), np.asarray(result.labels), np.asarray(result.probs))
    sel = select_images(gallery, len(classes), max_misclassified=max_misclassified,
                        correct_per_class=correct_per_class)
    chosen = _chosen(sel)
    expl = dict(zip(chosen, explain_paths(bundle_path, [gallery.paths[i] for i in chosen], workers=workers)))
    curves = _run_curves(bundle_path.parent)
    src = report.get("source") or {}
    heading = title or f"{src.get('model') or bundle_path}: {report['overall']['images']} images"
    about = [f"model: {src.get('model') or bundle_path}"]
    if src.get("data") or src.get("split"):
        about.append(f"data: {src.get('data') or 'the run’s own split'}, split {src.get('split', 'val')}"
                     + (", with TTA" if src.get("tta") else ""))
    page = render_page(report, classes, gallery, sel, expl, title=heading, about=about, curves=curves,
                       table_rows=table_rows)
    return _write(path, page)


def write_cv_html(path: str | Path, report: dict, items, fold: np.ndarray, oof: np.ndarray, classes: list[str], *,
                  root: str | Path, arrays: Sequence[np.ndarray] | None = None,
                  max_misclassified: int = MAX_MISCLASSIFIED, correct_per_class: int = CORRECT_PER_CLASS,
                  table_rows: int = TABLE_ROWS) -> Path:
    """The page of a cross-validation (`RUN/cv_report.html`): out-of-fold predictions, each image's heat
    map from the fold model that held it out (RUN/fold-K/best.pt), every fold's curves.

    Parameters
    ----------
    path : str or Path
    report : dict
        The pooled out-of-fold report (`crossval`), with its "folds" summary.
    items : sequence of data.Item
        The images, in the order of `fold` and `oof`.
    fold : ndarray of int
        Each image's held-out fold (from 0).
    oof : ndarray, shape (N, K)
        Out-of-fold softmax.
    classes : list of str
    root : str or Path
        The cross-validation folder (fold-K/ inside).
    arrays : sequence of ndarray or None
        The prepared images when they are in RAM (else the files are read again).
    max_misclassified, correct_per_class, table_rows : int
        The caps.

    Returns
    -------
    Path
    """
    root = Path(root)
    index = {c: i for i, c in enumerate(classes)}
    gallery = Gallery([it.path for it in items], np.asarray([index[it.label] for it in items]), np.asarray(oof))
    sel = select_images(gallery, len(classes), max_misclassified=max_misclassified,
                        correct_per_class=correct_per_class)
    chosen = _chosen(sel)
    expl: dict[int, object] = {}
    for f in sorted({int(fold[i]) for i in chosen}):
        mine = [i for i in chosen if int(fold[i]) == f]
        model = root / f"fold-{f + 1}" / "best.pt"
        paths = [gallery.paths[i] for i in mine]
        got = (explain_arrays_of(model, paths, [arrays[i] for i in mine]) if arrays is not None
               else explain_paths(model, paths))
        expl.update(zip(mine, got))
    fold_rows = [_read_metrics(root / f"fold-{f + 1}" / "metrics.csv") for f in range(int(fold.max()) + 1)]
    curves = _fold_curves(fold_rows) if any(fold_rows) else None
    k = report.get("folds", {}).get("k", int(fold.max()) + 1)
    about = [f"cross-validation: {k} folds, out-of-fold predictions; each heat map from the fold model that "
             "held the image out"]
    summary = report.get("folds", {}).get("summary") or {}
    if summary:
        about.append("over the folds: " + "; ".join(
            f"{METRIC_NAMES.get(m, m.replace('_', ' '))} {s['mean']:.3f} ± {s['std']:.3f}" for m, s in summary.items()))
    page = render_page(report, classes, gallery, sel, expl, title=f"{root}: cross-validation", about=about,
                       curves=curves, table_rows=table_rows)
    return _write(path, page)


def _chosen(sel: Selection) -> list[int]:
    return list(dict.fromkeys([*sel.shown, *[i for v in sel.correct.values() for i in v]]))


def _write(path, page: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as fh:
        fh.write(page)
    return path


def _read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(fh)]


def _run_curves(folder: Path) -> bytes | None:
    from .figures import fig_png
    from .report import curves_figure

    rows = _read_metrics(folder / "metrics.csv")
    needed = ("epoch", "train_loss", "val_loss", "train_acc", "val_acc", "val_macro_f1")
    if not rows or not all(k in rows[0] for k in needed):
        return None
    return fig_png(curves_figure(rows))


def _fold_curves(fold_rows: list[list[dict]]) -> bytes:
    """Validation loss and macro F1 per epoch, one line per fold."""
    from .figures import class_colors, fig_png, pyplot, styled

    colours = class_colors(len(fold_rows))
    with styled():
        fig, (a, b) = pyplot().subplots(1, 2, figsize=(10, 4), layout="constrained")
        for f, rows in enumerate(fold_rows):
            if not rows:
                continue
            ep = [r["epoch"] for r in rows]
            a.plot(ep, [r.get("val_loss", np.nan) for r in rows], "o-", color=colours[f], label=f"fold {f + 1}")
            b.plot(ep, [r.get("val_macro_f1", np.nan) for r in rows], "o-", color=colours[f], label=f"fold {f + 1}")
        a.set(xlabel="epoch", ylabel="loss", title="validation loss")
        b.set(xlabel="epoch", ylabel="macro F1", title="validation macro F1", ylim=(0, 1.02))
        from matplotlib.ticker import MaxNLocator

        for ax in (a, b):
            ax.grid(True)
            ax.legend()
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig_png(fig)


def _data_uri(rgb: np.ndarray, fmt: str = "JPEG") -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt, quality=85) if fmt == "JPEG" else Image.fromarray(rgb).save(buf, format=fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _png_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _name(c: str) -> str:
    return _e(c.replace("_", " "))


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def _num(x: float | None, d: int = 3) -> str:
    return "–" if x is None else f"{x:.{d}f}"


def _with_ci(o: dict, key: str, fmt) -> str:
    ci = (o.get("ci95") or {}).get(key)
    return fmt(o[key]) + (f" <small>({fmt(ci[0])} – {fmt(ci[1])})</small>" if ci else "")


def _cell_colour(share: float) -> tuple[str, str]:
    """Background and text colour of a matrix cell (the matrices' 'Blues')."""
    from matplotlib import colormaps

    from .figures import MATRIX_CMAP

    r, g, b, _ = colormaps[MATRIX_CMAP](float(share))
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}", ("white" if share > 0.5 else "#111")


def render_page(report: dict, classes: list[str], gallery: Gallery, sel: Selection, expl: dict, *, title: str,
                about: list[str], curves: bytes | None, table_rows: int = TABLE_ROWS) -> str:
    """The HTML text of a report page (see the module docstring); `expl` maps image index -> Explanation."""
    o = report["overall"]
    k = len(classes)
    parts = [f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
             f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
             f"<meta name='generator' content='microcli {_e(__version__)}'><title>{_e(title)}</title>"
             f"<style>{CSS}</style></head><body data-classes='{k}'>",
             f"<header><h1>{_e(title)}</h1>" + "".join(f"<p class='about'>{_e(a)}</p>" for a in about)
             + f"<p class='about'>microcli {_e(__version__)}, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC · "
               f"<span id='page-check'>this page is self-contained: it needs no network</span></p></header>",
             "<nav>" + " · ".join(f"<a href='#{a}'>{t}</a>" for a, t in (
                 ("summary", "summary"), ("per-class", "per class"), ("confusion", "confusion matrix"),
                 ("curves", "training curves"), ("confused", "most confused"), ("misclassified", "misclassified"),
                 ("correct", "correct examples"))) + "</nav>"]
    # summary
    cards = [("images", str(o["images"])), ("accuracy", _with_ci(o, "accuracy", _pct)),
             ("balanced accuracy", _with_ci(o, "balanced_accuracy", _pct)),
             ("macro F1", _with_ci(o, "macro_f1", _num)), (f"top-{o['top_k']} accuracy", _pct(o["top_k_accuracy"])),
             ("log loss", _num(o["log_loss"], 4)), ("calibration error (ECE)", _num(o["ece"], 4))]
    parts.append("<section id='summary'><h2>Summary</h2><div class='metrics'>" + "".join(
        f"<div class='metric'><div class='label'>{lab}</div><div class='value'>{val}</div></div>" for lab, val in cards)
        + "</div>" + (f"<p class='note'>In brackets: 95 % interval, {_e(o['ci_method'])}.</p>" if o.get("ci_method") else "")
        + _left_out(report) + "</section>")
    parts.append(_per_class(report))
    parts.append(_confusion(report, classes))
    parts.append("<section id='curves'><h2>Training curves</h2>" + (
        f"<img class='plot' alt='training curves' src='{_png_uri(curves)}'>" if curves is not None
        else "<p class='note'>No training curves: the model's folder has no metrics.csv.</p>") + "</section>")
    parts.append(_confused_pairs(report))
    parts.append(_misclassified(classes, gallery, sel, expl, table_rows))
    parts.append(_correct(classes, gallery, sel, expl))
    parts.append(f"<footer>Heat maps: Grad-CAM on the network's last convolutional block, for the class the "
                 f"model predicted; bright = evidence for that class. Probabilities are the model's softmax, as "
                 f"<code>microcli predict</code> gives them.</footer><script>{SCRIPT}</script></body></html>\n")
    return "\n".join(parts)


def _left_out(report: dict) -> str:
    bits = []
    for label, n in sorted((report.get("excluded_unknown_labels") or {}).items()):
        bits.append(f"{n} image(s) labelled {_e(label)} were left out (a class the model does not know)")
    failed = report.get("failed") or []
    if failed:
        bits.append(f"{len(failed)} image(s) could not be read: " + ", ".join(_e(f["path"]) for f in failed[:10])
                    + (" …" if len(failed) > 10 else ""))
    return "".join(f"<p class='warn'>{b}</p>" for b in bits)


def _per_class(report: dict) -> str:
    rows = "".join(
        f"<tr><td>{_name(c['class'])}</td><td>{_num(c['precision'])}</td><td>{_num(c['recall'])}</td>"
        f"<td>{_num(c['f1'])}</td><td>{c['support']}</td><td>{c['predicted']}</td>"
        f"<td>{_num(c['mean_confidence_correct'])}</td><td>{_num(c['mean_confidence_wrong'])}</td></tr>"
        for c in report["per_class"])
    head = "".join(f"<th>{h}</th>" for h in ("class", "precision", "recall", "F1", "support", "predicted",
                                             "confidence right", "confidence wrong"))
    return (f"<section id='per-class'><h2>Per class</h2><p class='note'>Click a column to sort. Confidence: mean "
            f"softmax of the right / wrong predictions of the class.</p><table class='sortable data'><thead><tr>{head}"
            f"</tr></thead><tbody>{rows}</tbody></table></section>")


def _confusion(report: dict, classes: list[str]) -> str:
    counts, norm = report["confusion"]["counts"], report["confusion"]["normalized"]
    k = len(classes)
    size = "small" if k > 12 else "normal"

    def table(values, fmt: str, caption: str) -> str:
        head = "".join(f"<th class='col'><span>{_name(c)}</span></th>" for c in classes)
        body = []
        for i, c in enumerate(classes):
            cells = []
            for j in range(k):
                bg, fg = _cell_colour(norm[i][j])
                diag = " diag" if i == j else ""
                cells.append(f"<td class='cell{diag}' style='background:{bg};color:{fg}' "
                             f"title='true {_name(c)}, predicted {_name(classes[j])}: {counts[i][j]} "
                             f"({100 * norm[i][j]:.1f} % of the true class)'>{format(values[i][j], fmt)}</td>")
            body.append(f"<tr><th class='row'>{_name(c)}</th>{''.join(cells)}</tr>")
        return (f"<figure class='matrix {size}'><figcaption>{caption}</figcaption><table class='confusion'>"
                f"<thead><tr><th class='corner'>true \\ predicted</th>{head}</tr></thead><tbody>{''.join(body)}"
                f"</tbody></table></figure>")

    return ("<section id='confusion'><h2>Confusion matrix</h2><p class='note'>Rows: true class; columns: "
            "predicted. Shade: share of the true class (the row-normalised value).</p><div class='matrices'>"
            + table(counts, "d", "counts") + table(norm, ".2f", "row-normalised (recall)") + "</div></section>")


def _confused_pairs(report: dict, n: int = 10) -> str:
    pairs = report.get("most_confused") or []
    if not pairs:
        return "<section id='confused'><h2>Most confused pairs</h2><p>No confusions.</p></section>"
    total = sum(p["count"] for p in pairs)
    rows = "".join(f"<tr><td>{_name(p['true'])}</td><td>→</td><td class='l'>{_name(p['predicted'])}</td>"
                   f"<td>{p['count']}</td><td>{100 * p['count'] / total:.0f} %</td></tr>" for p in pairs[:n])
    more = f"<p class='note'>{len(pairs) - n} more pairs not shown.</p>" if len(pairs) > n else ""
    return (f"<section id='confused'><h2>Most confused pairs</h2><table class='data'><thead><tr><th>true</th><th></th>"
            f"<th style='text-align:left'>predicted as</th><th>images</th><th>share of all errors</th></tr></thead><tbody>{rows}</tbody>"
            f"</table>{more}</section>")


def _top3(classes: list[str], probs: np.ndarray) -> str:
    order = np.argsort(-probs, kind="stable")[:3]
    return "".join(f"<li><span>{_name(classes[j])}</span><b>{probs[j]:.3f}</b>"
                   f"<i style='width:{100 * float(probs[j]):.1f}%'></i></li>" for j in order)


def _card(kind: str, i: int, classes: list[str], gallery: Gallery, expl: dict) -> str:
    from .explain import thumbnail

    path = gallery.paths[i]
    probs = gallery.probs[i]
    y, p = int(gallery.labels[i]), int(probs.argmax())
    ex = expl.get(i)
    if ex is not None and ex.error is None:
        plain, heat = thumbnail(ex, side=THUMB)
        pics = (f"<img alt='{_e(Path(path).name)}' src='{_data_uri(plain)}'>"
                f"<img alt='heat map of {_e(Path(path).name)} for {_name(classes[ex.target])}' "
                f"src='{_data_uri(heat)}'>")
    else:
        why = ex.error if ex is not None else "no heat map"
        pics = f"<div class='nopic'>{_e(why)}</div>"
    verdict = (f"<span class='true'>true: {_name(classes[y])}</span><span class='pred'>predicted: "
               f"{_name(classes[p])}</span>")
    return (f"<figure class='card {kind}' data-path='{_e(path)}' data-true='{_e(classes[y])}' "
            f"data-predicted='{_e(classes[p])}'><div class='pics'>{pics}</div><figcaption>"
            f"<div class='file' title='{_e(path)}'>{_e(Path(path).name)}</div>{verdict}"
            f"<ul class='probs'>{_top3(classes, probs)}</ul></figcaption></figure>")


def _misclassified(classes: list[str], gallery: Gallery, sel: Selection, expl: dict, table_rows: int) -> str:
    n, shown = len(sel.misclassified), len(sel.shown)
    if n == 0:
        return "<section id='misclassified'><h2>Misclassified images</h2><p>None: every image was classified right.</p></section>"
    options = "".join(f"<option value='{_e(c)}'>{_name(c)}</option>" for c in classes)
    head = (f"<section id='misclassified' data-total='{n}' data-shown='{shown}'><h2>Misclassified images</h2>"
            f"<p class='claim'>{n} image(s) misclassified; "
            + (f"all {n} shown" if shown == n else f"the worst {shown} shown") +
            ", worst first (lowest probability of the true class), each with its heat map for the predicted "
            f"class.</p><p class='note'>Show true class: <select id='miss-filter'><option value=''>all</option>"
            f"{options}</select></p><div class='cards'>")
    cards = "".join(_card("miss", i, classes, gallery, expl) for i in sel.shown)
    rest = sel.misclassified[shown:]
    tail = ""
    if rest:
        listed = rest[:table_rows]
        rows = "".join(
            f"<tr><td>{_e(gallery.paths[i])}</td><td>{_name(classes[int(gallery.labels[i])])}</td>"
            f"<td>{_name(classes[int(gallery.probs[i].argmax())])}</td>"
            f"<td>{gallery.probs[i][int(gallery.labels[i])]:.3f}</td><td>{gallery.probs[i].max():.3f}</td></tr>"
            for i in listed)
        more = len(rest) - len(listed)
        tail = (f"<h3>The other {len(rest)} misclassified images (no thumbnails)</h3>"
                + (f"<p class='note'>{len(listed)} listed; {more} more left out to keep this page small "
                   "(all are in the JSON/CSV reports).</p>" if more else "")
                + f"<table class='data list sortable'><thead><tr><th>path</th><th>true</th><th>predicted</th>"
                  f"<th>p(true)</th><th>p(predicted)</th></tr></thead><tbody>{rows}</tbody></table>")
    return head + cards + "</div>" + tail + "</section>"


def _correct(classes: list[str], gallery: Gallery, sel: Selection, expl: dict) -> str:
    blocks = []
    for c, idx in sel.correct.items():
        if not idx:
            blocks.append(f"<h3>{_name(classes[c])}</h3><p class='note'>no correctly classified image</p>")
            continue
        blocks.append(f"<h3>{_name(classes[c])}</h3><div class='cards'>"
                      + "".join(_card("correct", i, classes, gallery, expl) for i in idx) + "</div>")
    k = max((len(v) for v in sel.correct.values()), default=0)
    return (f"<section id='correct'><h2>Correct examples</h2><p class='note'>Up to {k} per class, the most "
            f"confident ones, for contrast.</p>{''.join(blocks)}</section>")


# Colours: Okabe-Ito blue and vermillion for true / predicted (colour-blind safe), the matrices' Blues.
CSS = """
:root{--blue:#0072B2;--orange:#E69F00;--verm:#D55E00;--ink:#1b1b1b;--mute:#5a5a5a;--line:#dcdcdc}
*{box-sizing:border-box}
body{font-family:"DejaVu Sans",system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink);
  margin:0 auto;max-width:1280px;padding:16px 24px 40px;line-height:1.4;background:#fff}
h1{font-size:22px;margin:8px 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:2px solid var(--blue);
  padding-bottom:4px}h3{font-size:15px;margin:16px 0 6px}
.about,.note{color:var(--mute);margin:2px 0;font-size:13px}.warn{color:var(--verm);font-size:13px}
nav{margin:8px 0 0;font-size:13px}nav a{color:var(--blue)}
.metrics{display:flex;flex-wrap:wrap;gap:10px}
.metric{border:1px solid var(--line);border-radius:6px;padding:8px 12px;min-width:150px}
.metric .label{font-size:12px;color:var(--mute)}.metric .value{font-size:20px;font-weight:bold}
.metric small{font-size:12px;font-weight:normal;color:var(--mute)}
table.data{border-collapse:collapse;font-size:13px}
table.data th,table.data td{padding:3px 10px;border-bottom:1px solid var(--line);text-align:right}
table.data th:first-child,table.data td:first-child{text-align:left}
table.data td.l{text-align:left}
table.sortable th{cursor:pointer;user-select:none}table.sortable th:hover{color:var(--blue)}
table.list td:first-child{font-family:monospace;font-size:12px}
.matrices{display:flex;flex-wrap:wrap;gap:28px;align-items:flex-start}
figure.matrix{margin:0}figure.matrix figcaption{font-weight:bold;margin-bottom:4px}
table.confusion{border-collapse:collapse;font-size:13px}
table.confusion td.cell{width:46px;height:34px;text-align:center;border:1px solid #fff}
table.confusion td.diag{outline:2px solid #333;outline-offset:-2px}
table.confusion th.row{text-align:right;padding-right:6px;font-weight:normal;white-space:nowrap}
table.confusion th.col{height:110px;vertical-align:bottom;font-weight:normal;width:46px}
table.confusion th.col span{display:inline-block;transform:rotate(-50deg);transform-origin:left bottom;
  white-space:nowrap;width:20px;margin-left:26px}
table.confusion th.corner{font-size:11px;color:var(--mute);font-weight:normal;vertical-align:bottom}
.small table.confusion{font-size:10px}.small table.confusion td.cell{width:28px;height:22px}
.small table.confusion th.col{width:28px}
img.plot{max-width:100%;border:1px solid var(--line)}
.cards{display:flex;flex-wrap:wrap;gap:12px}
figure.card{margin:0;border:1px solid var(--line);border-radius:6px;padding:6px;width:290px;background:#fafafa}
figure.card.miss{border-left:4px solid var(--verm)}figure.card.correct{border-left:4px solid var(--blue)}
figure.card .pics{display:flex;gap:4px}figure.card img{width:136px;height:auto}
.nopic{width:300px;height:80px;color:var(--mute);font-size:12px;display:flex;align-items:center;justify-content:center}
figure.card figcaption{font-size:12px;margin-top:4px}
.file{font-family:monospace;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.true,.pred{display:inline-block;margin-right:8px;font-weight:bold}.true{color:var(--blue)}.pred{color:var(--verm)}
figure.correct .pred{color:var(--blue)}
ul.probs{list-style:none;padding:0;margin:4px 0 0}
ul.probs li{position:relative;display:flex;justify-content:space-between;padding:1px 4px;margin:1px 0;
  background:#eee;overflow:hidden}
ul.probs li span,ul.probs li b{position:relative;z-index:1}
ul.probs li i{position:absolute;left:0;top:0;bottom:0;background:#b9d7ea}
footer{margin-top:32px;font-size:12px;color:var(--mute);border-top:1px solid var(--line);padding-top:8px}
.hidden{display:none}
"""

# The page's own script: sortable tables, the class filter, and a self-check of the pictures (their
# count and any that fail to decode land in <body data-*> and the header, where a browser test reads them).
SCRIPT = """
(function(){
  document.querySelectorAll('table.sortable').forEach(function(t){
    t.querySelectorAll('th').forEach(function(th,col){
      th.addEventListener('click',function(){
        var body=t.tBodies[0],rows=Array.prototype.slice.call(body.rows);
        var dir=th.dataset.dir==='asc'?-1:1;th.dataset.dir=dir===1?'asc':'desc';
        rows.sort(function(a,b){
          var x=a.cells[col].textContent,y=b.cells[col].textContent,nx=parseFloat(x),ny=parseFloat(y);
          return dir*((isNaN(nx)||isNaN(ny))?x.localeCompare(y):nx-ny);});
        rows.forEach(function(r){body.appendChild(r);});});});});
  var sel=document.getElementById('miss-filter');
  if(sel){sel.addEventListener('change',function(){
    document.querySelectorAll('figure.card.miss').forEach(function(c){
      c.classList.toggle('hidden',!!sel.value&&c.dataset.true!==sel.value);});});}
  window.addEventListener('load',function(){
    var imgs=Array.prototype.slice.call(document.images);
    var broken=imgs.filter(function(i){return !(i.complete&&i.naturalWidth>0);}).length;
    var b=document.body;
    b.dataset.images=imgs.length;b.dataset.brokenImages=broken;
    b.dataset.missCards=document.querySelectorAll('figure.card.miss').length;
    b.dataset.correctCards=document.querySelectorAll('figure.card.correct').length;
    b.dataset.checked='yes';
    var s=document.getElementById('page-check');
    if(s){s.textContent='self-contained: '+imgs.length+' pictures inline'+(broken?', '+broken+' failed to load':'');}
  });
})();
"""

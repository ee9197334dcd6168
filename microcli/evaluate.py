"""Evaluation: a labelled folder, manifest or a run's own split through a bundle, into a confusion report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .data import Item, class_name, discover, read_split_csv
from .engines import Predictor, load_for_engine, warn_message
from .errors import DataError, UsageError
from .io import resolve_max_pixels
from .modelfile import resolve_model_path
from .metrics import confusion_report
from .predict import predict_stream


@dataclass
class EvalResult:
    """A confusion report and what was left out of it.

    Attributes
    ----------
    report : see `microcli.metrics.confusion_report`; ``report["source"]`` says what was evaluated.
    unknown : label -> number of images excluded because the model does not know that class.
    failures : (path, message) of the images that could not be read.
    split : the split that was evaluated (after 'auto' was resolved).
    classes : the model's classes.
    warnings : one message per image whose values lie far outside the training range
        (`microcli.inputs.range_warning`); such images are still counted.
    paths, labels, probs : the evaluated images, their true class indices and softmax outputs (N, K), in
        the report's order (for pictures of them: `microcli.html_report`).
    """

    report: dict
    unknown: dict[str, int] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)
    split: str = "all"
    classes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    labels: np.ndarray | None = None
    probs: np.ndarray | None = None

    @property
    def partial(self) -> bool:
        """True when some images were excluded or unreadable (exit code 3)."""
        return bool(self.unknown or self.failures)


def evaluate(model: str | Path, data: str | Path | None = None, *, split: str = "auto", device: str = "auto",
             precision: str = "auto", tta: bool = False, engine: str = "auto", threads: int = 0, workers: int = 0,
             batch_size: int = 256, top_k: int | None = None, max_pixels: int | None = None, on_progress=None,
             on_message=None) -> EvalResult:
    """Evaluate a model on labelled images: `microcli evaluate` as a function.

    Parameters
    ----------
    model : a bundle file, a run folder (its best.pt), or an exported ONNX or TorchScript file.
    data : class folders, split folders or a manifest; None evaluates the run's own split.csv.
    split : 'auto' (test if there is one; else val of the run's own split, or all of DATA), or
        train / val / test / all.
    device, precision, tta, engine, threads : see `microcli.engines.Predictor`.
    workers : decoding threads (0: in this process).
    batch_size, top_k, max_pixels, on_progress : see `evaluate_items`.
    on_message : receives one line for each engine fallback, and for a `split` that DATA, not split,
        cannot honour (default: a Python warning).

    Raises
    ------
    CheckpointError : `model` is not a readable model file.
    NotInstalledError : an ONNX file and no runtime for it.
    UsageError : the split does not exist, no DATA and no split.csv beside the model, or a bad pixel
        limit (`max_pixels` or MICROCLI_MAX_PIXELS).
    DataError : nothing usable in the data.
    """
    max_pixels = resolve_max_pixels(max_pixels)
    path = resolve_model_path(model)
    splits = _splits_of(path, model, data)
    chosen = _auto_split(splits, data) if split == "auto" else split
    if chosen == "all":
        items = [it for part in splits.values() for it in part]
    elif chosen in splits:
        items = splits[chosen]
    elif "all" in splits:  # DATA is not split: every image, whatever part was asked for, and said so
        items, chosen = splits["all"], "all"
        (on_message or warn_message)(f"--split {split}: {data} is not split, so all its {len(items)} images are "
                                     "evaluated")
    else:
        where = f"{data} has" if data is not None else "the run's split.csv has"
        raise UsageError(f"--split {chosen}: {where} only {', '.join(sorted(splits))}")
    predictor = Predictor(load_for_engine(path, engine=engine, device=device, precision=precision), device=device,
                          precision=precision, tta=tta, engine=engine, threads=threads, on_message=on_message)
    result = evaluate_items(predictor, items, workers=workers, batch_size=batch_size, top_k=top_k,
                            max_pixels=max_pixels, on_progress=on_progress)
    result.split, result.classes = chosen, predictor.classes
    result.report["source"] = {"model": str(model), "data": str(data) if data is not None else None,
                               "split": chosen, "tta": tta, "engine": predictor.engine_name}
    return result


def _splits_of(path: Path, model: str | Path, data: str | Path | None) -> dict[str, list[Item]]:
    """DATA's parts ('all' when not split), or the run's split.csv next to the bundle."""
    if data is not None:  # one class is enough: a model is often checked on a new batch of one class
        return discover(data, min_classes=1).splits
    csv_path = path.parent / "split.csv"
    if not csv_path.is_file():
        raise UsageError(f"no DATA given and no split.csv next to {model}; give a data folder or manifest")
    return read_split_csv(csv_path)


def _auto_split(splits: dict[str, list[Item]], data: str | Path | None) -> str:
    if "test" in splits:
        return "test"
    return "val" if data is None or "val" in splits else "all"


def evaluate_items(predictor: Predictor, items: list[Item], *, workers: int = 0, batch_size: int = 256,
                   top_k: int | None = None, max_pixels: int | None = None, on_progress=None) -> EvalResult:
    """Predict `items` and build their confusion report; labels the model lacks and unreadable files are
    left out and listed in the result. `on_progress(done, total)` is called per image."""
    classes = predictor.classes
    index = {class_name(c): i for i, c in enumerate(classes)}  # a model from before names were composed
    unknown: dict[str, int] = {}
    for it in items:
        if it.label not in index:
            unknown[it.label] = unknown.get(it.label, 0) + 1
    known = [it for it in items if it.label in index]
    if not known:
        raise DataError(f"none of the labels in the data ({', '.join(sorted(unknown))}) are classes of this model "
                        f"({', '.join(classes)})")
    paths, labels, probs, groups, failures, warned = [], [], [], [], [], []
    stream = predict_stream(predictor, [it.path for it in known], batch_size=batch_size, workers=workers,
                            max_pixels=max_pixels)
    for i, (item, pred) in enumerate(zip(known, stream)):
        if pred.error is not None:
            failures.append((item.path, pred.error))
        else:
            paths.append(item.path)
            groups.append(item.group)
            labels.append(index[item.label])
            probs.append(pred.probs)
            if pred.warning:
                warned.append(pred.warning)
        if on_progress:
            on_progress(i + 1, len(known))
    if not paths:
        raise DataError("no image could be read: " + "; ".join(f for _, f in failures[:3]))
    # Intervals resample whole specimens when the data names them (images of one specimen are not
    # independent evidence), else single images.
    report = confusion_report(labels, np.stack(probs), classes, paths, top_k=top_k,
                              groups=groups if any(g is not None for g in groups) else None)
    report["excluded_unknown_labels"] = unknown
    report["failed"] = [{"path": p, "error": e} for p, e in failures]
    return EvalResult(report, unknown, failures, classes=list(classes), paths=paths, labels=np.asarray(labels),
                      probs=np.stack(probs), warnings=warned)

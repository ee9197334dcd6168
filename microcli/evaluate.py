"""Evaluation: a labelled folder, manifest or a run's own split through a bundle, into a confusion report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .data import Item, discover, read_split_csv
from .errors import DataError, UsageError
from .inference import Predictor
from .metrics import confusion_report
from .predict import predict_stream


@dataclass
class EvalResult:
    report: dict
    unknown: dict[str, int] = field(default_factory=dict)  # label -> images excluded (model lacks it)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (path, error)

    @property
    def partial(self) -> bool:
        return bool(self.unknown or self.failures)


def items_for(model: str | Path, data: str | Path | None, split: str) -> list[Item]:
    """The images to evaluate: DATA (all of it, or its `split` part when it is split), or, without DATA,
    the run's own split.csv next to the bundle."""
    if data is None:
        run = Path(model) if Path(model).is_dir() else Path(model).parent
        csv_path = run / "split.csv"
        if not csv_path.is_file():
            raise UsageError(f"no DATA given and no split.csv next to {model}; give a data folder or manifest")
        splits = read_split_csv(csv_path)
        if split == "all":
            return [it for items in splits.values() for it in items]
        if split not in splits:
            raise UsageError(f"--split {split}: the run's split.csv has only {', '.join(sorted(splits))}")
        return splits[split]
    found = discover(data)
    if not found.presplit or split == "all":
        return found.items()
    if split not in found.splits:
        raise UsageError(f"--split {split}: {data} has only {', '.join(sorted(found.splits))}")
    return found.splits[split]


def evaluate_items(predictor: Predictor, items: list[Item], *, workers: int = 0, batch_size: int = 256,
                   top_k: int | None = None, max_pixels: int | None = None, on_progress=None) -> EvalResult:
    classes = predictor.classes
    index = {c: i for i, c in enumerate(classes)}
    unknown: dict[str, int] = {}
    for it in items:
        if it.label not in index:
            unknown[it.label] = unknown.get(it.label, 0) + 1
    known = [it for it in items if it.label in index]
    if not known:
        raise DataError(f"none of the labels in the data ({', '.join(sorted(unknown))}) are classes of this model "
                        f"({', '.join(classes)})")
    paths, labels, probs, failures = [], [], [], []
    stream = predict_stream(predictor, [it.path for it in known], batch_size=batch_size, workers=workers,
                            max_pixels=max_pixels)
    for i, (item, pred) in enumerate(zip(known, stream)):
        if pred.error is not None:
            failures.append((item.path, pred.error))
        else:
            paths.append(item.path)
            labels.append(index[item.label])
            probs.append(pred.probs)
        if on_progress:
            on_progress(i + 1, len(known))
    if not paths:
        raise DataError("no image could be read: " + "; ".join(f for _, f in failures[:3]))
    report = confusion_report(labels, np.stack(probs), classes, paths, top_k=top_k)
    report["excluded_unknown_labels"] = unknown
    report["failed"] = [{"path": p, "error": e} for p, e in failures]
    return EvalResult(report, unknown, failures)

"""Softmax confusion reports: every number `microcli evaluate` prints and `microcli train` writes.

Conventions (also in the README): a 0/0 precision or recall is 0 (scikit-learn's zero_division=0);
macro and balanced averages are taken over the classes that have support in the data, so a class the
model knows but the data lacks is listed with support 0 without pulling the averages down.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

REPORT_SCHEMA_VERSION = 1


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape, float), where=b != 0)


def expected_calibration_error(conf: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """Weighted mean |accuracy - confidence| over equal-width confidence bins (Guo et al. 2017)."""
    if len(conf) == 0:
        return 0.0
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def confusion_report(y_true: Sequence[int], probs: np.ndarray, classes: Sequence[str],
                     paths: Sequence[str] | None = None, *, top_k: int | None = None) -> dict:
    """Everything about a set of softmax outputs `probs` (N, K) against true labels (N,)."""
    y = np.asarray(y_true, dtype=int)
    p = np.asarray(probs, dtype=np.float64)
    k = len(classes)
    n = len(y)
    if top_k is None:
        top_k = 2 if k > 2 else 1
    top_k = max(1, min(top_k, k))
    pred = p.argmax(1) if n else np.zeros(0, int)
    cm = np.zeros((k, k), dtype=int)
    np.add.at(cm, (y, pred), 1)
    tp = np.diag(cm).astype(float)
    support = cm.sum(1).astype(float)
    predicted = cm.sum(0).astype(float)
    precision, recall = _div(tp, predicted), _div(tp, support)
    f1 = _div(2 * precision * recall, precision + recall)
    present = support > 0
    weights = support / support.sum() if n else support
    conf = p.max(1) if n else np.zeros(0)
    correct = pred == y
    p_true = p[np.arange(n), y] if n else np.zeros(0)
    topk_hits = (np.argsort(-p, axis=1)[:, :top_k] == y[:, None]).any(1) if n else np.zeros(0, bool)

    def mean_or_none(values: np.ndarray):
        return float(values.mean()) if len(values) else None

    per_class = []
    for i, name in enumerate(classes):
        mine = y == i
        per_class.append({
            "class": name, "precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
            "support": int(support[i]), "predicted": int(predicted[i]),
            "mean_confidence_correct": mean_or_none(conf[mine & correct]),
            "mean_confidence_wrong": mean_or_none(conf[mine & ~correct]),
        })
    overall = {
        "images": int(n),
        "accuracy": float(correct.mean()) if n else 0.0,
        "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        "macro_precision": float(precision[present].mean()) if present.any() else 0.0,
        "macro_recall": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "weighted_precision": float((precision * weights).sum()),
        "weighted_recall": float((recall * weights).sum()),
        "weighted_f1": float((f1 * weights).sum()),
        "top_k": top_k,
        "top_k_accuracy": float(topk_hits.mean()) if n else 0.0,
        "log_loss": float(-np.log(np.clip(p_true, 1e-15, 1)).mean()) if n else 0.0,
        "ece": expected_calibration_error(conf, correct),
    }
    pairs = [{"true": classes[i], "predicted": classes[j], "count": int(cm[i, j])}
             for i in range(k) for j in range(k) if i != j and cm[i, j] > 0]
    pairs.sort(key=lambda d: (-d["count"], d["true"], d["predicted"]))
    wrong = []
    if paths is not None:
        for idx in np.flatnonzero(~correct):
            wrong.append({"path": paths[idx], "true": classes[y[idx]], "predicted": classes[pred[idx]],
                          "p_true": float(p_true[idx]), "p_predicted": float(conf[idx])})
        wrong.sort(key=lambda d: (d["p_true"], d["path"]))
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "classes": list(classes),
        "overall": overall,
        "per_class": per_class,
        "confusion": {"counts": cm.tolist(), "normalized": _div(cm, support[:, None]).round(6).tolist()},
        "most_confused": pairs,
        "misclassified": wrong,
    }

"""Softmax confusion reports: every number `microcli evaluate` prints and `microcli train` writes.

Conventions (also in the README): a 0/0 precision or recall is 0 (scikit-learn's zero_division=0);
macro and balanced averages are taken over the classes that have support in the data, so a class the
model knows but the data lacks is listed with support 0 without pulling the averages down.

Intervals: a figure from a few hundred test images moves by points from one test set to the next. The
report gives 95 % percentile-bootstrap intervals for accuracy, balanced accuracy and macro F1, over
images or, when images come in groups (specimens), over whole groups, because images of one specimen
succeed or fail together and count for less than independent ones. `fold_summary` gives the Student-t
interval of a mean over cross-validation folds.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

# 2: overall gained ci95 and ci_method.
REPORT_SCHEMA_VERSION = 2
INTERVAL_METRICS = ("accuracy", "balanced_accuracy", "macro_f1")


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


def average_views(probs: np.ndarray, owner: np.ndarray, n: int, dtype: type = np.float32) -> np.ndarray:
    """Softmax rows of network inputs (V, K) averaged per image (`owner[i]`: the image of input i), as every
    command combines an image's views (tiles, TTA): (n, K) of `dtype`."""
    out = np.zeros((n, probs.shape[1]), np.float64)
    np.add.at(out, owner, probs)
    return (out / np.bincount(owner, minlength=n)[:, None]).astype(dtype)


def softmax_of_views(logits: np.ndarray, owner: np.ndarray, n: int, temperature: float = 1.0) -> np.ndarray:
    """softmax(logits / temperature) of each network input, averaged per image (`average_views`)."""
    z = np.asarray(logits, np.float64) / temperature
    p = np.exp(z - z.max(1, keepdims=True))
    return average_views(p / p.sum(1, keepdims=True), owner, n, np.float64)  # float32 rounds 1 - 1e-8 to 1


def log_loss(probs: np.ndarray, y: Sequence[int]) -> float:
    """Mean negative log probability of the true class (probabilities clipped at 1e-15)."""
    return float(-np.log(np.clip(np.asarray(probs)[np.arange(len(y)), y], 1e-15, 1)).mean())


# Temperatures searched. Below 1/4 the search only sharpens a model that is already right on (nearly) every
# validation image, where the log loss keeps falling as the temperature falls and says nothing of the errors
# still to come. Above 1 (softening) it follows the validation specimens more than the network: on
# magnetic-tile's grouped folds the validation parts asked for T 1.05-1.61, and out of fold that doubled the
# expected calibration error (0.064 -> 0.117; worse in 3 folds of 5), while the sharpening NEU-DET asks for
# (T 0.25) carried over to its test images (0.249 -> 0.008). What temperature scaling corrects here is the
# recipe's own bias, under-confidence from label smoothing and weight averaging, so it only sharpens.
TEMPERATURE_RANGE = (0.25, 1.0)


def fit_temperature(logits: np.ndarray, y: Sequence[int], owner: Sequence[int] | None = None) -> float:
    """The temperature that makes a network's confidences honest: the T > 0 minimising the mean log loss
    of softmax(logits / T) over held-out images (temperature scaling, Guo et al. 2017).

    Parameters
    ----------
    logits : array, shape (V, K)
        Network outputs for V inputs.
    y : sequence of int, length N
        True class of each image.
    owner : sequence of int, length V, optional
        The image of each input, when an image has several (tiles); their softmax outputs are averaged,
        as predict does. Default: one input per image.

    Returns
    -------
    float
        T in `TEMPERATURE_RANGE`. The argmax of each input's logits is the same for any T; that of an
        average over several inputs (tiles) is not.

    Raises
    ------
    ValueError
        No labels, lengths that do not fit, or non-finite logits.

    Notes
    -----
    Label smoothing, weight averaging and strong augmentation (this tool's recipe) leave a network
    under-confident: 99 % right with a mean confidence near 0.75. T < 1 sharpens it. A network that looks
    over-confident on the validation images is left as it is (T = 1): with validation drawn from a few
    specimens, softening did not carry over to new ones (see `TEMPERATURE_RANGE`).
    """
    from scipy.optimize import minimize_scalar  # here: scipy.optimize costs 0.2 s to import

    y, logits = np.asarray(y), np.asarray(logits)
    if len(y) == 0:
        raise ValueError("fit_temperature needs at least one held-out image")
    owner = np.arange(len(y)) if owner is None else np.asarray(owner)
    if len(owner) != len(logits) or not len(owner) or owner.max() >= len(y):
        raise ValueError(f"fit_temperature: {len(logits)} rows of logits, {len(owner)} owners and {len(y)} labels "
                         "do not fit together")
    if not np.isfinite(logits).all():
        raise ValueError("fit_temperature: the logits hold NaN or infinite values")

    def loss(log_t: float) -> float:
        return log_loss(softmax_of_views(logits, owner, len(y), float(np.exp(log_t))), y)

    lo, hi = np.log(TEMPERATURE_RANGE)
    res = minimize_scalar(loss, bounds=(lo, hi), method="bounded", options={"xatol": 1e-3})
    t = float(np.exp(res.x))
    return TEMPERATURE_RANGE[1] if t > TEMPERATURE_RANGE[1] * (1 - 2e-3) else t  # the search stops short of a bound


def _batch_metrics(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, balanced accuracy and macro F1 of a stack of confusion matrices (B, K, K), rows true.
    Same conventions as `confusion_report`: 0/0 is 0, averages over the classes present in each matrix."""
    cm = np.asarray(cm, dtype=float)
    tp = np.diagonal(cm, axis1=1, axis2=2)
    support, predicted = cm.sum(2), cm.sum(1)
    precision, recall = _div(tp, predicted), _div(tp, support)
    f1 = _div(2 * precision * recall, precision + recall)
    present = support > 0
    n_present = present.sum(1).astype(float)
    return {"accuracy": _div(tp.sum(1), support.sum(1)),
            "balanced_accuracy": _div((recall * present).sum(1), n_present),
            "macro_f1": _div((f1 * present).sum(1), n_present)}


def bootstrap_intervals(y_true: Sequence[int], y_pred: Sequence[int], k_classes: int, *,
                        groups: Sequence[Hashable | None] | None = None, n_boot: int = 1000, seed: int = 0,
                        level: float = 0.95) -> dict[str, list[float] | None]:
    """Percentile-bootstrap intervals of accuracy, balanced accuracy and macro F1.

    Parameters
    ----------
    y_true, y_pred : sequence of int
        True and predicted class indices, in ``range(k_classes)``.
    k_classes : int
        Number of classes.
    groups : sequence, optional
        The group (specimen) of each image; None entries are groups of their own. Given groups, whole
        groups are resampled, so that images that succeed or fail together are not counted as
        independent evidence. Without, images are resampled.
    n_boot : int, keyword-only
        Number of resamples.
    seed : int, keyword-only
        Same inputs, same seed, same interval.
    level : float, keyword-only
        Coverage, in (0, 1): 0.95 gives the 2.5th and 97.5th percentiles.

    Returns
    -------
    dict
        ``{"accuracy": [lo, hi], "balanced_accuracy": [lo, hi], "macro_f1": [lo, hi]}``; each None when
        there are no images. Macro averages run over the classes present in each resample, as in
        `confusion_report`.

    Notes
    -----
    Every metric here is a function of the confusion matrix, so a resample is drawn as a matrix: over
    images, the N draws fall into the cells as Multinomial(N, counts / N), which is exactly the law of
    resampling N images with replacement and costs O(K^2) per resample whatever N; over G groups, the
    G draws give each group a weight (Multinomial(G, 1/G)) and the matrix is the weighted sum of the
    groups' matrices. 1000 resamples of 2000 images in 10 classes take a few milliseconds.
    """
    y = np.asarray(y_true, dtype=int)
    p = np.asarray(y_pred, dtype=int)
    n, k = len(y), int(k_classes)
    if len(p) != n or (groups is not None and len(groups) != n):
        raise ValueError(f"y_true, y_pred and groups must have one entry per image: {n}, {len(p)}, "
                         f"{None if groups is None else len(groups)}")
    if n_boot < 1 or not 0 < level < 1:
        raise ValueError(f"need n_boot >= 1 and 0 < level < 1, got n_boot={n_boot}, level={level}")
    if n == 0:
        return {m: None for m in INTERVAL_METRICS}
    if ((y < 0) | (y >= k) | (p < 0) | (p >= k)).any():
        raise ValueError(f"class indices must be in range({k})")
    rng = np.random.default_rng(seed)
    cells = y * k + p
    if groups is None:
        counts = np.bincount(cells, minlength=k * k)
        draws = rng.multinomial(n, counts / n, size=n_boot)
    else:
        index: dict = {}
        gid = np.array([index.setdefault(g if g is not None else ("\0", i), len(index))
                        for i, g in enumerate(groups)])
        per_group = np.zeros((len(index), k * k))
        np.add.at(per_group, (gid, cells), 1)
        weights = rng.multinomial(len(index), np.full(len(index), 1 / len(index)), size=n_boot)
        draws = weights @ per_group
    values = _batch_metrics(draws.reshape(n_boot, k, k))
    tail = (1 - level) / 2
    return {m: [float(v) for v in np.quantile(values[m], [tail, 1 - tail])] for m in INTERVAL_METRICS}


def fold_summary(values: Sequence[float]) -> dict:
    """Mean, standard deviation and 95 % Student-t interval of a metric over cross-validation folds.

    Parameters
    ----------
    values : sequence of float
        One value per fold.

    Returns
    -------
    dict
        ``{"mean", "std", "ci95": [lo, hi], "n"}``: ``std`` is the sample standard deviation (ddof=1)
        and ``ci95`` is ``mean -/+ t(0.975, n - 1) * std / sqrt(n)``. With one fold ``std`` and ``ci95``
        are None. The interval is not clipped: with few, spread folds it can pass 1 for a score, which
        says the folds are too few to pin the figure down.

    Raises
    ------
    ValueError
        No values.
    """
    from scipy.stats import t  # here, not at the top: scipy.stats costs 0.3 s to import

    v = np.asarray(values, dtype=float)
    if v.ndim != 1 or len(v) == 0:
        raise ValueError("fold_summary needs one value per fold, got none")
    mean = float(v.mean())
    if len(v) < 2:
        return {"mean": mean, "std": None, "ci95": None, "n": 1}
    std = float(v.std(ddof=1))
    half = float(t.ppf(0.975, len(v) - 1) * std / np.sqrt(len(v)))
    return {"mean": mean, "std": std, "ci95": [mean - half, mean + half], "n": int(len(v))}


def confusion_report(y_true: Sequence[int], probs: np.ndarray, classes: Sequence[str],
                     paths: Sequence[str] | None = None, *, top_k: int | None = None,
                     groups: Sequence[Hashable | None] | None = None, intervals: bool = True) -> dict:
    """Everything about a set of softmax outputs `probs` (N, K) against true labels (N,).

    With ``intervals`` (default), ``overall["ci95"]`` holds 95 % bootstrap intervals of accuracy,
    balanced accuracy and macro F1 (`bootstrap_intervals`, 1000 resamples, seed 0: the same data gives
    the same interval), resampling whole `groups` (one per image) when given; ``overall["ci_method"]``
    says which. Without, both are None."""
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
        "ci95": None,
        "ci_method": None,
    }
    if intervals and n:
        n_boot = 1000
        overall["ci95"] = bootstrap_intervals(y, pred, k, groups=groups, n_boot=n_boot)
        n_groups = len({g if g is not None else ("\0", i) for i, g in enumerate(groups)}) if groups is not None else 0
        overall["ci_method"] = (f"bootstrap over {n_groups} groups ({n_boot} resamples)" if groups is not None
                                else f"bootstrap over images ({n_boot} resamples)")
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

from __future__ import annotations

import json

import numpy as np
import pytest

from microcli.metrics import REPORT_SCHEMA_VERSION, bootstrap_intervals, confusion_report, fold_summary
from microcli.report import report_text


def one_hot(pred, k):
    probs = np.full((len(pred), k), 0.1 / k)
    probs[np.arange(len(pred)), pred] = 0.9
    return probs


def labels_with_errors(n, k, wrong_every, seed=0):
    """n images in k classes; every `wrong_every`-th image predicted as the next class."""
    y = np.random.default_rng(seed).integers(0, k, n)
    pred = y.copy()
    pred[::wrong_every] = (y[::wrong_every] + 1) % k
    return y, pred


def test_fold_summary_is_the_student_t_interval():
    s = fold_summary([0.8, 0.9, 1.0])
    # mean 0.9, sample std 0.1, t(0.975, df=2) = 4.302653
    assert s["mean"] == pytest.approx(0.9) and s["std"] == pytest.approx(0.1) and s["n"] == 3
    half = 4.302653 * 0.1 / np.sqrt(3)
    assert s["ci95"] == pytest.approx([0.9 - half, 0.9 + half], abs=1e-6)
    assert fold_summary([0.7, 0.7]) == {"mean": 0.7, "std": 0.0, "ci95": [0.7, 0.7], "n": 2}
    assert fold_summary([0.5]) == {"mean": 0.5, "std": None, "ci95": None, "n": 1}
    with pytest.raises(ValueError, match="one value per fold"):
        fold_summary([])


def test_bootstrap_of_all_correct_predictions_is_one_one():
    y = np.repeat(np.arange(4), 5)
    ci = bootstrap_intervals(y, y, 4)
    assert ci == {"accuracy": [1.0, 1.0], "balanced_accuracy": [1.0, 1.0], "macro_f1": [1.0, 1.0]}
    assert bootstrap_intervals(y, y, 4, groups=y) == ci


def test_bootstrap_interval_of_a_tiny_case_by_hand():
    # 2 images, one right: a resample holds 0, 1 or 2 right ones with probabilities 1/4, 1/2, 1/4,
    # so the 2.5th and 97.5th percentiles of accuracy are 0 and 1, and with level 0.4 both are 0.5.
    y, pred = [0, 1], [0, 0]
    assert bootstrap_intervals(y, pred, 2, n_boot=4000)["accuracy"] == [0.0, 1.0]
    assert bootstrap_intervals(y, pred, 2, n_boot=4000, level=0.4)["accuracy"] == [0.5, 0.5]


def test_bootstrap_interval_contains_the_estimate_and_narrows_with_more_data():
    widths = []
    for n in (60, 600, 6000):
        y, pred = labels_with_errors(n, 3, wrong_every=8)
        ci = bootstrap_intervals(y, pred, 3)
        report = confusion_report(y, one_hot(pred, 3), ["a", "b", "c"])
        for m in ("accuracy", "balanced_accuracy", "macro_f1"):
            assert ci[m][0] <= report["overall"][m] <= ci[m][1], (n, m)
        assert report["overall"]["ci95"] == ci
        widths.append(ci["accuracy"][1] - ci["accuracy"][0])
    assert widths[0] > 2 * widths[1] > 4 * widths[2] > 0  # about 1/sqrt(n): 3.2x per step


def test_group_bootstrap_is_wider_when_a_groups_images_fail_together():
    # 20 specimens of 10 images; the model gets a specimen entirely right or entirely wrong (6 of 20).
    groups = np.repeat(np.arange(20), 10)
    y = groups % 2
    pred = np.where(np.isin(groups, [0, 3, 7, 10, 15, 18]), 1 - y, y)
    by_image = bootstrap_intervals(y, pred, 2)
    by_group = bootstrap_intervals(y, pred, 2, groups=groups)
    for m in by_image:
        assert by_group[m][1] - by_group[m][0] > 2 * (by_image[m][1] - by_image[m][0]), m
        assert by_group[m][0] < 0.7 < by_group[m][1]


def test_bootstrap_is_deterministic_for_a_seed():
    y, pred = labels_with_errors(200, 4, wrong_every=5)
    assert bootstrap_intervals(y, pred, 4, seed=3) == bootstrap_intervals(y, pred, 4, seed=3)
    assert bootstrap_intervals(y, pred, 4, seed=3) != bootstrap_intervals(y, pred, 4, seed=4)


def test_macro_averages_in_a_resample_run_over_the_classes_it_holds():
    # class 2 has one image, predicted right; resamples without it must not count it as a 0 recall
    y, pred = [0, 0, 1, 1, 2], [0, 0, 1, 1, 2]
    assert bootstrap_intervals(y, pred, 3)["balanced_accuracy"] == [1.0, 1.0]


def test_report_carries_intervals_and_the_method():
    y, pred = labels_with_errors(300, 3, wrong_every=10)
    r = confusion_report(y, one_hot(pred, 3), ["a", "b", "c"])
    assert r["schema_version"] == REPORT_SCHEMA_VERSION == 2
    assert r["overall"]["ci_method"] == "bootstrap over images (1000 resamples)"
    assert set(r["overall"]["ci95"]) == {"accuracy", "balanced_accuracy", "macro_f1"}
    grouped = confusion_report(y, one_hot(pred, 3), ["a", "b", "c"], groups=[i // 5 for i in range(300)])
    assert grouped["overall"]["ci_method"] == "bootstrap over 60 groups (1000 resamples)"
    off = confusion_report(y, one_hot(pred, 3), ["a", "b", "c"], intervals=False)
    assert off["overall"]["ci95"] is None and off["overall"]["ci_method"] is None
    json.dumps(grouped)  # plain JSON types only
    acc = r["overall"]["accuracy"]
    lo, hi = r["overall"]["ci95"]["accuracy"]
    assert f"{100 * acc:.1f} % ({100 * lo:.1f}-{100 * hi:.1f})" in report_text(r)
    assert "bootstrap over images (1000 resamples)" in report_text(r)

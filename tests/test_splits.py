from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from microcli.data import Item
from microcli.errors import DataError, UsageError
from microcli.splits import (
    groups_from_names,
    per_class_counts,
    stratified_group_kfold,
    stratified_group_split,
)


def make_items(seed: int, groups_per_class: dict[str, int], *, max_size: int = 6, mixed: int = 0) -> list[Item]:
    """Uneven groups (1..max_size images each); `mixed` extra groups hold images of two classes."""
    rng = np.random.default_rng(seed)
    items = []
    for label, n_groups in groups_per_class.items():
        for g in range(n_groups):
            for j in range(int(rng.integers(1, max_size + 1))):
                items.append(Item(f"{label}/{label}-{g}_{j}.png", label, f"{label}-{g}"))
    labels = list(groups_per_class)
    for m in range(mixed):
        a, b = rng.choice(labels, 2, replace=False)
        items += [Item(f"mix/m{m}_a.png", str(a), f"mix-{m}"), Item(f"mix/m{m}_b.png", str(b), f"mix-{m}")]
    order = rng.permutation(len(items))
    return [items[i] for i in order]


DATASETS = {
    "uneven": {"a": 1, "b": 2, "c": 3, "d": 8, "e": 30},
    "balanced": {"a": 10, "b": 10, "c": 10},
    "tiny": {"a": 2, "b": 3, "c": 4},
}


def sides_of_groups(result) -> dict[str, set[str]]:
    out = defaultdict(set)
    for side, items in result.splits().items():
        for it in items:
            out[it.group].add(side)
    return out


def groups_of(items, label):
    return {it.group for it in items if it.label == label}


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("name", DATASETS)
@pytest.mark.parametrize(("val", "test"), [(0.2, 0.0), (0.0, 0.25), (0.2, 0.2), (0.3, 0.1)])
def test_a_group_never_straddles_two_sides(seed, name, val, test):
    items = make_items(seed, DATASETS[name], mixed=2)
    r = stratified_group_split(items, val=val, test=test, seed=seed)
    assert sorted(map(repr, r.train + r.val + r.test)) == sorted(map(repr, items))  # nothing lost or doubled
    straddling = {g: s for g, s in sides_of_groups(r).items() if len(s) > 1}
    assert straddling == {}
    asked = [s for s, f in (("val", val), ("test", test)) if f > 0]
    for label in DATASETS[name]:  # every class is trained on, and held out or named in a warning
        assert groups_of(r.train, label)
        for side in asked:
            assert groups_of(getattr(r, side), label) or any(f"'{label}'" in w for w in r.warnings), (label, side)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("val", "test"), [(0.2, 0.0), (0.0, 0.2), (0.2, 0.2)])
def test_every_class_with_groups_to_spare_is_on_each_held_out_side_and_in_train(seed, val, test):
    items = make_items(seed, DATASETS["uneven"])
    r = stratified_group_split(items, val=val, test=test, seed=seed)
    asked = [s for s, f in (("val", val), ("test", test)) if f > 0]
    for label in "bcde":
        n_groups = len(groups_of(items, label))
        assert groups_of(r.train, label), label
        for side in asked:
            if n_groups == 2 and len(asked) == 2 and side == "val":
                continue  # the documented rule: train and test, not val
            assert groups_of(getattr(r, side), label), (label, side)


def test_two_groups_with_val_and_test_go_to_train_and_test_with_a_warning():
    items = make_items(0, {"a": 2, "b": 10})
    r = stratified_group_split(items, val=0.2, test=0.2, seed=0)
    assert len(groups_of(r.train, "a")) == 1 and len(groups_of(r.test, "a")) == 1
    assert not groups_of(r.val, "a")
    assert any("'a' has only 2 groups" in w and "val has none of it" in w for w in r.warnings)


def test_a_single_group_class_is_named_in_a_warning_and_kept_in_train():
    items = make_items(1, {"lonely": 1, "b": 6, "c": 6})
    for val, test in ((0.2, 0.0), (0.2, 0.2)):
        r = stratified_group_split(items, val=val, test=test, seed=0)
        assert [it for it in r.train if it.label == "lonely"] == [it for it in items if it.label == "lonely"]
        assert not [it for it in r.val + r.test if it.label == "lonely"]
        (w,) = [w for w in r.warnings if "lonely" in w]
        assert "single group ('lonely-0'" in w and "stays in train" in w
    assert not [w for w in r.warnings if "'b'" in w or "'c'" in w]


def test_a_single_group_warning_counts_the_class_images_in_it_not_the_groups():
    # Group 'S1' holds 2 images of 'rare' and 4 of 'common' (one group per specimen, several classes).
    items = ([Item(f"r{i}.png", "rare", "S1") for i in range(2)] + [Item(f"c{i}.png", "common", "S1") for i in range(4)]
             + [Item(f"d{i}.png", "common", f"S{2 + i}") for i in range(6)])
    (w,) = [w for w in stratified_group_split(items, val=0.3, seed=0).warnings if "'rare'" in w]
    assert "a single group ('S1', 2 images)" in w, w


def test_a_single_ungrouped_image_is_named_too():
    items = [Item("x.png", "rare")] + [Item(f"{i}.png", "common") for i in range(10)]
    r = stratified_group_split(items, val=0.3, seed=0)
    assert r.train[0] == items[0] or items[0] in r.train
    assert r.warnings == ("class 'rare' has a single image: it cannot be held out and stays in train",)


def test_fractions_are_close_to_the_asked_ones_per_class():
    items = make_items(5, {"a": 40, "b": 60, "c": 25, "d": 80}, max_size=4)
    r = stratified_group_split(items, val=0.2, test=0.2, seed=2)
    counts = per_class_counts(r.splits(), ["a", "b", "c", "d"])
    for label in "abcd":
        total = sum(counts[s][label] for s in counts)
        for side in ("val", "test"):
            assert 0.12 <= counts[side][label] / total <= 0.28, (label, side, counts)
    assert len(r.val) / len(items) == pytest.approx(0.2, abs=0.04)
    assert len(r.test) / len(items) == pytest.approx(0.2, abs=0.04)


def test_ungrouped_images_split_one_by_one_with_exact_fractions():
    items = [Item(f"{c}{i}.png", c) for c in "ab" for i in range(50)]
    r = stratified_group_split(items, val=0.3, test=0.1, seed=0)
    assert per_class_counts(r.splits(), ["a", "b"]) == {"train": {"a": 30, "b": 30}, "val": {"a": 15, "b": 15},
                                                        "test": {"a": 5, "b": 5}}


def test_same_seed_same_split_other_seed_other_split():
    items = make_items(3, DATASETS["balanced"])
    a = stratified_group_split(items, val=0.2, test=0.2, seed=7)
    assert a == stratified_group_split(items, val=0.2, test=0.2, seed=7)
    assert a.val != stratified_group_split(items, val=0.2, test=0.2, seed=8).val


@pytest.mark.parametrize(("val", "test", "match"), [
    (1.2, 0.0, r"--val must be in \[0, 1\), got 1.2"),
    (0.2, -0.1, r"--test must be in \[0, 1\), got -0.1"),
    (0.6, 0.5, r"--val \+ --test must leave something to train on, got 0.6 \+ 0.5 = 1.1"),
    (0.0, 0.0, "nothing to hold out"),
])
def test_fractions_out_of_range_are_usage_errors(val, test, match):
    with pytest.raises(UsageError, match=match):
        stratified_group_split([Item("a.png", "a"), Item("b.png", "b")], val=val, test=test)


def test_per_class_counts_lists_every_class_on_every_side():
    r = stratified_group_split(make_items(0, {"a": 3, "b": 5}), val=0.2, seed=0)
    images = per_class_counts(r.splits(), ["a", "b", "never"])
    groups = per_class_counts(r.splits(), ["a", "b", "never"], groups=True)
    assert images["val"]["never"] == 0 and groups["train"]["never"] == 0
    assert sum(images[s]["a"] for s in images) == sum(1 for it in r.train + r.val if it.label == "a")
    assert sum(groups[s]["b"] for s in groups) == 5


# --- k-fold --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("name", DATASETS)
def test_kfold_tests_every_item_once_and_keeps_groups_whole(seed, name):
    items = make_items(seed, DATASETS[name], mixed=2)
    f = stratified_group_kfold(items, k=3, seed=seed)
    tested = np.concatenate([test for _, test in f.indices()])
    assert sorted(tested) == list(range(len(items)))
    for train, test in f.indices():
        assert not {items[i].group for i in train} & {items[i].group for i in test}
    folds_of_group = defaultdict(set)
    for it, fold in zip(items, f.fold):
        folds_of_group[it.group].add(int(fold))
    assert all(len(s) == 1 for s in folds_of_group.values())


@pytest.mark.parametrize("seed", range(3))
def test_kfold_puts_classes_with_k_groups_in_every_fold_and_warns_about_the_others(seed):
    items = make_items(seed, DATASETS["uneven"])
    f = stratified_group_kfold(items, k=5, seed=seed)
    for fold in range(5):
        tested = {items[i].label for i in np.flatnonzero(f.fold == fold)}
        assert {"d", "e"} <= tested
        trained = {items[i].label for i in np.flatnonzero(f.fold != fold)}
        assert {"b", "c", "d", "e"} <= trained  # 2+ groups: spread, so training always sees them
    assert len(f.warnings) == 3
    assert "class 'a' has 1 group for k=5 folds: 4 fold(s) test without it, and the fold that tests it trains " \
           "without it" in f.warnings
    assert "class 'c' has 3 groups for k=5 folds: 2 fold(s) test without it" in f.warnings
    assert np.array_equal(f.fold, stratified_group_kfold(items, k=5, seed=seed).fold)


@pytest.mark.parametrize(("k", "match"), [(1, r"needs k >= 2 folds, got k=1"),
                                          (7, r"k=7 folds need at least 7 groups to hold out; the data has 6")])
def test_kfold_refuses_impossible_k(k, match):
    items = make_items(0, {"a": 3, "b": 3})
    with pytest.raises(DataError, match=match):
        stratified_group_kfold(items, k=k)


# --- --group-by ----------------------------------------------------------------------------------------

NAMES = [Item("data/ferrite/s01_field3.png", "ferrite"), Item("/abs/ferrite/s01_field4.png", "ferrite"),
         Item("data/pearlite/s02_field1.png", "pearlite", "old-group")]


def test_group_by_takes_the_first_capture_group_of_the_base_name():
    out = groups_from_names(NAMES, r"^(s\d+)_")
    assert [it.group for it in out] == ["s01", "s01", "s02"]
    assert [(it.path, it.label) for it in out] == [(it.path, it.label) for it in NAMES]


def test_group_by_without_a_capture_group_takes_the_whole_match():
    assert [it.group for it in groups_from_names(NAMES, r"s\d+")] == ["s01", "s01", "s02"]
    assert [it.group for it in groups_from_names(NAMES, r"field\d")] == ["field3", "field4", "field1"]


def test_group_by_that_misses_a_name_names_the_file_and_the_pattern():
    with pytest.raises(DataError, match=r"--group-by 'field4' finds no group in 2 file name\(s\): "
                                        r"data/ferrite/s01_field3.png, data/pearlite/s02_field1.png"):
        groups_from_names(NAMES, "field4")
    with pytest.raises(DataError, match="finds no group in 3"):  # an optional capture group that took nothing
        groups_from_names(NAMES, r"(x)?s\d")


def test_group_by_matches_the_base_name_only():
    with pytest.raises(DataError, match="finds no group"):
        groups_from_names(NAMES, r"ferrite")


def test_invalid_group_by_regex_is_a_usage_error():
    with pytest.raises(UsageError, match=r"--group-by '\(s\\d\+' is not a valid regular expression"):
        groups_from_names(NAMES, r"(s\d+")
    assert UsageError.exit_code == 2


def _specimens(spec: list[tuple[str, str, int]]) -> list[Item]:
    """Items from (specimen, class, images) rows: a specimen may hold several classes."""
    return [Item(f"{g}/{c}_{j}.png", c, g) for g, c, n in spec for j in range(n)]


def test_a_class_in_shared_specimens_is_trained_on_where_an_exchange_of_specimens_allows_it():
    # c1 lives only in s0 and s2, which also hold c0. The first assignment put s0 in val and s2 in test;
    # a single move of either would take c0's last group from that side, so c1 used to get no training
    # image. Swapping s0 with s1 keeps every class on every side it needs.
    items = _specimens([("s0", "c0", 2), ("s0", "c1", 1), ("s1", "c0", 1), ("s2", "c1", 1), ("s2", "c0", 3)])
    r = stratified_group_split(items, val=0.3, test=0.3, seed=5)
    assert groups_of(r.train, "c1") and groups_of(r.test, "c1")
    assert groups_of(r.train, "c0") and groups_of(r.val, "c0") and groups_of(r.test, "c0")
    assert not [w for w in r.warnings if "no group in" in w], r.warnings


@pytest.mark.parametrize(("val", "test"), [(0.3, 0.3), (0.2, 0.2)])
def test_every_class_with_two_specimens_or_more_is_trained_on_when_specimens_hold_several_classes(val, test):
    rng = np.random.default_rng(7)
    for trial in range(150):
        spec = [(f"s{g}", f"c{c}", int(rng.integers(1, 4)))
                for g in range(int(rng.integers(3, 7)))
                for c in rng.choice(3, int(rng.integers(1, 4)), replace=False)]
        items = _specimens(spec)
        r = stratified_group_split(items, val=val, test=test, seed=trial % 10)
        for label in {it.label for it in items}:
            assert groups_of(r.train, label), (trial, label, spec, r.warnings)

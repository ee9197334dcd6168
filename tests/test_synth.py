from __future__ import annotations

import csv
import hashlib
from collections import Counter

import numpy as np
from typer.testing import CliRunner

from microcli.cli.app import app
from microcli.data import Item, discover
from microcli.io import read_image
from microcli.splits import stratified_group_kfold
from microcli.synth import CLASSES, SynthSpec, class_sizes, generate, write_dataset

from .conftest import REPO

CLASSES_FIRST, CLASSES_LAST = list(CLASSES)[0], list(CLASSES)[-1]


def digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.png"))}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        list(write_dataset(tmp_path / name, SynthSpec(per_class=2, size=48, seed=seed)))
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    da, dc = digest(tmp_path / "a"), digest(tmp_path / "c")
    assert da.keys() == dc.keys() and all(da[k] != dc[k] for k in da)


def test_class_folders_and_counts(tmp_path):
    paths = list(write_dataset(tmp_path, SynthSpec(per_class=3, size=48)))
    assert len(CLASSES) >= 5
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(CLASSES)
    assert len(paths) == 3 * len(CLASSES)


def test_more_images_keep_the_first_ones():
    a = generate("lamellar", seed=1, index=0, size=64)
    np.testing.assert_array_equal(a, generate("lamellar", seed=1, index=0, size=64))
    assert not np.array_equal(a, generate("lamellar", seed=1, index=1, size=64))


def test_classes_not_separable_by_mean_grey_alone():
    means = {c: [float(generate(c, seed=0, index=i, size=64).mean()) for i in range(12)] for c in CLASSES}
    ranges = sorted((min(v), max(v)) for v in means.values())
    overlaps = sum(ranges[i][1] > ranges[i + 1][0] for i in range(len(ranges) - 1))
    assert overlaps >= len(CLASSES) - 2


def test_16_bit_output(tmp_path):
    list(write_dataset(tmp_path, SynthSpec(per_class=1, size=48, bit_depth=16, classes=("porosity",))))
    img = read_image(tmp_path / "porosity" / "porosity_0000.png")
    assert img.bit_depth == 16


# --- specimens and imbalance ---------------------------------------------------------------------------

def manifest_rows(folder):
    with open(folder / "manifest.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_without_the_new_options_the_bytes_of_sample_images_do_not_change(tmp_path):
    # sample_images/ was made with `microcli synth sample_images --per-class 32 --size 96 --seed 0`
    list(write_dataset(tmp_path, SynthSpec(per_class=2, size=96, seed=0, specimens=0, imbalance=1.0)))
    made = digest(tmp_path)
    assert len(made) == 12
    assert made == {k: v for k, v in digest(REPO / "sample_images").items() if k in made}


def test_specimens_write_a_manifest_with_one_group_per_specimen(tmp_path):
    paths = list(write_dataset(tmp_path, SynthSpec(per_class=7, size=32, specimens=3,
                                                   classes=("equiaxed", "porosity"))))
    assert paths[-1] == tmp_path / "manifest.csv" and len(paths) == 15
    rows = manifest_rows(tmp_path)
    assert list(rows[0]) == ["path", "label", "group"] and len(rows) == 14
    assert rows[:4] == [
        {"path": "equiaxed/equiaxed_s00_0000.png", "label": "equiaxed", "group": "equiaxed_s00"},
        {"path": "equiaxed/equiaxed_s01_0001.png", "label": "equiaxed", "group": "equiaxed_s01"},
        {"path": "equiaxed/equiaxed_s02_0002.png", "label": "equiaxed", "group": "equiaxed_s02"},
        {"path": "equiaxed/equiaxed_s00_0003.png", "label": "equiaxed", "group": "equiaxed_s00"}]
    assert Counter(r["group"] for r in rows) == {"equiaxed_s00": 3, "equiaxed_s01": 2, "equiaxed_s02": 2,
                                                 "porosity_s00": 3, "porosity_s01": 2, "porosity_s02": 2}
    assert all((tmp_path / r["path"]).is_file() for r in rows)
    found = discover(tmp_path / "manifest.csv")  # what grouped training reads
    assert not found.presplit and {it.group for it in found.items()} == {r["group"] for r in rows}
    assert discover(tmp_path).classes == ["equiaxed", "porosity"]  # the class folders still read as before


def test_class_sizes_fall_geometrically_by_the_imbalance_ratio(tmp_path):
    spec = SynthSpec(per_class=40, size=32, imbalance=8, specimens=2)
    sizes = class_sizes(spec)
    assert list(sizes) == list(CLASSES) and sizes[CLASSES_FIRST] == 40 and sizes[CLASSES_LAST] == 5
    steps = np.array(list(sizes.values()), float)
    np.testing.assert_allclose(steps[:-1] / steps[1:], 8 ** (1 / 5), rtol=0.15)
    assert class_sizes(SynthSpec(per_class=10, imbalance=100))[CLASSES_LAST] == 2  # never below 2
    assert set(class_sizes(SynthSpec(per_class=10)).values()) == {10}
    list(write_dataset(tmp_path, SynthSpec(per_class=12, size=32, imbalance=4, classes=("lamellar", "dendritic",
                                                                                          "martensite"))))
    assert {d.name: len(list(d.glob("*.png"))) for d in tmp_path.iterdir()} == {"lamellar": 12, "dendritic": 6,
                                                                                  "martensite": 3}


def test_specimens_same_seed_same_bytes(tmp_path):
    spec = dict(per_class=6, size=32, specimens=2, imbalance=3, classes=("lamellar", "spheroidite"))
    for name, seed in (("a", 4), ("b", 4), ("c", 5)):
        list(write_dataset(tmp_path / name, SynthSpec(seed=seed, **spec)))
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert (tmp_path / "a" / "manifest.csv").read_bytes() == (tmp_path / "b" / "manifest.csv").read_bytes()
    da, dc = digest(tmp_path / "a"), digest(tmp_path / "c")
    assert da.keys() == dc.keys() and all(da[k] != dc[k] for k in da)


def test_images_of_a_specimen_are_alike_so_a_random_split_overstates_accuracy(tmp_path):
    """1-nearest-neighbour on six grey-level statistics, out-of-fold over 4 folds: with folds that split
    specimens, a test image finds its sibling in training; with folds of whole specimens it cannot."""
    from sklearn.neighbors import KNeighborsClassifier

    list(write_dataset(tmp_path, SynthSpec(per_class=24, size=48, specimens=4, seed=0)))
    items = discover(tmp_path / "manifest.csv").items()

    def stats(path):
        a = read_image(path).data
        gy, gx = np.gradient(a)
        return [a.mean(), a.std(), *np.percentile(a, [10, 50, 90]), np.abs(gx).mean() + np.abs(gy).mean()]

    x = np.array([stats(it.path) for it in items])
    x = (x - x.mean(0)) / x.std(0)
    y = np.array([it.label for it in items])

    def out_of_fold_accuracy(folds):
        pred = np.empty(len(y), dtype=object)
        for train, test in folds.indices():
            pred[test] = KNeighborsClassifier(1).fit(x[train], y[train]).predict(x[test])
        return float((pred == y).mean())

    random = out_of_fold_accuracy(stratified_group_kfold([Item(it.path, it.label) for it in items], k=4))
    grouped = out_of_fold_accuracy(stratified_group_kfold(items, k=4))
    assert random > 0.85 and grouped < random - 0.25, (random, grouped)


def test_cli_synth_specimens_and_imbalance(tmp_path):
    r = CliRunner().invoke(app, ["synth", str(tmp_path / "s"), "--per-class", "8", "--size", "32",
                                 "--specimens", "2", "--imbalance", "4"])
    assert r.exit_code == 0, r.stderr
    # 8 * 4 ** (-j / 5) for j = 0..5, rounded
    assert "wrote 27 images in 6 classes (equiaxed 8, lamellar 6, spheroidite 5, dendritic 3, porosity 3, " \
           "martensite 2)" in " ".join(r.stderr.split())
    assert len(manifest_rows(tmp_path / "s")) == 27
    r = CliRunner().invoke(app, ["synth", str(tmp_path / "s"), "--per-class", "8", "--size", "32",
                                 "--specimens", "2"])
    assert r.exit_code == 1 and "manifest.csv: exists (use --force to overwrite)" in " ".join(r.stderr.split())
    r = CliRunner().invoke(app, ["synth", str(tmp_path / "t"), "--imbalance", "0.5"])
    assert r.exit_code == 2

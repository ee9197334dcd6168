from __future__ import annotations

import hashlib

import numpy as np

from microcli.io import read_image
from microcli.synth import CLASSES, SynthSpec, generate, write_dataset


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

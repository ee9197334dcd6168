"""Class maps and area fractions from `predict --tile --map` / `--fractions`."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from microcli.classmap import class_map
from microcli.cli.app import app

from .conftest import SIDE, SIZE, noise, save

runner = CliRunner()


def predict(*args):
    return runner.invoke(app, ["predict", *map(str, args), "--workers", "0"])


@pytest.fixture(scope="module")
def montage(tmp_path_factory):
    """192 x 96: the left half plain noise, the right half four 48 px cells each with a bright square."""
    rng = np.random.default_rng(3)
    img = noise(rng, 96, 192)
    for y0 in (0, 48):
        for x0 in (96, 144):
            y, x = (int(v) for v in rng.integers(4, SIZE - SIDE - 4, 2))
            img[y0 + y:y0 + y + SIDE, x0 + x:x0 + x + SIDE] = 0.95
    return save(tmp_path_factory.mktemp("montage") / "halves.png", img)


def test_overlapping_tiles_are_averaged_per_pixel_not_last_wins():
    tiles = [(0, 0, np.array([0.6, 0.4])), (5, 0, np.array([0.45, 0.55]))]  # overlap: columns 5-9
    cm = class_map((10, 15), tiles, 10)
    assert list(cm.x_edges) == [0, 5, 10, 15] and list(cm.y_edges) == [0, 10]
    np.testing.assert_allclose(cm.probs[0, 1], [0.525, 0.475])  # the mean; the later tile alone says class 1
    assert list(cm.labels[0]) == [0, 0, 1]
    np.testing.assert_allclose(cm.fractions, [10 / 15, 5 / 15])
    assert cm.fractions.sum() == pytest.approx(1.0)


def test_label_image_samples_the_cells():
    cm = class_map((4, 8), [(0, 0, np.array([1.0, 0.0])), (4, 0, np.array([0.0, 1.0]))], 4)
    lab = cm.label_image(2, 4)
    assert lab.tolist() == [[0, 0, 1, 1], [0, 0, 1, 1]]


def test_uncovered_pixels_are_an_error():
    with pytest.raises(ValueError, match="uncovered"):
        class_map((10, 20), [(0, 0, np.array([1.0]))], 10)


@pytest.mark.parametrize("stride, tolerance", [(48, 1e-6), (24, 0.13)])
def test_fractions_of_a_montage_of_known_halves(squares_run, montage, tmp_path, stride, tolerance):
    """Aligned tiles give the halves exactly; overlapping ones move the border by at most one stride
    (24 px of 192: 0.125)."""
    r = predict(squares_run, montage, "--tile", 48, "--stride", stride, "--map", tmp_path / "maps", "--all-probs")
    assert r.exit_code == 0, r.stderr
    row = next(csv.DictReader(io.StringIO(r.stdout)))
    fr = {c: float(row[f"frac_{c}"]) for c in ("plain", "square")}
    assert sum(fr.values()) == pytest.approx(1.0, abs=1e-5)
    assert fr["plain"] == pytest.approx(0.5, abs=tolerance) and fr["square"] == pytest.approx(0.5, abs=tolerance)
    pic = np.asarray(Image.open(tmp_path / "maps" / "halves_classmap.png").convert("RGB"))
    assert pic.shape[1] > 512  # the map (at least 256 px high, so > 512 wide) and its legend


def test_jsonl_rows_carry_a_fractions_object(squares_run, montage):
    r = predict(squares_run, montage, "--tile", 48, "--fractions", "--format", "jsonl")
    assert r.exit_code == 0, r.stderr
    row = json.loads(r.stdout)
    assert set(row["fractions"]) == {"plain", "square"} and sum(row["fractions"].values()) == pytest.approx(1.0)
    assert not any(k.startswith("frac_") for k in row)


def test_class_map_picture_shows_both_classes_in_their_colours(squares_run, montage, tmp_path):
    from microcli.figures import class_colors, hex_rgb

    r = predict(squares_run, montage, "--tile", 48, "--map", tmp_path / "maps")
    assert r.exit_code == 0, r.stderr
    pic = np.asarray(Image.open(tmp_path / "maps" / "halves_classmap.png").convert("RGB")).astype(int)
    for colour in class_colors(2):  # each class's legend swatch is drawn in its colour
        assert (np.abs(pic - np.array(hex_rgb(colour))).sum(-1) == 0).sum() > 100


def test_map_and_fractions_need_tiles(squares_run, montage, tmp_path):
    r = predict(squares_run, montage, "--map", tmp_path / "maps")
    assert r.exit_code == 2 and "--map needs --tile" in r.stderr
    assert predict(squares_run, montage, "--fractions").exit_code == 2

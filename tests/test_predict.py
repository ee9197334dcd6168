from __future__ import annotations

import csv
import io
import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from microcli.checkpoint import load_bundle
from microcli.cli.app import app
from microcli.inputs import prepare_array
from microcli.inference import Predictor
from microcli.io import write_image
from microcli.predict import aggregate, shard_of
from microcli.synth import generate

from .conftest import REPO

runner = CliRunner()
SAMPLE = REPO / "sample_images"


def invoke(*args, input=None):
    return runner.invoke(app, ["predict", *map(str, args), "--workers", "0"], input=input)


@pytest.fixture(scope="module")
def direct(trained_run):
    """The bundle's own predictions, computed without the predict command."""
    pred = Predictor(load_bundle(trained_run))
    files = sorted(str(p) for p in (SAMPLE / "porosity").glob("*.png"))
    probs = pred.predict_arrays([prepare_array(f, pred.spec) for f in files])
    return {f: (pred.classes[p.argmax()], float(p.max()), p) for f, p in zip(files, probs)}


def test_csv_rows_equal_direct_predictions_in_input_order(trained_run, direct):
    r = invoke(trained_run, SAMPLE / "porosity", "--all-probs")
    assert r.exit_code == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [row["path"] for row in rows] == sorted(direct)
    classes = load_bundle(trained_run).classes
    for row in rows:
        cls, conf, probs = direct[row["path"]]
        assert row["class"] == cls and float(row["confidence"]) == pytest.approx(conf, abs=1e-5)
        np.testing.assert_allclose([float(row[f"p_{c}"]) for c in classes], probs, atol=1e-5)


def test_jsonl_and_tsv_parse_with_the_standard_library(trained_run, direct):
    r = invoke(trained_run, SAMPLE / "porosity", "--format", "jsonl", "--top-k", "3", "--min-confidence", "0.9")
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == 32 and set(rows[0]) == {"path", "class", "confidence", "uncertain", "top2_class",
                                                "top2_confidence", "top3_class", "top3_confidence"}
    assert all(row["uncertain"] == (row["confidence"] < 0.9) for row in rows)
    assert all(row["confidence"] >= row["top2_confidence"] >= row["top3_confidence"] for row in rows)
    r = invoke(trained_run, SAMPLE / "porosity", "--format", "tsv")
    rows = list(csv.DictReader(io.StringIO(r.stdout), delimiter="\t"))
    assert len(rows) == 32 and rows[0]["class"] == direct[rows[0]["path"]][0]


def test_stdin_lines_and_nul_separated(trained_run, direct):
    files = sorted(direct)[:5]
    r = invoke(trained_run, "-", "--format", "jsonl", input="\n".join(files) + "\n")
    assert [json.loads(x)["path"] for x in r.stdout.splitlines()] == files
    r = invoke(trained_run, "-", "-0", "--format", "jsonl", input="\0".join(reversed(files)) + "\0")
    assert [json.loads(x)["path"] for x in r.stdout.splitlines()] == list(reversed(files))


def test_bad_files_give_error_rows_and_exit_3(trained_run, direct, tmp_path, truncated_png):
    good = sorted(direct)[:4]
    folder = tmp_path / "batch"
    folder.mkdir()
    for f in good:
        shutil.copy(f, folder)
    shutil.copy(truncated_png, folder / "b_truncated.png")
    (folder / "c_notes.png").write_text("not an image")
    r = invoke(trained_run, folder, "--format", "jsonl")
    assert r.exit_code == 3
    rows = {json.loads(x)["path"].split("/")[-1]: json.loads(x) for x in r.stdout.splitlines()}
    assert "truncated or corrupt" in rows["b_truncated.png"]["error"] and "class" not in rows["b_truncated.png"]
    assert "not an image file" in rows["c_notes.png"]["error"]
    for f in good:
        assert rows[f.split("/")[-1]]["class"] == direct[f][0]
    assert "2 of 6 input(s) failed" in r.stderr
    r = invoke(trained_run, folder)  # csv: errors on stderr only, the table stays clean
    assert r.exit_code == 3 and len(list(csv.DictReader(io.StringIO(r.stdout)))) == 4
    assert "b_truncated.png: truncated or corrupt image data" in r.stderr
    r = invoke(trained_run, folder, "--on-error", "fail")
    assert r.exit_code == 1 and "stopping at the first failure" in r.stderr


def test_shards_cover_every_input_once(trained_run):
    seen = []
    for k in (1, 2, 3):
        r = invoke(trained_run, SAMPLE, "-r", "--shard", f"{k}/3")
        seen += [row["path"] for row in csv.DictReader(io.StringIO(r.stdout))]
    assert sorted(seen) == sorted(str(p) for p in SAMPLE.glob("*/*.png"))
    assert list(shard_of(range(7), (2, 3))) == [1, 4]
    assert list(shard_of(range(3), None)) == [0, 1, 2]
    assert invoke(trained_run, SAMPLE, "--shard", "4/3").exit_code == 2


def test_glob_pattern_and_output_file(trained_run, tmp_path):
    r = invoke(trained_run, f"{SAMPLE}/lamellar/*_000[0-4].png", "-o", tmp_path / "p.csv")
    assert r.exit_code == 0 and r.stdout == ""
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert len(rows) == 5
    invoke(trained_run, f"{SAMPLE}/lamellar/*_0005.png", "-o", tmp_path / "p.csv", "--append")
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert len(lines) == 7 and lines.count(lines[0]) == 1  # one header
    # Rows with other columns (every class's probability) would not line up under that header: refused.
    r = invoke(trained_run, f"{SAMPLE}/lamellar/*_0006.png", "-o", tmp_path / "p.csv", "--append", "--all-probs")
    assert r.exit_code == 2 and "the rows would not line up" in " ".join(r.stderr.split()), r.stderr
    assert (tmp_path / "p.csv").read_text().splitlines() == lines


def test_a_folder_of_class_folders_without_r_points_to_r(trained_run):
    r = invoke(trained_run, SAMPLE)
    assert r.exit_code == 1 and "(sub-folders are read with -r/--recursive)" in " ".join(r.stderr.split()), r.stderr


def test_a_tile_larger_than_the_image_takes_the_image_as_it_is(trained_run):
    img = sorted((SAMPLE / "porosity").glob("*.png"))[0]  # 96 x 96
    conf = {t: json.loads(invoke(trained_run, img, "--tile", t, "--format", "jsonl").stdout)["confidence"]
            for t in ("96", "100", "1000")}
    assert conf["100"] == conf["1000"] == conf["96"], conf


def test_tiling_a_large_micrograph_of_one_class(trained_run, tmp_path):
    big = write_image(tmp_path / "montage.png", generate("lamellar", seed=7, index=0, size=384))
    r = invoke(trained_run, big, "--tile", "96", "--stride", "96", "--per-tile", tmp_path / "tiles.csv",
               "--format", "jsonl")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["class"] == "lamellar"
    tiles = list(csv.DictReader(open(tmp_path / "tiles.csv")))
    assert len(tiles) == 16 and {(int(t["x"]), int(t["y"])) for t in tiles} == {(x, y) for x in range(0, 384, 96)
                                                                               for y in range(0, 384, 96)}


def test_aggregation_rules():
    p = np.array([[0.6, 0.4], [0.6, 0.4], [0.0, 1.0]])
    np.testing.assert_allclose(aggregate(p, "mean"), [0.4, 0.6])
    np.testing.assert_allclose(aggregate(p, "vote"), [2 / 3, 1 / 3])
    np.testing.assert_allclose(aggregate(p, "max"), [0.6 / 1.6, 1 / 1.6])


def test_info_shows_what_the_bundle_holds(trained_run):
    r = runner.invoke(app, ["info", str(trained_run), "--format", "json"])
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["arch"] == "lenet" and d["classes"] == sorted(p.name for p in SAMPLE.iterdir() if p.is_dir())
    assert d["input"]["channels"] == 1 and d["input"]["img_size"] == 96 and d["parameters"] > 50_000
    assert d["data"]["train_images"] == 153 and "val_macro_f1" in d["metrics"] and "torch" in d["versions"]
    r = runner.invoke(app, ["info", str(trained_run)])
    assert "lenet" in r.stdout and "96 x 96 px" in r.stdout


def test_missing_model_is_a_clear_error(tmp_path):
    r = runner.invoke(app, ["predict", str(tmp_path / "nope.pt"), str(SAMPLE)])
    assert r.exit_code == 1 and "nope.pt: no such model file" in r.stderr


def test_per_tile_and_output_files_never_replace_an_input_or_the_model(trained_run, tmp_path):
    run = shutil.copytree(trained_run, tmp_path / "run")
    image = shutil.copy(REPO / "sample_images" / "lamellar" / "lamellar_0000.png", tmp_path / "in.png")
    image_bytes, model_bytes = open(image, "rb").read(), (run / "best.pt").read_bytes()
    r = invoke(run, image, "--tile", "32", "--per-tile", image, "--force")
    assert r.exit_code == 1
    assert f"error: --per-tile {image}: is one of the inputs" in " ".join(r.stderr.split())
    r = invoke(run, image, "-o", run / "best.pt", "--force")
    assert r.exit_code == 1 and f"error: --output {run / 'best.pt'}: is one of the inputs" in " ".join(r.stderr.split())
    (tmp_path / "tiles.csv").write_text("keep")
    r = invoke(run, image, "--tile", "32", "--per-tile", tmp_path / "tiles.csv")
    assert r.exit_code == 1 and "--per-tile" in r.stderr and "exists; use --force" in r.stderr
    assert open(image, "rb").read() == image_bytes and (run / "best.pt").read_bytes() == model_bytes
    assert (tmp_path / "tiles.csv").read_text() == "keep"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_the_row_format_follows_the_output_suffix_and_append_keeps_to_the_files_format(trained_run, tmp_path):
    image = REPO / "sample_images" / "lamellar" / "lamellar_0000.png"
    for name in ("rows.jsonl", "rows.tsv", "rows.txt"):
        assert invoke(trained_run, image, "-o", tmp_path / name).exit_code == 0
    assert json.loads((tmp_path / "rows.jsonl").read_text())["path"] == str(image)
    assert (tmp_path / "rows.tsv").read_text().startswith("path\tclass\tconfidence")
    assert (tmp_path / "rows.txt").read_text().startswith("path,class,confidence")
    r = invoke(trained_run, image, "-o", tmp_path / "rows.txt", "--append", "--format", "jsonl")
    assert r.exit_code == 2 and (f"error: --append {tmp_path / 'rows.txt'}: its first line is not a JSON object, so "
                                 "it is not a JSON lines file") in " ".join(r.stderr.split())
    assert invoke(trained_run, image, "-o", tmp_path / "rows.jsonl", "--append").exit_code == 0
    assert [json.loads(line)["path"] for line in open(tmp_path / "rows.jsonl")] == [str(image)] * 2


@pytest.mark.parametrize("option", [["--stride", "16"], ["--per-tile", "tiles.csv"]])
def test_tile_options_without_tile_are_usage_errors(trained_run, tmp_path, option):
    r = invoke(trained_run, REPO / "sample_images" / "lamellar" / "lamellar_0000.png", *option)
    assert r.exit_code == 2 and r.stderr == f"error: {option[0]} needs --tile SIZE\n" and r.stdout == ""

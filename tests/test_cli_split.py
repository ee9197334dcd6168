from __future__ import annotations

import csv
from collections import defaultdict

import numpy as np
import pytest
from typer.testing import CliRunner

from microcli.cli.app import app
from microcli.data import discover
from microcli.synth import SynthSpec, write_dataset

from .conftest import save_png

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, ["split", *map(str, args)])


def flat(text: str) -> str:
    """stderr with rich's line wrapping undone."""
    return " ".join(text.split())


def table_rows(text: str) -> dict[str, list[str]]:
    """The rows of the table on stderr: first cell -> the other cells."""
    return {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in text.splitlines() if line.startswith("│")}


def rows(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture
def data(tmp_path):
    """Three classes of 10 tiny synthetic micrographs, named <class>_NNNN.png."""
    root = tmp_path / "data"
    list(write_dataset(root, SynthSpec(per_class=10, size=32, seed=1, classes=("equiaxed", "lamellar", "porosity"))))
    return root


def test_writes_a_manifest_that_discover_reads_back_as_split_data(data):
    out = data / "split.csv"
    r = invoke(data, "-o", out, "--val", "0.2", "--test", "0.2", "--seed", "3")
    assert r.exit_code == 0, r.stderr
    table = rows(out)
    assert list(table[0]) == ["path", "label", "group", "split"] and len(table) == 30
    assert table[0]["path"] == "equiaxed/equiaxed_0000.png"  # relative to the manifest's folder, input order
    assert {row["split"] for row in table} == {"train", "val", "test"}
    per_class = defaultdict(lambda: defaultdict(int))
    for row in table:
        per_class[row["label"]][row["split"]] += 1
    assert all(counts == {"train": 6, "val": 2, "test": 2} for counts in per_class.values())

    found = discover(out)
    assert found.presplit and found.classes == ["equiaxed", "lamellar", "porosity"]
    assert {s: len(v) for s, v in found.splits.items()} == {"train": 18, "val": 6, "test": 6}
    back = {it.path: s for s, items in found.splits.items() for it in items}
    assert back == {str(data / row["path"]): row["split"] for row in table}


def test_paths_outside_the_manifest_folder_are_absolute_and_still_read_back(data, tmp_path):
    out = tmp_path / "elsewhere" / "split.csv"
    assert invoke(data, "-o", out).exit_code == 0
    paths = [row["path"] for row in rows(out)]
    assert paths[0] == str(data / "equiaxed" / "equiaxed_0000.png")
    assert sorted(it.path for it in discover(out).items()) == sorted(paths)


def test_prints_the_per_class_table_on_stderr_and_nothing_on_stdout(data, tmp_path):
    r = invoke(data, "-o", tmp_path / "s.csv", "--val", "0.2", "--test", "0.2")
    assert r.stdout == ""
    assert "split (images per class)" in r.stderr
    lines = table_rows(r.stderr)
    assert lines["lamellar"] == ["6", "2", "2", "10"] and lines["total"] == ["18", "6", "6", "30"]
    assert "wrote 30 rows (train 18, val 6, test 6)" in r.stderr


def test_same_seed_same_bytes_other_seed_other_split(data, tmp_path):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        assert invoke(data, "-o", tmp_path / f"{name}.csv", "--seed", seed, "--test", "0.3").exit_code == 0
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert (tmp_path / "a.csv").read_bytes() != (tmp_path / "c.csv").read_bytes()


def test_refuses_an_existing_output_without_force(data, tmp_path):
    out = tmp_path / "s.csv"
    out.write_text("keep me\n")
    r = invoke(data, "-o", out)
    assert r.exit_code == 1
    assert f"{out}: exists (use --force to overwrite)" in flat(r.stderr)
    assert out.read_text() == "keep me\n"
    assert invoke(data, "-o", out, "--force").exit_code == 0
    assert rows(out)[0]["split"] in ("train", "val")


def test_never_writes_over_its_input_even_with_force(data, tmp_path):
    manifest = tmp_path / "in.csv"
    manifest.write_text("path,label\n" + "".join(f"{p},{p.parent.name}\n" for p in sorted(data.rglob("*.png"))))
    before = manifest.read_bytes()
    r = invoke(manifest, "-o", manifest, "--force")
    assert r.exit_code == 1 and "is an input; write the manifest elsewhere" in flat(r.stderr)
    assert manifest.read_bytes() == before


def test_refuses_data_that_is_already_split(data, tmp_path):
    assert invoke(data, "-o", tmp_path / "s.csv").exit_code == 0
    r = invoke(tmp_path / "s.csv", "-o", tmp_path / "again.csv")
    assert r.exit_code == 1
    assert "already split (train, val); give unsplit class folders or a manifest without a 'split' column" \
        in flat(r.stderr)
    assert not (tmp_path / "again.csv").exists()


def test_group_by_keeps_each_specimen_on_one_side_and_warns_about_a_lonely_class(tmp_path):
    # three specimens (A-C, D-F) of two classes, porosity from one specimen only (P)
    rng = np.random.default_rng(0)
    for label, specimens in (("equiaxed", "ABC"), ("lamellar", "DEF"), ("porosity", "P")):
        for s in specimens:
            for i in range(3):
                save_png(tmp_path / "data" / label / f"{s}_{i}.png", rng.integers(0, 256, (8, 8), dtype=np.uint8))
    r = invoke(tmp_path / "data", "-o", tmp_path / "g.csv", "--group-by", "^([A-Z])_", "--val", "0.3",
               "--test", "0.3")
    assert r.exit_code == 0, r.stderr
    sides = defaultdict(set)
    for row in rows(tmp_path / "g.csv"):
        sides[row["label"], row["group"]].add(row["split"])
    assert all(len(s) == 1 for s in sides.values())
    assert sorted(sides) == [("equiaxed", "A"), ("equiaxed", "B"), ("equiaxed", "C"), ("lamellar", "D"),
                             ("lamellar", "E"), ("lamellar", "F"), ("porosity", "P")]
    for label in ("equiaxed", "lamellar"):
        assert {s for (lab, _), (s,) in sides.items() if lab == label} == {"train", "val", "test"}
    assert sides["porosity", "P"] == {"train"}
    assert "warning: class 'porosity' has a single group ('P', 3 images): it cannot be held out and stays in " \
           "train" in flat(r.stderr)
    assert table_rows(r.stderr)["porosity"] == ["3 (1)", "0 (0)", "0 (0)", "3 (1)"]


def test_group_by_replaces_a_manifest_group_column(data, tmp_path):
    manifest = tmp_path / "in.csv"
    lines = "".join(f"{p},{p.parent.name},one\n" for p in sorted(data.rglob("*.png")))
    manifest.write_text("path,label,group\n" + lines)
    r = invoke(manifest, "-o", tmp_path / "g.csv", "--group-by", r"^(\w+_\d{3})[0-4]")
    assert r.exit_code == 1 and "finds no group in 15 file name(s)" in flat(r.stderr)
    r = invoke(manifest, "-o", tmp_path / "g.csv", "--group-by", r"^\w+_\d{3}")
    assert r.exit_code == 0, r.stderr
    assert {row["group"] for row in rows(tmp_path / "g.csv")} == {"equiaxed_000", "lamellar_000", "porosity_000"}


def test_bad_options_are_usage_errors(data, tmp_path):
    r = invoke(data, "-o", tmp_path / "s.csv", "--group-by", "(unclosed")
    assert r.exit_code == 2 and "--group-by '(unclosed' is not a valid regular expression" in flat(r.stderr)
    r = invoke(data, "-o", tmp_path / "s.csv", "--val", "0.6", "--test", "0.5")
    assert r.exit_code == 2 and "--val + --test must leave something to train on" in flat(r.stderr)
    r = invoke(data, "-o", tmp_path / "s.csv", "--group-by", "nomatch")
    assert r.exit_code == 1 and "finds no group in 30 file name(s)" in flat(r.stderr)
    assert not (tmp_path / "s.csv").exists()


def test_images_outside_the_class_folders_are_named_in_a_warning_and_left_out(data, tmp_path):
    for i in range(5):
        save_png(data / f"loose_{i}.png", np.full((32, 32), 100 + i, np.uint8))
    r = invoke(data, "-o", tmp_path / "s.csv")
    assert r.exit_code == 0, r.output
    assert (f"warning: {data}: 5 image(s) lie outside the class folders and are not used "
            "(loose_0.png, loose_1.png, loose_2.png and 2 more)") in flat(r.stderr)
    assert len(rows(tmp_path / "s.csv")) == 30 and not any("loose" in row["path"] for row in rows(tmp_path / "s.csv"))


def test_a_preprocess_output_inside_the_data_set_is_refused_rather_than_taken_for_a_class(data, tmp_path):
    pre = runner.invoke(app, ["preprocess", str(data), "-o", str(data / "edges"), "--op", "sobel", "--workers", "0"])
    assert pre.exit_code == 0, pre.stderr
    r = invoke(data, "-o", tmp_path / "s.csv")
    assert r.exit_code == 1 and not (tmp_path / "s.csv").exists()
    assert (f"error: {data / 'edges'}: holds a pipeline.json, so it is the output of `microcli preprocess`, not a "
            "class folder") in flat(r.stderr)
    assert invoke(data / "edges", "-o", tmp_path / "s.csv").exit_code == 0  # the output is a data set of its own
    assert {row["label"] for row in rows(tmp_path / "s.csv")} == {"equiaxed", "lamellar", "porosity"}


def test_a_preprocess_output_inside_a_class_folder_is_refused_naming_it(data, tmp_path):
    field = data / "equiaxed" / "field2"  # the class's images one folder down, so the copies are too
    field.mkdir()
    for f in sorted((data / "equiaxed").glob("*.png")):
        f.rename(field / f.name)
    out = data / "equiaxed" / "runs" / "edges"
    pre = runner.invoke(app, ["preprocess", str(data / "equiaxed"), "-o", str(out), "--op", "sobel", "--workers", "0"])
    assert pre.exit_code == 0, pre.stderr
    assert not list(out.glob("*.png")) and list((out / "field2").glob("*.png"))
    r = invoke(data, "-o", tmp_path / "s.csv")
    assert r.exit_code == 1 and not (tmp_path / "s.csv").exists()
    assert (f"error: {out}: holds a pipeline.json, so it is the output of `microcli preprocess`, inside the class "
            f"folder '{data / 'equiaxed'}'") in flat(r.stderr)


def test_one_file_reached_under_two_classes_through_a_symlink_is_refused(data, tmp_path):
    (data / "equiaxed" / "more").symlink_to(data / "lamellar", target_is_directory=True)
    r = invoke(data, "-o", tmp_path / "s.csv")
    assert r.exit_code == 1 and not (tmp_path / "s.csv").exists()
    assert (f"{data / 'equiaxed' / 'more' / 'lamellar_0000.png'} and {data / 'lamellar' / 'lamellar_0000.png'} are "
            "one file (through a symlink), under two classes") in flat(r.stderr)

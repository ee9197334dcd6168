from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from PIL import Image
from typer.testing import CliRunner

from microcli.cli.app import app

from .conftest import save_png

runner = CliRunner()


def invoke(*args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input)


@pytest.fixture
def tree(tmp_path, gray8):
    src = tmp_path / "in"
    for rel in ["grain boundaries/a.png", "grain boundaries/b.png", "pores/c.jpg", "pores/deep/d.png"]:
        p = src / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(gray8).save(p)
    return src


def outputs(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_folder_mirrored_one_output_per_input(tree, tmp_path):
    r = invoke("preprocess", tree, "-o", tmp_path / "out", "--op", "gaussian:sigma=1", "--op", "canny:sigma=2", "-j", "2")
    assert r.exit_code == 0, r.stderr
    assert r.stdout == ""
    assert "4 written, 0 failed" in r.stderr
    assert outputs(tmp_path / "out") == ["grain boundaries/a.png", "grain boundaries/b.png", "pipeline.json",
                                         "pores/c.png", "pores/deep/d.png"]
    edges = np.asarray(Image.open(tmp_path / "out/pores/deep/d.png"))
    assert edges.dtype == np.uint8 and set(np.unique(edges)) <= {0, 255}
    saved = json.loads((tmp_path / "out/pipeline.json").read_text())
    assert [s["op"] for s in saved] == ["gaussian", "canny"]


def test_16bit_tiff_stays_16bit(tmp_path, gray16):
    tifffile.imwrite(tmp_path / "scan.tif", gray16)
    r = invoke("preprocess", tmp_path / "scan.tif", "-o", tmp_path / "out", "--op", "gaussian:sigma=1")
    assert r.exit_code == 0, r.stderr
    out = tifffile.imread(tmp_path / "out/scan.tif")
    assert out.dtype == np.uint16 and out.max() > 255


def test_one_corrupt_file_gives_exit_3_and_the_others_are_written(tree, tmp_path, truncated_png):
    shutil.copy(truncated_png, tree / "pores" / "broken.png")
    r = invoke("preprocess", tree, "-o", tmp_path / "out", "--op", "median")
    assert r.exit_code == 3
    assert "broken.png: truncated or corrupt image data" in r.stderr
    assert "4 written, 1 failed" in r.stderr
    assert len([o for o in outputs(tmp_path / "out") if o.endswith(".png")]) == 4
    assert r.stdout == ""


def test_existing_outputs_need_force(tree, tmp_path):
    assert invoke("preprocess", tree, "-o", tmp_path / "out", "--op", "invert").exit_code == 0
    r = invoke("preprocess", tree, "-o", tmp_path / "out", "--op", "invert")
    assert r.exit_code == 1 and "already exist; use --force" in r.stderr
    assert invoke("preprocess", tree, "-o", tmp_path / "out", "--op", "invert", "--force").exit_code == 0


def test_output_inside_input_folder_is_not_reprocessed(tree):
    r = invoke("preprocess", tree, "-o", tree / "edges", "--op", "sobel")
    assert r.exit_code == 0, r.stderr
    r = invoke("preprocess", tree, "-o", tree / "edges", "--op", "sobel", "--force")
    assert "4 written" in r.stderr


def test_output_never_overwrites_an_input(tmp_path, gray8):
    save_png(tmp_path / "a.png", gray8)
    before = (tmp_path / "a.png").read_bytes()
    r = invoke("preprocess", tmp_path / "a.png", "-o", tmp_path, "--op", "invert", "--force")
    assert r.exit_code == 2 and "would overwrite an input" in r.stderr
    assert (tmp_path / "a.png").read_bytes() == before


def test_bad_op_is_a_usage_error(tree, tmp_path):
    r = invoke("preprocess", tree, "-o", tmp_path / "out", "--op", "gaussian:sigma=-1")
    assert r.exit_code == 2
    assert "op 'gaussian': parameter 'sigma' must be a number in (0, 100]" in r.stderr
    assert not (tmp_path / "out").exists()


def test_the_input_folder_as_output_is_refused_with_the_rule_named(tree):
    r = invoke("preprocess", tree, "-o", tree, "--op", "sobel", "--force")
    assert r.exit_code == 2
    assert (f"error: -o {tree}: is the input folder {tree} or holds it, and the output folder is never read as "
            "input") in " ".join(r.stderr.split())


def test_stdin_paths(tree, tmp_path):
    paths = "\0".join(str(p) for p in sorted(tree.rglob("*.png"))) + "\0"
    r = invoke("preprocess", "-", "-0", "-o", tmp_path / "out", "--op", "invert", input=paths)
    assert r.exit_code == 0, r.stderr
    # Files of several folders keep their tree below the folder they share (IN), so names cannot collide.
    assert outputs(tmp_path / "out") == ["grain boundaries/a.png", "grain boundaries/b.png", "pipeline.json",
                                         "pores/deep/d.png"]
    flat = "\n".join(str(p) for p in sorted((tree / "grain boundaries").glob("*.png"))) + "\n"
    r = invoke("preprocess", "-", "-o", tmp_path / "flat", "--op", "invert", input=flat)
    assert r.exit_code == 0, r.stderr
    assert outputs(tmp_path / "flat") == ["a.png", "b.png", "pipeline.json"]  # files of one folder: their names


def test_two_folders_holding_the_same_file_names_keep_them_apart(tmp_path, gray8):
    for cls in ("fine pearlite", "Pores & voids"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        Image.fromarray(gray8).save(tmp_path / "data" / cls / "img001.png")
    r = invoke("preprocess", tmp_path / "data" / "fine pearlite", tmp_path / "data" / "Pores & voids", "-o",
               tmp_path / "out", "--op", "invert", "--workers", "0")
    assert r.exit_code == 0, r.stderr
    assert outputs(tmp_path / "out") == ["Pores & voids/img001.png", "fine pearlite/img001.png", "pipeline.json"]


def test_pipeline_file_reuse(tree, tmp_path):
    invoke("preprocess", tree, "-o", tmp_path / "o1", "--op", "clahe:clip=0.03")
    r = invoke("preprocess", tree, "-o", tmp_path / "o2", "--pipeline", tmp_path / "o1/pipeline.json")
    assert r.exit_code == 0, r.stderr
    a = np.asarray(Image.open(tmp_path / "o1/pores/c.png"))
    np.testing.assert_array_equal(a, np.asarray(Image.open(tmp_path / "o2/pores/c.png")))
    for bad, why in ((tmp_path / "nope.json", "No such file or directory"), (tmp_path / "o1", "Is a directory")):
        r = invoke("preprocess", tree, "-o", tmp_path / "o3", "--pipeline", bad)
        assert (r.exit_code, r.stderr) == (2, f"error: {bad}: cannot read the pipeline file ({why})\n")
    assert not (tmp_path / "o3").exists()


def test_list_shows_every_op_on_stdout():
    r = invoke("preprocess", "--list")
    assert r.exit_code == 0
    for name in ("gaussian", "canny", "clahe", "threshold", "denoise", "crop", "median", "scharr"):
        assert name in r.stdout


def test_help_and_version_do_not_import_torch():
    code = ("import sys; from microcli.cli.app import app\n"
            "try: app(['preprocess', '--help'])\nexcept SystemExit: pass\n"
            "print('torch' in sys.modules, 'skimage' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False False")
    v = subprocess.run([sys.executable, "-m", "microcli", "--version"], capture_output=True, text=True)
    assert v.returncode == 0 and v.stdout.startswith("microcli ")


def test_synth_command(tmp_path):
    r = invoke("synth", tmp_path / "s", "--per-class", 4, "--size", 48)
    assert r.exit_code == 0, r.stderr
    classes = [p for p in (tmp_path / "s").iterdir() if p.is_dir()]
    assert len(classes) >= 5 and all(len(list(c.glob("*.png"))) == 4 for c in classes)

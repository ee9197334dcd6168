"""Bad inputs, end to end from the CLI: each case is built on disk, and each test checks the exit code, the
message and what was or was not written. One test (or a few) per item of the hardening issue, named after it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from microcli.cli.app import app

from .conftest import REPO, save_png

runner = CliRunner()
SAMPLE = REPO / "sample_images"
GOOD = sorted(str(p) for p in (SAMPLE / "lamellar").glob("*.png"))[:3]


def cli(*args, input=None, env=None):
    return runner.invoke(app, [str(a) for a in args], input=input, env=env)


def cli_subprocess(*args, timeout=120, **kw) -> subprocess.CompletedProcess:
    """The real `microcli` process: for cases that could hang (the timeout turns a hang into a failure)."""
    return subprocess.run([sys.executable, "-m", "microcli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=kw.pop("cwd", None), **kw)


def flat(text: str) -> str:
    """stderr with runs of whitespace as one space (train's messages may be wrapped at 140 columns)."""
    return " ".join(text.split())


def rows_of(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def folder_of_good_images(root: Path, n: int = 3) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for f in GOOD[:n]:
        shutil.copy(f, root)
    return root


# --- 4. symlink loops, 5. FIFOs: every folder scan names them and goes on ---------------------------------

@pytest.fixture
def looped(tmp_path) -> Path:
    """Three good images, a self-referencing symlink l.png and a two-link loop a.png -> b.png -> a.png."""
    d = folder_of_good_images(tmp_path / "d")
    os.symlink("l.png", d / "l.png")
    os.symlink("b.png", d / "a.png")
    os.symlink("a.png", d / "b.png")
    return d


def test_symlink_loops_are_named_and_predict_goes_on(trained_run, looped):
    r = cli("predict", trained_run, looped, "--format", "jsonl", "--workers", "0")
    assert r.exit_code == 3, r.stderr
    rows = {Path(x["path"]).name: x for x in map(json.loads, r.stdout.splitlines())}
    assert sorted(rows) == sorted(["a.png", "b.png", "l.png", *(Path(f).name for f in GOOD)])
    for name in ("a.png", "b.png", "l.png"):
        assert rows[name]["error"].endswith(f"{name}: not an image file (symlink loop)")
    assert all("class" in rows[Path(f).name] for f in GOOD)
    assert "3 of 6 input(s) failed" in r.stderr and "Traceback" not in r.stderr


def test_symlink_loops_in_preprocess(looped, tmp_path):
    r = cli("preprocess", looped, "-o", tmp_path / "out", "--op", "gaussian", "--workers", "0")
    assert r.exit_code == 3
    assert "l.png: not an image file (symlink loop)" in r.stderr and "3 written, 3 failed" in r.stderr
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == sorted(Path(f).name for f in GOOD)


@pytest.mark.slow
def test_symlink_loops_in_train_and_evaluate(tmp_path):
    data = tmp_path / "data"
    for cls in ("lamellar", "porosity"):
        src = sorted((SAMPLE / cls).glob("*.png"))[:6]
        (data / cls).mkdir(parents=True)
        for f in src:
            shutil.copy(f, data / cls)
    os.symlink("loop.png", data / "porosity" / "loop.png")
    r = cli("train", data, "-o", tmp_path / "run", "--epochs", "1", "--workers", "0", "--img-size", "32")
    assert r.exit_code == 3, r.stderr
    assert "loop.png: not an image file (symlink loop)" in flat(r.stderr)
    assert "loop.png" in (tmp_path / "run" / "skipped.csv").read_text()
    r = cli("evaluate", tmp_path / "run", data, "--workers", "0")
    assert r.exit_code == 3 and "loop.png: not an image file (symlink loop)" in r.stderr


def test_a_class_whose_every_file_is_unreadable_names_those_files(tmp_path):
    data = tmp_path / "data"
    folder_of_good_images(data / "lamellar", 3)
    folder_of_good_images(data / "equiaxed", 3)
    (data / "voids").mkdir()
    (data / "voids" / "empty.png").write_bytes(b"")
    (data / "voids" / "cut.png").write_bytes(Path(GOOD[0]).read_bytes()[:60])
    r = cli("train", data, "-o", tmp_path / "run", "--epochs", "1", "--workers", "0", "--img-size", "32")
    assert r.exit_code == 1, r.stderr
    err = flat(r.stderr)
    assert "no readable training images for class(es): 'voids'" in err
    assert "empty.png" in err and "cut.png" in err, err


@pytest.fixture
def with_fifo(tmp_path) -> Path:
    d = folder_of_good_images(tmp_path / "f")
    os.mkfifo(d / "p.png")
    return d


def test_fifo_in_a_folder_does_not_hang_predict(trained_run, with_fifo):
    r = cli_subprocess("predict", trained_run, with_fifo)
    assert r.returncode == 3, r.stderr
    assert [Path(x["path"]).name for x in rows_of(r.stdout)] == [Path(f).name for f in GOOD]
    assert "p.png: not an image file (a named pipe (FIFO); only regular files are read)" in r.stderr


def test_fifo_in_a_folder_does_not_hang_preprocess(with_fifo, tmp_path):
    r = cli_subprocess("preprocess", with_fifo, "-o", tmp_path / "out", "--op", "gaussian")
    assert r.returncode == 3, r.stderr
    assert "p.png: not an image file (a named pipe (FIFO)" in r.stderr
    assert len(list((tmp_path / "out").glob("*.png"))) == 3 and not (tmp_path / "out" / "p.png").exists()


# --- 13. bad pixel limits: one message, exit 2, before any file is read ----------------------------------

@pytest.mark.parametrize("command", ["predict", "preprocess", "evaluate"])
def test_bad_max_pixels_environment_variable_is_one_usage_error(trained_run, tmp_path, command):
    folder = folder_of_good_images(tmp_path / "in")
    args = {"predict": ["predict", trained_run, folder],
            "preprocess": ["preprocess", folder, "-o", tmp_path / "out", "--op", "gaussian"],
            "evaluate": ["evaluate", trained_run, SAMPLE]}[command]
    r = cli(*args, env={"MICROCLI_MAX_PIXELS": "abc"})
    assert r.exit_code == 2
    assert r.stderr.count("MICROCLI_MAX_PIXELS must be a whole number >= 0 (0: no limit), got 'abc'") == 1
    assert "failed" not in r.stderr and r.stdout == "" and not (tmp_path / "out").exists()


def test_bad_max_pixels_environment_variable_in_train(tmp_path):
    r = cli("train", SAMPLE, "-o", tmp_path / "run", "--epochs", "1", "--workers", "0",
            env={"MICROCLI_MAX_PIXELS": "-5"})
    assert r.exit_code == 2 and r.stderr.count("MICROCLI_MAX_PIXELS must be a whole number") == 1
    assert not (tmp_path / "run").exists()


def test_negative_max_pixels_option_is_a_usage_error(trained_run, tmp_path):
    for args in (["predict", trained_run, GOOD[0]], ["preprocess", GOOD[0], "-o", tmp_path / "o", "--op", "gaussian"],
                 ["train", SAMPLE, "-o", tmp_path / "run"]):
        r = cli(*args, "--max-pixels", "-5")
        assert r.exit_code == 2 and "--max-pixels" in r.stderr, args
    assert not (tmp_path / "o").exists() and not (tmp_path / "run").exists()


# --- 3. thin strips: only the pixels kept are resampled ------------------------------------------------

CAPPED_PREPARE = """
import resource, sys
from microcli.inputs import InputSpec, prepare_array
vm = int(next(ln for ln in open("/proc/self/status") if ln.startswith("VmSize")).split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + (300 << 20), resource.getrlimit(resource.RLIMIT_AS)[1]))
for path in sys.argv[1:]:
    for fit in ("resize", "crop"):
        print(path.rsplit("/", 1)[-1], fit, prepare_array(path, InputSpec(1, 128, fit)).shape)
"""


def test_thin_strips_fit_in_300_mb_more_than_the_interpreter(tmp_path):
    """A 2 x 1,000,000 strip scaled whole to a 128 px short side would be 32 GB, 3 x 60,000 1.3 GB:
    under an address-space cap of 300 MB above the running interpreter both fail unless only the kept
    window is resampled."""
    rng = np.random.default_rng(0)
    strips = {"wide2.png": (2, 1_000_000), "wide3.png": (3, 60_000), "tall3.png": (60_000, 3)}
    for name, shape in strips.items():
        save_png(tmp_path / name, rng.integers(0, 256, shape, dtype=np.uint8))
    r = subprocess.run([sys.executable, "-c", CAPPED_PREPARE, *(str(tmp_path / n) for n in strips)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split("\n")[:-1] == [
        "wide2.png resize (1, 128, 128)", "wide2.png crop (1, 128, 2048)",  # crop: 16 input sides at most
        "wide3.png resize (1, 128, 128)", "wide3.png crop (1, 128, 2048)",
        "tall3.png resize (1, 128, 128)", "tall3.png crop (1, 2048, 128)"]


def test_thin_strip_through_predict(trained_run, tmp_path):
    strip = save_png(tmp_path / "strip.png", np.random.default_rng(1).integers(0, 256, (3, 60_000), dtype=np.uint8))
    r = cli("predict", trained_run, strip, "--workers", "0")
    assert r.exit_code == 0, r.stderr
    assert [row["path"] for row in rows_of(r.stdout)] == [str(strip)]


def test_fit_array_crops_before_scaling_gives_the_same_pixels():
    """Resampling only the kept window equals scaling the whole image and cropping (bilinear, antialiased)."""
    from PIL import Image

    from microcli.inputs import fit_array

    rng = np.random.default_rng(0)
    for shape, size in [((64, 100), 32), ((37, 211), 96), ((480, 640), 224), ((33, 70, 3), 64), ((95, 97), 128)]:
        a = rng.random(shape, dtype=np.float32)
        h, w = shape[:2]
        nh, nw = max(size, round(h * size / min(h, w))), max(size, round(w * size / min(h, w)))
        planes = a[..., None] if a.ndim == 2 else a
        whole = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(planes[..., c]), mode="F").resize(
            (nw, nh), Image.BILINEAR)) for c in range(planes.shape[2])], -1)
        top, left = (nh - size) // 2, (nw - size) // 2
        expected = whole[top:top + size, left:left + size].reshape((size, size) + shape[2:])
        np.testing.assert_allclose(fit_array(a, size, "resize"), expected, atol=1e-5)


def test_squash_keeps_the_whole_image():
    """squash: every pixel of a 3:1 strip reaches the square input; resize's centre crop drops its ends."""
    from microcli.inputs import fit_array

    a = np.zeros((40, 120), np.float32)
    a[:, :20] = 1.0  # a bright left end
    squashed, cropped = fit_array(a, 40, "squash"), fit_array(a, 40, "resize")
    assert squashed.shape == cropped.shape == (40, 40)
    assert squashed[:, :6].min() > 0.9 and squashed[:, 8:].max() < 0.1  # the end is there, 1/6 of the width
    assert cropped.max() == 0.0  # the centre crop never saw it


# --- 7. corrupt bundle metadata: one line naming the field, exit 1 ------------------------------------------

def _edit(d: dict, key: str, value) -> None:
    if "." in key:
        outer, inner = key.split(".")
        d[outer] = {**d[outer], inner: value}
    else:
        d[key] = value


@pytest.mark.parametrize("key,value,field", [
    ("input", {}, "input"),
    ("input.channels", "1", "input"),
    ("input.img_size", [96], "input"),
    ("input.mean", [], "input"),
    ("input.fit", "stretch", "input"),
    ("input.pipeline", [{"op": "nope"}], "input"),
    ("input.whole", "256", "input"),
    ("input.whole", 256, "input"),  # this bundle's network cannot take whole images
    ("arch", ["lenet"], "arch"),
    ("classes", "abc", "classes"),
    ("classes", ["a", "a", "b", "c", "d", "e"], "classes"),
    ("format_version", "one", "format_version"),
    ("state_dict", [1, 2], "state_dict"),
    ("metrics", [], "metrics"),
    ("training_state", "x", "training_state"),
])
def test_corrupt_bundle_fields_are_named(trained_run, tmp_path, key, value, field):
    import torch

    raw = torch.load(trained_run / "best.pt", weights_only=True)
    _edit(raw, key, value)
    torch.save(raw, tmp_path / "b.pt")
    for args in (["predict", tmp_path / "b.pt", GOOD[0]], ["info", tmp_path / "b.pt"],
                 ["evaluate", tmp_path / "b.pt", SAMPLE]):
        r = cli(*args)
        assert r.exit_code == 1, (args, r.output)
        assert f"b.pt: bundle field '{field}' is malformed" in r.stderr and r.stdout == "", args


# --- 14. nothing done is an error (1), not a partial success (3) ------------------------------------------

def test_predict_exits_1_when_every_input_fails(trained_run, tmp_path):
    (tmp_path / "notes.png").write_text("meeting notes")
    r = cli("predict", trained_run, tmp_path / "notes.png", "--workers", "0")
    assert r.exit_code == 1
    assert "notes.png: not an image file" in r.stderr and "all 1 input(s) failed; nothing was predicted" in r.stderr
    assert rows_of(r.stdout) == []
    (tmp_path / "notes.png").write_bytes(Path(GOOD[0]).read_bytes())  # one good input: a partial success again
    (tmp_path / "more.png").write_text("more notes")
    r = cli("predict", trained_run, tmp_path / "notes.png", tmp_path / "more.png", "--workers", "0")
    assert r.exit_code == 3 and "1 of 2 input(s) failed" in r.stderr


def test_preprocess_exits_1_when_every_input_fails(tmp_path):
    src = folder_of_good_images(tmp_path / "in")  # 96 x 96 images
    r = cli("preprocess", src, "-o", tmp_path / "out", "--op", "crop:top=50,bottom=50", "--workers", "0")
    assert r.exit_code == 1
    assert flat(r.stderr).count("leaves nothing of a 96x96 image") == 3
    for f in GOOD:  # each failure names its file
        assert f"{src / Path(f).name}: op 'crop'" in flat(r.stderr)
    assert "all 3 input(s) failed; nothing was written" in r.stderr
    assert not list((tmp_path / "out").glob("*.png"))


# --- 9. preprocess never silently replaces OUT/pipeline.json -------------------------------------------------

def test_preprocess_refuses_another_pipeline_json_without_force(tmp_path):
    first, second = folder_of_good_images(tmp_path / "a", 1), tmp_path / "b"
    second.mkdir()
    shutil.copy(GOOD[1], second)
    out = tmp_path / "out"
    assert cli("preprocess", first, "-o", out, "--op", "gaussian", "--workers", "0").exit_code == 0
    before = (out / "pipeline.json").read_text()
    r = cli("preprocess", second, "-o", out, "--op", "median", "--workers", "0")
    assert r.exit_code == 1
    assert "pipeline.json: exists and describes the pipeline 'gaussian', not 'median'" in r.stderr
    assert "--force" in r.stderr
    assert (out / "pipeline.json").read_text() == before and not (out / Path(GOOD[1]).name).exists()
    # the same steps again: more files made the same way, pipeline.json stays true
    r = cli("preprocess", second, "-o", out, "--op", "gaussian:sigma=1", "--workers", "0")
    assert r.exit_code == 0 and (out / "pipeline.json").read_text() == before
    assert (out / Path(GOOD[1]).name).exists()
    r = cli("preprocess", second, "-o", out, "--op", "median", "--force", "--workers", "0")
    assert r.exit_code == 0 and json.loads((out / "pipeline.json").read_text()) == [
        {"op": "median", "params": {"radius": 1}}]


def test_preprocess_leaves_no_pipeline_json_when_nothing_was_written(tmp_path):
    src = folder_of_good_images(tmp_path / "in", 1)
    r = cli("preprocess", src, "-o", tmp_path / "out", "--op", "crop:left=200", "--workers", "0")
    assert r.exit_code == 1 and not (tmp_path / "out").exists()


# --- 11. manifests: not UTF-8, duplicates, conflicting labels ----------------------------------------------------

def write_manifest(path: Path, rows: list[tuple[str, str]], encoding="utf-8") -> Path:
    path.write_bytes(("path,label\n" + "".join(f"{p},{label}\n" for p, label in rows)).encode(encoding))
    return path


def test_cp1252_manifest_is_one_clear_error(trained_run, tmp_path):
    m = write_manifest(tmp_path / "m.csv", [(GOOD[0], "ferrit\xe9"), (GOOD[1], "perlit")], encoding="cp1252")
    for args in (["evaluate", trained_run, m], ["train", m, "-o", tmp_path / "run"]):
        r = cli(*args)
        assert r.exit_code == 1, r.output
        assert ("m.csv: not UTF-8 text (byte 0xe9 on line 2; Excel's plain 'CSV' is Windows-1252); save it as "
                "'CSV UTF-8' or convert it: iconv -f cp1252 -t utf-8 m.csv > utf8-m.csv") in r.stderr
        assert "Traceback" not in r.output
    assert not (tmp_path / "run").exists()


def test_manifest_in_utf8_with_bom_reads_accents(trained_run, tmp_path):
    m = tmp_path / "m.csv"
    m.write_bytes(b"\xef\xbb\xbf" + f"path,label\n{GOOD[0]},ferrit\xe9\n{GOOD[1]},lamellar\n".encode())
    r = cli("evaluate", trained_run, m, "--format", "json", "--workers", "0")
    assert r.exit_code == 3 and "1 image(s) labelled 'ferrit\xe9'" in r.stderr


def test_manifest_duplicate_path_is_used_once_with_a_warning(trained_run, tmp_path):
    m = write_manifest(tmp_path / "m.csv", [(GOOD[0], "lamellar"), (GOOD[1], "lamellar"), (GOOD[0], "lamellar")])
    r = cli("evaluate", trained_run, m, "--format", "json", "--workers", "0")
    assert r.exit_code == 0, r.stderr
    assert f"warning: {m}: {GOOD[0]} is listed twice (lines 2 and 4); each image is used once" in r.stderr
    assert json.loads(r.stdout)["overall"]["images"] == 2


def test_manifest_path_under_two_labels_is_refused(trained_run, tmp_path):
    m = write_manifest(tmp_path / "m.csv", [(GOOD[0], "lamellar"), (GOOD[1], "lamellar"), (GOOD[0], "porosity")])
    for args in (["evaluate", trained_run, m], ["train", m, "-o", tmp_path / "run"]):
        r = cli(*args)
        assert r.exit_code == 1
        assert (f"{GOOD[0]} is labelled 'lamellar' on line 2 and 'porosity' on line 4; an image has one "
                "label") in r.stderr
    assert not (tmp_path / "run").exists()


def test_manifest_path_in_two_splits_is_refused(trained_run, tmp_path):
    m = tmp_path / "m.csv"
    m.write_text(f"path,label,split\n{GOOD[0]},lamellar,train\n{GOOD[1]},lamellar,val\n{GOOD[0]},lamellar,test\n")
    r = cli("evaluate", trained_run, m)
    assert r.exit_code == 1 and "is in split 'train' on line 2 and 'test' on line 4" in r.stderr


# --- 15. evaluate on a batch of one class --------------------------------------------------------------------

def test_evaluate_a_one_class_folder(trained_run, tmp_path):
    batch = tmp_path / "batch" / "lamellar"
    folder_of_good_images(batch, 3)
    r = cli("evaluate", trained_run, tmp_path / "batch", "--format", "json", "--workers", "0")
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    support = {c["class"]: c["support"] for c in report["per_class"]}
    assert support.pop("lamellar") == 3 and set(support.values()) == {0} and report["overall"]["images"] == 3
    m = write_manifest(tmp_path / "one.csv", [(f, "lamellar") for f in GOOD])  # the same as a manifest
    r = cli("evaluate", trained_run, m, "--format", "json", "--workers", "0")
    assert r.exit_code == 0 and json.loads(r.stdout)["overall"]["images"] == 3


def test_training_still_needs_two_classes(tmp_path):
    folder_of_good_images(tmp_path / "data" / "lamellar", 3)
    r = cli("train", tmp_path / "data", "-o", tmp_path / "run")
    assert r.exit_code == 1 and "only one class ('lamellar'); a classifier needs at least two" in r.stderr


# --- 16. float TIFFs: float in, float out; raw units get a warning, never a silent answer -----------------------

@pytest.fixture
def raw_float_tiff(tmp_path) -> Path:
    """A float32 TIFF in raw detector units (0..1000), the kind a 16-bit camera's software exports."""
    d = tmp_path / "float"
    d.mkdir()
    arr = (np.random.default_rng(0).random((64, 64)) * 1000).astype(np.float32)
    tifffile.imwrite(d / "raw.tif", arr)
    return d / "raw.tif"


def test_preprocess_float_tiff_stays_float_and_unclipped(raw_float_tiff, tmp_path):
    r = cli("preprocess", raw_float_tiff, "-o", tmp_path / "out", "--op", "gaussian:sigma=1", "--workers", "0")
    assert r.exit_code == 0, r.stderr
    out = tifffile.imread(tmp_path / "out" / "raw.tif")
    src = tifffile.imread(raw_float_tiff)
    assert out.dtype == np.float32 and out.max() > 100 and abs(out.mean() - src.mean()) < 5


def test_preprocess_float_tiff_in_0_1_stays_float(tmp_path):
    arr = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    tifffile.imwrite(tmp_path / "unit.tif", arr)
    r = cli("preprocess", tmp_path / "unit.tif", "-o", tmp_path / "out", "--op", "invert", "--workers", "0")
    assert r.exit_code == 0, r.stderr
    np.testing.assert_allclose(tifffile.imread(tmp_path / "out" / "unit.tif"), 1 - arr, atol=1e-6)


def test_preprocess_refuses_clipping_op_on_raw_float_units(raw_float_tiff, tmp_path):
    r = cli("preprocess", raw_float_tiff, "-o", tmp_path / "out", "--op", "clahe", "--workers", "0")
    assert r.exit_code == 1
    assert "raw.tif: float image with values in [" in r.stderr
    assert ("; op 'clahe' works on [0, 1] and would clip them: put 'stretch' before it, or rescale the image to "
            "[0, 1]") in r.stderr
    assert not (tmp_path / "out" / "raw.tif").exists()
    r = cli("preprocess", raw_float_tiff, "-o", tmp_path / "out", "--op", "stretch", "--op", "clahe", "--workers", "0")
    assert r.exit_code == 0, r.stderr
    out = tifffile.imread(tmp_path / "out" / "raw.tif")
    assert out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1 and out.std() > 0.1


def test_predict_warns_on_values_far_outside_the_training_range(trained_run, raw_float_tiff):
    r = cli("predict", trained_run, raw_float_tiff, GOOD[0], "--workers", "0")
    assert r.exit_code == 0, r.stderr
    assert len(rows_of(r.stdout)) == 2
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"warning: {raw_float_tiff}: pixel values span [")
    assert "far outside what the model saw in training" in lines[0]


def test_evaluate_warns_on_values_far_outside_the_training_range(trained_run, raw_float_tiff, tmp_path):
    m = write_manifest(tmp_path / "m.csv", [(str(raw_float_tiff), "lamellar"), (GOOD[0], "lamellar")])
    r = cli("evaluate", trained_run, m, "--format", "json", "--workers", "0")
    assert r.exit_code == 0, r.stderr
    assert f"warning: {raw_float_tiff}: pixel values span" in r.stderr and GOOD[0] not in r.stderr


def test_explain_warns_on_values_far_outside_the_training_range(trained_run, raw_float_tiff, tmp_path):
    r = cli("explain", trained_run, raw_float_tiff, GOOD[0], "-o", tmp_path / "maps", "--workers", "0")
    assert r.exit_code == 0, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"warning: {raw_float_tiff}: pixel values span [")
    assert len(list((tmp_path / "maps").iterdir())) == 2


def test_no_range_warning_for_ordinary_images(trained_run, tmp_path):
    r = cli("predict", trained_run, SAMPLE, "-r", "--workers", "0")
    assert r.exit_code == 0 and r.stderr == ""


# --- 2. rows reach a slow pipe while its writer is still running -----------------------------------------------

def test_rows_stream_while_stdin_is_still_open(trained_run):
    """Each row must arrive while stdin is still open: the test only writes the next path after reading
    the previous row, so a predict that waited for the end of input (or a full batch) would hang here
    until the guard gives up."""
    import select

    proc = subprocess.Popen([sys.executable, "-m", "microcli", "predict", str(trained_run), "-", "--format", "jsonl"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def next_line() -> str:
        ready, _, _ = select.select([proc.stdout], [], [], 120)  # a hang guard, not a timing assertion
        if not ready:
            proc.kill()
            pytest.fail("no row while the input was still open")
        return proc.stdout.readline()

    try:
        for path in GOOD[:2]:
            proc.stdin.write(path + "\n")
            proc.stdin.flush()
            assert json.loads(next_line())["path"] == path
        proc.stdin.write(GOOD[2] + "\n")
        proc.stdin.close()
        assert json.loads(next_line())["path"] == GOOD[2]
        assert proc.wait(60) == 0
    finally:
        proc.kill()
        proc.stdout.close()
        proc.stderr.close()


def test_mark_stalls_flushes_only_when_the_source_waits():
    import threading

    from microcli.parallel import FLUSH, bounded_map
    from microcli.predict import mark_stalls

    go = threading.Event()

    def source():
        yield "a"
        go.wait()  # the source stalls until the consumer has seen the flush
        yield "b"
        yield "c"

    it = mark_stalls(source(), 0.01)
    assert next(it) == "a" and next(it) is FLUSH
    go.set()
    assert list(it) == ["b", "c"]

    def boom():
        yield "a"
        raise ValueError("broken source")

    with pytest.raises(ValueError, match="broken source"):
        list(mark_stalls(boom(), 10))
    for workers in (0, 2):  # FLUSH passes through bounded_map after everything before it
        got = list(bounded_map(str.upper, ["a", "b", FLUSH, "c"], workers=workers, chunk=8, threads=True))
        assert got == ["A", "B", FLUSH, "C"]


# --- 1. predict -o never writes over an input or an existing file; 10. -o into a missing folder or onto one ----

def test_output_named_like_an_image_is_refused(trained_run, tmp_path):
    folder = folder_of_good_images(tmp_path / "i")
    target = folder / Path(GOOD[1]).name
    before = target.read_bytes()
    r = cli("predict", trained_run, folder, "-r", "-o", target)
    assert r.exit_code == 2
    assert "an image file name is refused so that no micrograph is ever overwritten" in r.stderr
    assert target.read_bytes() == before and r.stdout == ""


def test_output_that_is_an_input_is_refused_even_with_force_or_append(trained_run, tmp_path):
    notes = tmp_path / "notes.csv"
    kept = "path,class,confidence\nkeep me\n"  # this run's header, so that --append gets as far as the rows
    notes.write_text(kept)
    for flag in ("--force", "--append"):
        # -b 1: rows for the first images are written before the output turns up among the inputs
        r = cli("predict", trained_run, *GOOD, notes, "-o", notes, flag, "-b", "1", "--workers", "0")
        assert r.exit_code == 1, r.output
        assert f"--output {notes}: is one of the inputs; choose another file name" in r.stderr
        assert notes.read_text() == kept, flag
    assert not list(tmp_path.glob(".notes.csv.tmp*"))


def test_existing_output_needs_force_or_append(trained_run, tmp_path):
    out = tmp_path / "p.csv"
    out.write_text("old,rows\n")
    r = cli("predict", trained_run, GOOD[0], "-o", out, "--workers", "0")
    assert r.exit_code == 1 and "p.csv: exists; use --force to replace it or --append to add rows" in r.stderr
    assert out.read_text() == "old,rows\n"
    assert cli("predict", trained_run, GOOD[0], "-o", out, "--force", "--workers", "0").exit_code == 0
    assert [row["path"] for row in rows_of(out.read_text())] == [GOOD[0]]
    assert cli("predict", trained_run, GOOD[1], "-o", out, "--append", "--workers", "0").exit_code == 0
    assert [row["path"] for row in rows_of(out.read_text())] == GOOD[:2]


def test_output_into_a_missing_folder_creates_it(trained_run, tmp_path):
    out = tmp_path / "new" / "sub" / "p.csv"
    r = cli("predict", trained_run, GOOD[0], "-o", out, "--workers", "0")
    assert r.exit_code == 0, r.stderr
    assert [row["path"] for row in rows_of(out.read_text())] == [GOOD[0]]


def test_output_onto_a_folder_is_one_line(trained_run, tmp_path):
    r = cli("predict", trained_run, GOOD[0], "-o", tmp_path)
    assert r.exit_code == 2 and r.stderr == f"error: --output {tmp_path}: is a folder; give a file name\n"


# --- 6. a failed or interrupted train never blocks the next run; 8. leftovers of a killed run; 12. --img-size -------

def small_data(root: Path, n: int = 6, classes=("lamellar", "porosity")) -> Path:
    for cls in classes:
        (root / cls).mkdir(parents=True, exist_ok=True)
        for f in sorted((SAMPLE / cls).glob("*.png"))[:n]:
            shutil.copy(f, root / cls)
    return root


def train(*args, **kw):
    arch = () if "--arch" in map(str, args) else ("--arch", "lenet")  # the quick network unless a test names one
    return cli("train", *args, "--epochs", kw.pop("epochs", "1"), "--workers", "0", "--img-size", "32", *arch, **kw)


def test_missing_pretrained_file_fails_before_reading_data(tmp_path):
    data = small_data(tmp_path / "data")
    r = cli("train", data, "-o", tmp_path / "run", "--arch", "resnet18", "--pretrained", tmp_path / "x.pt")
    assert r.exit_code == 2
    assert f"--pretrained {tmp_path / 'x.pt'}: no such file" in r.stderr
    assert "classes," not in r.stderr and not (tmp_path / "run").exists()  # no image was read


@pytest.mark.slow
def test_unloadable_pretrained_file_leaves_no_blocking_folder(tmp_path):
    data = small_data(tmp_path / "data")
    (tmp_path / "x.pt").write_text("not a state_dict")
    r = cli("train", data, "-o", tmp_path / "run", "--arch", "resnet18", "--pretrained", tmp_path / "x.pt",
            "--workers", "0", "--img-size", "32")
    assert r.exit_code == 1 and "x.pt: not a loadable state_dict" in r.stderr
    r = train(data, "-o", tmp_path / "run")  # same folder, no --force
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "run" / "best.pt").is_file()


@pytest.mark.slow
def test_folder_left_before_the_first_epoch_is_replaced_without_force(tmp_path):
    data = small_data(tmp_path / "data")
    run = tmp_path / "run"
    run.mkdir()
    (run / "split.csv").write_text("path,label,group,split\n")  # what an early failure used to leave
    r = train("--resume", run)
    assert r.exit_code == 2
    assert "no config.json there (the run never started training; start it again without --resume)" in r.stderr
    r = train("--resume", tmp_path / "nothere")
    assert r.exit_code == 2 and "--resume " in r.stderr and "nothere: no such folder" in r.stderr, r.stderr
    r = train(data, "-o", run)
    assert r.exit_code == 0, r.stderr
    assert (run / "best.pt").is_file() and len(rows_of((run / "split.csv").read_text())) == 12


@pytest.mark.slow
def test_ctrl_c_while_reading_images_leaves_a_replaceable_or_resumable_folder(tmp_path):
    """SIGINT once the images start loading (non-local-means makes that slow). Whenever it lands, the
    folder must let the next run start: replaced without --force, or resumed."""
    import signal

    data = small_data(tmp_path / "data", n=40)
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "microcli", "train", str(data), "-o", str(run), "--epochs", "1",
                             "--workers", "0", "--img-size", "32", "--preprocess", "denoise:method=nlm", "--arch", "lenet"],
                            stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:
            if line.startswith("sampler:"):  # the recipe's last line, printed just before the images are read
                proc.send_signal(signal.SIGINT)
                break
        assert proc.wait(300) == 130
    finally:
        proc.kill()
        proc.stderr.close()
    if (run / "last.pt").is_file():  # the signal came after the first batch: resumable
        r = train("--resume", run)
    else:
        assert not run.exists() or {p.name for p in run.iterdir()} <= {"config.json", "split.csv", "skipped.csv"}
        r = train(data, "-o", run)
    assert r.exit_code == 0, r.stderr
    assert (run / "best.pt").is_file()


@pytest.fixture
def finished_run(tmp_path) -> Path:
    data = small_data(tmp_path / "data")
    r = train(data, "-o", tmp_path / "run", epochs="2")
    assert r.exit_code == 0, r.stderr
    return tmp_path / "run"


@pytest.mark.slow
def test_stale_temporary_files_are_removed(finished_run):
    stale = finished_run / ".last.pt.tmp999999"
    stale.write_bytes(b"half a model")
    mine = finished_run / "notes.txt"
    mine.write_text("the user's own file")
    r = train("--resume", finished_run, epochs="3")
    assert r.exit_code == 0, r.stderr
    assert not stale.exists()
    stale.write_bytes(b"half a model")
    r = train(finished_run.parent / "data", "-o", finished_run, "--force")
    assert r.exit_code == 0, r.stderr
    assert not stale.exists() and mine.read_text() == "the user's own file"


@pytest.mark.slow
def test_resume_trims_metrics_to_last_pt(finished_run):
    metrics = finished_run / "metrics.csv"
    rows = rows_of(metrics.read_text())
    assert [r["epoch"] for r in rows] == ["1", "2"]
    with open(metrics, "a", newline="") as fh:  # a kill between the metrics row and last.pt
        csv.writer(fh).writerow(["3"] + ["999"] * (len(rows[0]) - 1))
    r = train("--resume", finished_run, epochs="3")
    assert r.exit_code == 0, r.stderr
    rows = rows_of(metrics.read_text())
    assert [r["epoch"] for r in rows] == ["1", "2", "3"] and rows[2]["train_loss"] != "999"


@pytest.mark.parametrize("arch,size,rule", [("lenet", 4, "16..2048 for lenet"), ("lenet", 100000, "16..2048 for lenet"),
                                            ("resnet18", 16, "32..2048 for resnet18")])
def test_img_size_out_of_range_is_a_usage_error_before_any_io(tmp_path, arch, size, rule):
    data = small_data(tmp_path / "data")
    r = cli("train", data, "-o", tmp_path / "run", "--arch", arch, "--img-size", size)
    assert r.exit_code == 2
    assert r.stderr == f"error: --img-size must be 0 (auto) or {rule}, got {size}\n"
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_train_header_counts_only_the_images_used(tmp_path):
    data = small_data(tmp_path / "data")
    (data / "lamellar" / "broken.png").write_text("not an image")
    r = train(data, "-o", tmp_path / "run")
    assert r.exit_code == 3
    header = next(line for line in r.stderr.splitlines() if "classes," in line)
    n_train, n_val = (int(x) for x in header.split(", ")[1].replace(" images", "").replace(" train /", "").split()[:2])
    assert n_train + n_val == len(rows_of((tmp_path / "run" / "split.csv").read_text())) == 12


def test_a_given_split_whose_val_part_lacks_a_class_is_warned_about(tmp_path):
    data = small_data(tmp_path / "data", classes=("lamellar", "porosity", "martensite"))
    split = tmp_path / "split"
    for f in sorted(data.glob("*/*.png")):
        part = "val" if f.name.endswith(("_0000.png", "_0001.png")) and f.parent.name != "porosity" else "train"
        (split / part / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, split / part / f.parent.name)
    r = train(split, "-o", tmp_path / "run")
    assert r.exit_code == 0, r.stderr
    assert (f"warning: {split}: the val part has no image of class(es) 'porosity': validation macro-F1, which "
            "picks best.pt and stops early, cannot see it") in flat(r.stderr)
    assert "the train part" not in r.stderr


def test_a_given_split_whose_train_part_lacks_a_class_is_refused_before_any_image_is_read(tmp_path):
    data = small_data(tmp_path / "data")
    m = tmp_path / "m.csv"
    files = sorted((data / "lamellar").glob("*.png")) + sorted((data / "porosity").glob("*.png"))
    rows = [f"{f},{f.parent.name},{'train' if f.parent.name == 'lamellar' and i < 4 else 'val'}"
            for i, f in enumerate(files)]
    m.write_text("path,label,split\n" + "\n".join(rows) + "\n")
    r = train(m, "-o", tmp_path / "run")
    assert r.exit_code == 1
    assert (f"error: {m}: the train part has no image of class(es) 'porosity', which only the other parts hold; "
            "a model cannot learn a class it never sees") in flat(r.stderr)
    assert not (tmp_path / "run").exists()


def test_split_folders_name_loose_images_beside_them_and_refuse_an_empty_class_folder_in_val(tmp_path):
    data = tmp_path / "data"
    small_data(data / "train")
    small_data(data / "val", n=2)
    shutil.copy(GOOD[0], data / "stray.png")
    (data / "val" / "ghost").mkdir()
    r = train(data, "-o", tmp_path / "run")
    assert r.exit_code == 1 and not (tmp_path / "run").exists()
    assert (f"warning: {data}: 1 image(s) lie outside the train/val/test folders and are not used (stray.png)"
            in flat(r.stderr))
    assert f"error: {data / 'val'}: empty class folder(s): 'ghost'" in flat(r.stderr)


def test_explain_writes_every_heat_map_when_its_reader_has_gone(trained_run, tmp_path):
    """`explain ... | head -1`: the rows' reader leaves, the pictures (the real output) are all written."""
    proc = subprocess.Popen([sys.executable, "-m", "microcli", "explain", str(trained_run), *GOOD, "-o",
                             str(tmp_path / "maps"), "--workers", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # no reader at all: the first row already meets a closed pipe
    try:
        assert proc.wait(120) == 0, proc.stderr.read()
        assert proc.stderr.read() == ""
    finally:
        proc.kill()
        proc.stderr.close()
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == sorted(Path(g).stem + "_cam.png" for g in GOOD)


def test_run_folders_that_cannot_be_or_should_not_be_are_refused_before_any_image_is_read(tmp_path):
    data = small_data(tmp_path / "data")
    (tmp_path / "afile.txt").write_text("mine")
    for out, said in ((tmp_path / "afile.txt", f"--out {tmp_path / 'afile.txt'}: is a file; give a folder"),
                      (tmp_path / "afile.txt" / "run", f"--out {tmp_path / 'afile.txt' / 'run'}: "
                                                        f"{tmp_path / 'afile.txt'} is a file, not a folder"),
                      (data / "runs" / "a", f"--out {data / 'runs' / 'a'}: lies inside the data folder {data}")):
        for folds in ((), ("--folds", "2")):
            r = train(data, "-o", out, *folds)
            assert r.exit_code == 2 and said in flat(r.stderr) and "classes," not in r.stderr, r.stderr
    assert (tmp_path / "afile.txt").read_text() == "mine" and not (data / "runs").exists()


def test_a_run_folder_left_inside_the_data_is_refused_not_read_as_a_class(tmp_path):
    data = small_data(tmp_path / "data")
    assert train(data, "-o", tmp_path / "run").exit_code == 0
    shutil.copytree(tmp_path / "run", data / "porosity" / "old run")  # as an older version let it be written
    r = train(data, "-o", tmp_path / "run2")
    assert r.exit_code == 1
    assert (f"error: {data / 'porosity' / 'old run'}: is a microcli run folder inside the data set, and its plots "
            "would be read as images of a class") in flat(r.stderr)


def test_force_over_a_cross_validation_leaves_none_of_its_folds_or_reports(tmp_path):
    data = small_data(tmp_path / "data")
    run = tmp_path / "run"
    assert train(data, "-o", run, "--folds", "3", "--refit").exit_code == 0
    (run / "notes.txt").write_text("mine")
    assert {"fold-3", "final", "cv_report.json"} <= {p.name for p in run.iterdir()}
    assert train(data, "-o", run, "--folds", "2", "--force").exit_code == 0
    assert not (run / "fold-3").exists() and not (run / "final").exists()
    assert train(data, "-o", run, "--force").exit_code == 0
    left = {p.name for p in run.iterdir()}
    assert "notes.txt" in left and not {"fold-1", "fold-2", "cv_report.json", "folds.csv"} & left


def test_a_path_under_a_file_is_one_message_not_a_traceback(trained_run, tmp_path):
    (tmp_path / "afile.txt").write_text("mine")
    for cmd, source, option, name in (("split", SAMPLE, "--output", "s.csv"), ("export", trained_run, "-o", "m.onnx")):
        r = cli(cmd, source, "-o", tmp_path / "afile.txt" / name)
        assert (r.exit_code, r.stderr) == (2, f"error: {option} {tmp_path / 'afile.txt' / name}: "
                                              f"{tmp_path / 'afile.txt'} is a file, not a folder\n")
    r = cli("export", trained_run, "-o", "/proc/m.onnx")  # a folder nobody may write in: the OS says why
    assert r.exit_code == 1 and r.stderr.startswith("error: /proc/") and not isinstance(r.exception, OSError)


def test_a_given_split_with_a_specimen_on_both_sides_is_warned_about(tmp_path):
    data = small_data(tmp_path / "data")
    lines = ["path,label,group,split"]
    for cls in ("lamellar", "porosity"):
        for i, f in enumerate(sorted((data / cls).glob("*.png"))):
            lines.append(f"{f},{cls},{cls}-g{i % 3},{'val' if i in (0, 5) else 'train'}")  # g0 and g2 on both sides
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    r = train(tmp_path / "m.csv", "-o", tmp_path / "run")
    assert r.exit_code == 0, r.stderr
    assert (f"warning: {tmp_path / 'm.csv'}: 4 group(s) have images in both train and val (e.g. 'lamellar-g0'): val "
            "then holds specimens that training saw") in flat(r.stderr)


def test_a_class_whose_only_validation_image_is_unreadable_is_warned_about(tmp_path, truncated_png):
    data = tmp_path / "data"
    small_data(data / "train")
    small_data(data / "val", n=1)
    (data / "val" / "porosity" / "porosity_0000.png").write_bytes(truncated_png.read_bytes())
    r = train(data, "-o", tmp_path / "run")
    assert r.exit_code == 3, r.stderr
    assert ("warning: every validation image of class(es) 'porosity' was unreadable: validation macro-F1 cannot see "
            "them") in flat(r.stderr)

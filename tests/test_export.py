"""microcli export and the engines: round trips bundle -> ONNX / TorchScript -> predict, metadata, info,
bioimage.io, the bad inputs, and engines that are not installed."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from microcli.checkpoint import Bundle, load_bundle, save_bundle, versions
from microcli.cli.app import app
from microcli.engines import Predictor, installed, network_views
from microcli.errors import CheckpointError, ExportError
from microcli.export import TOLERANCE, compare
from microcli.inputs import CROP_WHOLE, InputSpec, prepare_array
from microcli.modelfile import load_model, onnx_metadata_props
from microcli.models import REGISTRY, create_model, get_model_info

from .conftest import REPO, save_png

pytestmark = pytest.mark.slow
runner = CliRunner()
SAMPLE = REPO / "sample_images"
CLASSES = sorted(p.name for p in SAMPLE.iterdir() if p.is_dir())
ONNX_ENGINES = [e for e in ("onnxruntime", "openvino") if installed(e)]
needs_onnx = pytest.mark.skipif(importlib.util.find_spec("onnx") is None or not installed("onnxruntime"),
                                reason="onnx and onnxruntime are not installed (pip install -e '.[fast]')")


def make_bundle(path, arch: str, channels: int, fit: str, *, size: int = 48, pipeline: tuple = ()) -> Bundle:
    """A real bundle of a freshly initialised network (seeded): what export reads, without training."""
    torch.manual_seed(0)
    net = create_model(arch, len(CLASSES), channels)
    whole = CROP_WHOLE * size if fit == "crop" and get_model_info(arch).any_size else 0  # as training sets it
    spec = InputSpec(channels, size, fit, pipeline, (0.45,) * channels, (0.22,) * channels, whole)
    bundle = Bundle(arch, CLASSES, spec, net.state_dict(), {"arch": arch}, {"val_macro_f1": 0.5}, {"train_images": 1},
                    versions(), path=str(path))
    save_bundle(bundle, path)
    return bundle


def predict_rows(model, *extra: str, files=None) -> dict[str, np.ndarray]:
    args = ["predict", str(model), *(files or [str(SAMPLE)]), "-r", "--all-probs", "--format", "jsonl",
            "--workers", "0", *extra]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    return {row["path"]: np.array([row[f"p_{c}"] for c in CLASSES]) for row in rows}


def same_classes(ref: dict, got: dict) -> None:
    """Same files, softmax within the export tolerance, and the same class wherever the reference's top
    two are further apart than that (a closer pair is a tie that rounding may break either way)."""
    assert list(got) == list(ref)
    for path, p in ref.items():
        q = got[path]
        assert np.abs(p - q).max() <= TOLERANCE + 2e-6, path  # rows are rounded to 6 decimals
        top2 = np.sort(p)[-2:]
        if top2[1] - top2[0] > 2 * TOLERANCE:
            assert p.argmax() == q.argmax(), path


VARIANTS = [(arch, 1, "resize") for arch in REGISTRY] + [(arch, 3, "crop") for arch in REGISTRY] + [
    ("lenet", 3, "resize"), ("lenet", 1, "crop"), ("lenet", 1, "squash"), ("resnet10", 3, "squash")]


@needs_onnx
@pytest.mark.parametrize("arch,channels,fit", VARIANTS)
def test_round_trip_gives_the_same_classes(tmp_path, arch, channels, fit):
    size = 64 if fit == "crop" else 32  # crop: 128 px samples -> the whole image (ResNets), 4 tiles (LeNet)
    bundle = make_bundle(tmp_path / "m.pt", arch, channels, fit, size=size)
    per_class = 2 if arch in ("resnet34", "resnet50") else 4  # the big ones cost seconds per engine
    files = [str(p) for c in CLASSES for p in sorted((SAMPLE / c).glob("*.png"))[:per_class]]
    ref = predict_rows(bundle.path, "--engine", "torch", files=files)
    for fmt, suffix in (("onnx", ".onnx"), ("torchscript", ".ts")):
        out = tmp_path / f"m{suffix}"
        r = runner.invoke(app, ["export", bundle.path, "-o", str(out)])
        assert r.exit_code == 0, r.stderr
        said = " ".join(r.stderr.split())  # undo rich's wrapping
        assert f"wrote {out}" in said and "max softmax difference" in said
        engines = ONNX_ENGINES if fmt == "onnx" else ["torch"]
        for engine in engines:
            same_classes(ref, predict_rows(out, "--engine", engine, files=files))
        if fit == "crop":  # ResNets: the whole 128 px image in one pass; LeNet: 64 px tiles
            r = runner.invoke(app, ["info", str(out)])
            said = "evaluated on tiles" if arch == "lenet" else "images up to 128 px evaluated whole"
            assert r.exit_code == 0 and said in " ".join(r.stdout.split())


@needs_onnx
def test_crop_resnet_runs_images_of_several_sizes_whole_or_tiled_on_every_engine(tmp_path):
    """One call mixes whole images of two shapes with a tiled one: the exported graph takes every shape."""
    bundle = make_bundle(tmp_path / "m.pt", "resnet10-half", 1, "crop", size=64)  # whole up to 128 px
    rng = np.random.default_rng(0)
    files = [str(save_png(tmp_path / f"{h}x{w}.png", (rng.random((h, w)) * 255).astype(np.uint8)))
             for h, w in ((100, 120), (128, 128), (90, 300), (100, 120))]  # 90 x 300: tiles of 64
    ref = predict_rows(bundle.path, "--engine", "torch", files=files)
    views = network_views([prepare_array(f, bundle.input) for f in files], bundle.input)
    assert sorted(len(o) for _, o, _ in views.groups) == [1, 2, 10]  # 100 x 120 twice, 128 x 128, 2 x 5 tiles
    out = tmp_path / "m.onnx"
    r = runner.invoke(app, ["export", bundle.path, "-o", str(out)])
    assert r.exit_code == 0, r.stderr
    for engine in ONNX_ENGINES:
        same_classes(ref, predict_rows(out, "--engine", engine, files=files))


@needs_onnx
def test_metadata_survives_and_info_reads_exported_files(trained_run, tmp_path):
    bundle = load_model(trained_run)
    for suffix, kind in ((".onnx", "onnx"), (".ts", "torchscript")):
        out = tmp_path / f"model{suffix}"
        r = runner.invoke(app, ["export", str(trained_run), "-o", str(out)])
        assert r.exit_code == 0, r.stderr
        m = load_model(out)
        assert m.kind == kind and m.arch == bundle.arch and m.classes == bundle.classes
        assert m.input == bundle.input and m.metrics == bundle.metrics and m.parameters == bundle.parameters
        assert m.versions == bundle.versions and m.data_summary == bundle.data_summary
        check = m.export["check"]
        assert check["tolerance"] == TOLERANCE and check["max_abs_diff"] <= TOLERANCE
        assert "images of the training run" in check["images"]  # split.csv beside best.pt was found
        r = runner.invoke(app, ["info", str(out), "--format", "json"])
        assert r.exit_code == 0, r.stderr
        d = json.loads(r.stdout)
        assert d["kind"] == kind and d["classes"] == bundle.classes and d["parameters"] == bundle.parameters
        assert d["input"]["img_size"] == 96 and d["export"]["format"] == kind
        r = runner.invoke(app, ["info", str(out)])
        assert r.exit_code == 0 and "export check" in r.stdout and bundle.arch in r.stdout
        r = runner.invoke(app, ["explain", str(out), str(REPO / "sample_images" / "lamellar"), "-o",
                                str(tmp_path / "x")])
        label = {"onnx": "ONNX", "torchscript": "TorchScript"}[kind]
        assert r.exit_code == 1 and (f"{out}: an exported {label} model; this needs a microcli .pt bundle "
                                     "(a run's best.pt)") in " ".join(r.stderr.split())
    meta = json.loads(onnx_metadata_props(tmp_path / "model.onnx")["microcli"])
    assert meta["export"]["opset"] == 17 and meta["export"]["input"]["shape"][0] == "batch"


def readme_onnx_example() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("```python\n", text.index("**Running an ONNX file without microcli.**")) + len("```python\n")
    return text[start:text.index("```", start)]


@needs_onnx
def test_the_readme_onnx_example_prepares_images_as_microcli_does(trained_run, tmp_path):
    """The README's lines, run as they are (onnxruntime, numpy and Pillow, no microcli), on PNGs and on a
    JPEG large enough for Pillow's reduced-scale decoding: same class and probability as predict."""
    from PIL import Image

    out = tmp_path / "model.onnx"
    assert runner.invoke(app, ["export", str(trained_run), "-o", str(out)]).exit_code == 0
    code = readme_onnx_example()
    assert code.count("\n") <= 14
    files = sorted(str(p) for p in (SAMPLE / "lamellar").glob("*.png"))[:3]
    files.append(str(tmp_path / "big.jpg"))  # 256 px: decoded at half scale (128 >= the model's 96)
    Image.open(SAMPLE / "porosity" / "porosity_0000.png").resize((256, 256)).save(files[-1], quality=90)
    ref = predict_rows(trained_run, "--engine", "torch", files=files)
    for f in files:
        script = code.replace('"model.onnx"', repr(str(out))).replace('"scan.png"', repr(f))
        r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
        cls, conf = r.stdout.split()
        assert cls == CLASSES[int(ref[f].argmax())]
        assert float(conf) == pytest.approx(ref[f].max(), abs=2e-6)


def test_export_check_rejects_a_different_softmax():
    p = np.array([[0.7, 0.3]], np.float32)
    assert compare(p, p + 5e-5, "x") == pytest.approx(5e-5, rel=1e-3)
    with pytest.raises(ExportError, match=r"softmax differs from the PyTorch model by 0.01 \(tolerance 0.0001\)"):
        compare(p, p + [[0.01, -0.01]], "ONNX export")
    with pytest.raises(ExportError, match="nothing written"):
        compare(p, p * np.nan, "ONNX export")


@pytest.fixture(scope="module")
def bioimageio_zip(trained_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("bioimageio") / "model.zip"
    r = runner.invoke(app, ["export", str(trained_run), "-o", str(out), "--author", "A. Metallographer"])
    assert r.exit_code == 0, r.stderr
    return out


def test_a_bioimageio_package_given_as_a_model_is_named_as_such(bioimageio_zip):
    r = runner.invoke(app, ["info", str(bioimageio_zip)])
    assert r.exit_code == 1
    assert (f"error: {bioimageio_zip}: a bioimage.io package, for bioimage.io tools (deepImageJ, ilastik...); "
            "microcli reads the .pt bundle it was exported from") in " ".join(r.stderr.split())


@needs_onnx
def test_bioimageio_package_holds_checked_weights_test_tensors_and_a_cover(trained_run, bioimageio_zip):
    from PIL import Image

    zf = zipfile.ZipFile(bioimageio_zip)
    assert set(zf.namelist()) == {"rdf.yaml", "weights.onnx", "weights_torchscript.pt", "test_input.npy",
                                  "test_output.npy", "sample_input.tif", "sample_output.tif", "cover.png",
                                  "README.md", "classes.txt"}
    x, y = np.load(zf.open("test_input.npy")), np.load(zf.open("test_output.npy"))
    assert x.shape == (1, 1, 96, 96) and y.shape == (1, len(CLASSES))
    np.testing.assert_allclose(y, Predictor(load_model(trained_run)).probs(x), atol=TOLERANCE)
    assert zf.read("classes.txt").decode().split() == CLASSES
    with Image.open(zf.open("cover.png")) as im:
        assert im.size == (512, 256)
    rdf = zf.read("rdf.yaml").decode()
    assert 'format_version: "0.5.4"' in rdf and '- name: "A. Metallographer"' in rdf
    assert "## Validation" in zf.read("README.md").decode()


@needs_onnx
def test_bioimageio_package_passes_the_spec_validation(bioimageio_zip):
    spec = pytest.importorskip("bioimageio.spec", reason="bioimageio.spec is not installed")
    descr = spec.load_description(bioimageio_zip, perform_io_checks=True)
    summary = descr.validation_summary
    assert summary.status in ("valid-format", "passed"), summary.format()
    assert [a.channel_names for a in descr.outputs[0].axes if a.type == "channel"] == [CLASSES]
    assert set(descr.weights.available_formats) == {"onnx", "torchscript"}


def test_bad_inputs_write_nothing(trained_run, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    junk = tmp_path / "junk.pt"
    junk.write_text("not a model")
    r = runner.invoke(app, ["export", str(junk), "-o", str(out / "m.onnx")])
    assert r.exit_code == 1 and "junk.pt: not a model file: neither a torch checkpoint" in r.stderr
    r = runner.invoke(app, ["export", str(trained_run), "-o", str(out / "m.onnx"), "--format", "tflite"])
    assert r.exit_code == 2 and "tflite" in r.stderr
    r = runner.invoke(app, ["export", str(trained_run), "-o", str(out / "m.bin")])
    assert r.exit_code == 2 and "--format is needed" in r.stderr
    r = runner.invoke(app, ["export", str(trained_run / "best.pt"), "-o", str(trained_run / "best.pt"), "--force",
                            "--format", "torchscript"])
    assert r.exit_code == 1 and "is the model being exported" in r.stderr
    assert load_model(trained_run).kind == "bundle"
    assert list(out.iterdir()) == []  # no half-written or temporary file anywhere
    existing = out / "m.ts"
    existing.write_bytes(b"keep me")
    r = runner.invoke(app, ["export", str(trained_run), "-o", str(existing)])
    assert r.exit_code == 1 and "exists; use --force" in r.stderr and existing.read_bytes() == b"keep me"
    assert runner.invoke(app, ["export", str(trained_run), "-o", str(existing), "--force"]).exit_code == 0
    assert load_model(existing).kind == "torchscript"
    r = runner.invoke(app, ["export", str(existing), "-o", str(out / "again.ts")])
    assert r.exit_code == 1 and "already an exported torchscript file" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["m.ts"]


def run_without(modules: list[str], *args: str) -> subprocess.CompletedProcess:
    """microcli in a fresh interpreter in which `modules` cannot be imported: Python's own way of saying
    "not installed" (a None entry in sys.modules makes `import` raise ImportError). stderr comes back with
    rich's line wrapping undone."""
    code = ("import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules)
            + "from microcli.cli.app import app\napp(prog_name='microcli')\n")
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=os.environ, cwd=REPO)
    r.stderr = " ".join(r.stderr.split())
    return r


@needs_onnx
def test_missing_engine_falls_back_with_a_message(trained_run, tmp_path):
    files = sorted(str(p) for p in (SAMPLE / "porosity").glob("*.png"))[:3]
    r = run_without(["openvino"], "predict", str(trained_run), *files, "--engine", "openvino", "--workers", "0")
    assert r.returncode == 0, r.stderr
    assert "--engine openvino: openvino is not installed (pip install 'microcli[fast]'); using onnxruntime" in r.stderr
    assert len(r.stdout.splitlines()) == 4
    r = run_without(["openvino", "onnxruntime"], "predict", str(trained_run), *files, "--engine", "onnxruntime",
                    "--workers", "0")
    assert r.returncode == 0 and "using torch" in r.stderr and len(r.stdout.splitlines()) == 4
    onnx_file = tmp_path / "m.onnx"
    assert runner.invoke(app, ["export", str(trained_run), "-o", str(onnx_file)]).exit_code == 0
    r = run_without(["openvino", "onnxruntime"], "predict", str(onnx_file), *files, "--workers", "0")
    assert r.returncode == 1 and "running ONNX files needs onnxruntime or openvino: pip install 'microcli[fast]'" \
        in r.stderr and r.stdout == ""
    r = run_without(["onnx"], "export", str(trained_run), "-o", str(tmp_path / "n.onnx"))
    assert r.returncode == 1 and "needs the onnx package: pip install 'microcli[fast]'" in r.stderr
    assert not (tmp_path / "n.onnx").exists()


@needs_onnx
def test_an_onnx_file_predicts_without_torch(trained_run, tmp_path):
    """Start-up is a third of a short predict: an ONNX file (or a bundle whose conversion is cached) never
    imports torch."""
    onnx_file = tmp_path / "m.onnx"
    assert runner.invoke(app, ["export", str(trained_run), "-o", str(onnx_file)]).exit_code == 0
    files = sorted(str(p) for p in (SAMPLE / "porosity").glob("*.png"))[:3]
    r = run_without(["torch"], "predict", str(onnx_file), *files, "--workers", "0")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 4
    r = run_without(["torch"], "info", str(onnx_file))
    assert r.returncode == 0 and "export check" in r.stdout


@needs_onnx
def test_a_bundle_is_converted_once_and_then_runs_from_the_cache(trained_run, engine_cache):
    files = sorted(str(p) for p in (SAMPLE / "porosity").glob("*.png"))[:3]
    first = predict_rows(trained_run, "--engine", "onnxruntime", files=files)
    from microcli.engines import cache_key

    # other tests convert their own bundles into the same session cache: look for this one's
    cached = list((engine_cache / "onnx").glob(f"{cache_key(trained_run / 'best.pt')}*.onnx"))
    assert len(cached) == 1 and load_model(cached[0]).classes == CLASSES
    r = run_without(["torch"], "predict", str(trained_run), *files, "--engine", "onnxruntime", "--workers", "0",
                    "--all-probs", "--format", "jsonl")
    assert r.returncode == 0, r.stderr  # the bundle itself is never read: its conversion carries the metadata
    again = {row["path"]: np.array([row[f"p_{c}"] for c in CLASSES]) for row in map(json.loads, r.stdout.splitlines())}
    same_classes(first, again)


def test_network_views_tile_crop_models():
    arrays = [np.zeros((1, 128, 100), np.float32), np.zeros((1, 64, 64), np.float32)]
    tiles = network_views(arrays, InputSpec(1, 64, "crop"))  # whole 0: tiles of the training size
    (x, owner, boxes), = tiles.groups
    assert x.shape == (5, 1, 64, 64) and owner.tolist() == [0] * 4 + [1]  # 128 x 100: 2 x 2 tiles
    assert boxes[:4] == [(0, 0, 64, 64), (0, 36, 64, 64), (64, 0, 64, 64), (64, 36, 64, 64)]


@pytest.mark.parametrize("whole,ok", [(0, True), (64, True), (2048, True), (32, False), (10 ** 9, False)])
def test_a_bundles_whole_bound_is_checked_on_load(tmp_path, whole, ok):
    bundle = make_bundle(tmp_path / "m.pt", "resnet10-half", 1, "crop", size=64)
    raw = torch.load(bundle.path, weights_only=True)
    raw["input"]["whole"] = whole
    torch.save(raw, tmp_path / "edited.pt")
    if ok:
        assert load_bundle(tmp_path / "edited.pt").input.largest_input == max(whole, 64)
    else:
        with pytest.raises(CheckpointError, match=f"whole must be 0 or 64-2048 px, got {whole}"):
            load_bundle(tmp_path / "edited.pt")


def test_tta_averages_all_eight_symmetries_of_a_non_square_whole_image(tmp_path):
    bundle = make_bundle(tmp_path / "m.pt", "resnet10-half", 1, "crop", size=64)  # whole up to 128 px
    a = np.random.default_rng(0).random((1, 100, 120), dtype=np.float32)
    t = a.swapaxes(1, 2)  # the 90-degree rotations are 120 x 100
    plain = Predictor(bundle, precision="fp32")
    want = np.mean([plain.predict_arrays([np.ascontiguousarray(v)])[0] for v in
                    (a, a[:, ::-1], a[:, :, ::-1], a[:, ::-1, ::-1], t, t[:, ::-1], t[:, :, ::-1], t[:, ::-1, ::-1])], 0)
    got = Predictor(bundle, precision="fp32", tta=True).predict_arrays([a])[0]
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert not np.allclose(want, np.mean([plain.predict_arrays([np.ascontiguousarray(v)])[0] for v in
                                          (a, a[:, ::-1], a[:, :, ::-1], a[:, ::-1, ::-1])], 0), atol=1e-5)


def test_network_views_take_images_up_to_the_bound_whole_and_tile_larger_ones():
    arrays = [np.zeros((1, 128, 100), np.float32), np.zeros((1, 300, 100), np.float32),
              np.zeros((1, 64, 64), np.float32), np.zeros((1, 128, 100), np.float32)]
    views = network_views(arrays, InputSpec(1, 64, "crop", whole=128))
    shapes = {x.shape[-2:]: (owner.tolist(), boxes) for x, owner, boxes in views.groups}
    assert shapes[(128, 100)] == ([0, 3], [(0, 0, 128, 100)] * 2)  # whole, in one pass
    tiles, boxes = shapes[(64, 64)]  # 300 x 100 is over the bound: 5 x 2 tiles of 64; 64 x 64 is whole
    assert tiles == [1] * 10 + [2] and boxes[:3] == [(0, 0, 64, 64), (0, 36, 64, 64), (59, 0, 64, 64)]
    assert len(views) == 13 and [len(o) for _, o, _ in views.batches(4)] == [2, 4, 4, 3]  # one shape a batch
    assert [len(o) for _, o, _ in views.batches(4, side=64)] == [1, 1, 4, 4, 3]  # 4 tiles' pixels a batch

"""`microcli explain`: heat maps that point at the evidence, for every architecture, and the filters figure."""

from __future__ import annotations

import csv
import io
import shutil

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from microcli.checkpoint import load_bundle
from microcli.cli.app import app
from microcli.explain import CamExplainer, place_map
from microcli.inference import Predictor
from microcli.inputs import prepare_array
from microcli.kernels import classical_kernels, match_kernels
from microcli.models import REGISTRY

from .conftest import SIDE, SIZE, random_bundle, save, square_image

runner = CliRunner()


def invoke(*args, input=None):
    return runner.invoke(app, ["explain", *map(str, args), "--workers", "0"], input=input)


@pytest.fixture(scope="module")
def test_squares(tmp_path_factory):
    """Twenty unseen images, each with its square's corner."""
    rng = np.random.default_rng(11)
    folder = tmp_path_factory.mktemp("unseen")
    out = []
    for i in range(20):
        y, x = (int(v) for v in rng.integers(2, SIZE - SIDE - 2, 2))
        out.append((square_image(folder / f"sq_{i}.png", y, x, seed=100 + i), y, x))
    return out


def _inside(cam: np.ndarray, y: int, x: int, margin: int = 1) -> bool:
    """The map reaches its maximum inside the square (1 px margin: the map's cells are 2 px apart)."""
    return cam[max(0, y - margin):y + SIDE + margin, max(0, x - margin):x + SIDE + margin].max() == cam.max()


def test_heat_map_peaks_inside_the_square_that_decides_the_class(squares_run, test_squares):
    explainer = CamExplainer(Predictor(load_bundle(squares_run)))
    square = explainer.classes.index("square")
    arrays = [prepare_array(str(p), explainer.predictor.spec) for p, _, _ in test_squares]
    got = explainer.explain_arrays(arrays)
    assert all(t == square for _, t, _, _ in got)  # every one predicted 'square'
    inside = sum(_inside(cam, y, x) for (_, y, x), (_, _, cam, _) in zip(test_squares, got))
    assert inside >= 18, f"the map's peak fell inside the square in only {inside} of 20 images"
    share = np.mean([cam[y:y + SIDE, x:x + SIDE].sum() / cam.sum() for (_, y, x), (_, _, cam, _) in zip(test_squares, got)])
    assert share > 5 * SIDE * SIDE / SIZE**2  # the square holds far more of the map than of the image


def test_probabilities_on_the_map_are_predicts(squares_run, test_squares):
    pred = Predictor(load_bundle(squares_run))
    arrays = [prepare_array(str(p), pred.spec) for p, _, _ in test_squares]
    got = CamExplainer(Predictor(load_bundle(squares_run))).explain_arrays(arrays)
    np.testing.assert_allclose(np.stack([g[0] for g in got]), pred.predict_arrays(arrays), atol=1e-5)


def test_class_option_changes_the_map(squares_run, test_squares, tmp_path):
    path, y, x = test_squares[0]
    a = invoke(squares_run, path, "-o", tmp_path / "pred")
    b = invoke(squares_run, path, "--class", "plain", "-o", tmp_path / "plain")
    assert a.exit_code == 0 and b.exit_code == 0, a.stderr + b.stderr
    row_a, row_b = (next(csv.DictReader(io.StringIO(r.stdout))) for r in (a, b))
    assert row_a["explained"] == "square" and row_b["explained"] == "plain"
    assert row_a["class"] == row_b["class"] == "square"  # the prediction stays; only the map changes
    pic_a, pic_b = (np.asarray(Image.open(r["map"])) for r in (row_a, row_b))
    assert pic_a.shape == pic_b.shape and (pic_a != pic_b).any()
    explainer = CamExplainer(Predictor(load_bundle(squares_run)))
    arr = prepare_array(str(path), explainer.predictor.spec)
    (_, _, cam_sq, _), = explainer.explain_arrays([arr])
    (_, t, cam_plain, _), = explainer.explain_arrays([arr], target=explainer.classes.index("plain"))
    assert t == explainer.classes.index("plain")
    assert not np.allclose(cam_sq, cam_plain)
    in_sq = lambda cam: cam[y:y + SIDE, x:x + SIDE].sum() / max(cam.sum(), 1e-12)  # noqa: E731
    assert in_sq(cam_sq) > in_sq(cam_plain)


def test_unknown_class_is_a_usage_error_naming_the_classes(squares_run, test_squares, tmp_path):
    r = invoke(squares_run, test_squares[0][0], "--class", "ferrite", "-o", tmp_path)
    assert r.exit_code == 2 and "--class ferrite" in r.stderr and "plain, square" in r.stderr


def test_a_bad_file_is_named_and_the_rest_go_on(squares_run, test_squares, tmp_path, truncated_png):
    folder = tmp_path / "in"
    folder.mkdir()
    for p, _, _ in test_squares[:3]:
        shutil.copy(p, folder / p.name)
    shutil.copy(truncated_png, folder / "sq_bad.png")
    r = invoke(squares_run, folder, "-o", tmp_path / "out")
    assert r.exit_code == 3
    assert "sq_bad.png" in r.stderr and "1 of 4 input(s) failed" in r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [row["path"] for row in rows] == [str(folder / p.name) for p, _, _ in test_squares[:3]]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(f"{p.stem}_cam.png" for p, _, _ in
                                                                         test_squares[:3])
    assert {"top2_class", "top2_confidence", "explained", "map"} <= set(rows[0])  # 2 classes: no top3


def test_inputs_from_stdin_and_pictures_with_the_same_name(squares_run, test_squares, tmp_path):
    a, b = tmp_path / "a" / "x.png", tmp_path / "b" / "x.png"
    for dst, (src, _, _) in ((a, test_squares[0]), (b, test_squares[1])):
        dst.parent.mkdir()
        shutil.copy(src, dst)
    r = invoke(squares_run, "-", "-o", tmp_path / "out", "--format", "jsonl", input=f"{a}\n{b}\n")
    assert r.exit_code == 0, r.stderr
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(names) == 2 and "x_cam.png" in names  # the second x.png is named after its whole path
    again = invoke(squares_run, a, "-o", tmp_path / "out")
    assert again.exit_code == 1 and "--force" in again.stderr


def test_needs_an_output_folder_or_filters(squares_run, test_squares):
    assert invoke(squares_run, test_squares[0][0]).exit_code == 2
    assert invoke(squares_run).exit_code == 2


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("arch", list(REGISTRY))
def test_every_architecture_and_channel_count(arch, channels, tmp_path):
    model = random_bundle(tmp_path / "m.pt", arch, channels=channels, img_size=64)
    img = np.random.default_rng(0).random((72, 90, 3) if channels == 3 else (72, 90))
    save(tmp_path / "in.png", img)
    r = invoke(model, tmp_path / "in.png", "-o", tmp_path / "out")
    assert r.exit_code == 0, r.stderr
    pic = np.asarray(Image.open(tmp_path / "out" / "in_cam.png"))
    assert pic.ndim == 3 and pic.shape[1] >= 2 * 256  # the micrograph and its map side by side
    explainer = CamExplainer(Predictor(load_bundle(model)))
    arr = prepare_array(str(tmp_path / "in.png"), explainer.predictor.spec)
    (probs, t, cam, _), = explainer.explain_arrays([arr])
    assert cam.shape == arr.shape[-2:] and np.isfinite(cam).all() and 0 <= cam.min() and cam.max() <= 1
    assert t == int(probs.argmax())


@pytest.mark.parametrize("arch,whole", [("lenet", 0), ("resnet18", 0), ("resnet18", 64), ("resnet18", 128)])
def test_crop_models_combine_their_views_into_one_map(arch, whole, tmp_path):
    """Tiles of 32 px (whole 0, or 80 x 100 over a bound of 64), or the whole image in one pass (128)."""
    model = random_bundle(tmp_path / "m.pt", arch, img_size=32, fit="crop", whole=whole)
    save(tmp_path / "big.png", np.random.default_rng(1).random((80, 100)))
    pred = Predictor(load_bundle(model))
    arr = prepare_array(str(tmp_path / "big.png"), pred.spec)
    assert arr.shape[-2:] == (80, 100)  # native scale: the network sees tiles
    (probs, t, cam, _), = CamExplainer(Predictor(load_bundle(model))).explain_arrays([arr])
    assert cam.shape == (80, 100) and cam.max() == pytest.approx(1.0)
    np.testing.assert_allclose(probs, pred.predict_arrays([arr])[0], atol=1e-5)  # views averaged, as predict does
    r = invoke(model, tmp_path / "big.png", "-o", tmp_path / "out")
    assert r.exit_code == 0, r.stderr


def test_map_cells_sit_on_their_receptive_fields():
    cam = np.zeros((3, 3), np.float32)
    cam[1, 2] = 1.0
    placed = place_map(cam, (12, 12), stride=2, offset=4)  # cell i centred on pixel 4 + 2 i
    assert np.unravel_index(placed.argmax(), placed.shape) == (6, 8)
    assert placed[:3].max() == 0 and placed[6, 8:].min() == 1  # beyond the last centre: the edge value


@pytest.mark.parametrize("arch", ["lenet", "resnet18"])
def test_grad_cam_equals_captum(arch, tmp_path):
    """The reference implementation (Captum's LayerGradCam) gives the same layer maps."""
    captum = pytest.importorskip("captum.attr", reason="captum is not installed (pip install -e '.[test]')")
    import torch

    from microcli.inference import normalize
    from microcli.models import get_model_info

    model = random_bundle(tmp_path / "m.pt", arch, img_size=64)
    explainer = CamExplainer(Predictor(load_bundle(model), channels_last=False))
    x = torch.rand(3, 1, 64, 64)
    _, ours = explainer._views_cam(x, lambda probs: np.array([0, 1, 2]))
    net = load_bundle(model).build_model()
    for m in net.modules():  # Captum hooks the layer's output; in-place ReLUs would overwrite it
        if isinstance(m, torch.nn.ReLU):
            m.inplace = False
    gc = captum.LayerGradCam(net, net.get_submodule(get_model_info(arch).cam_layer))
    theirs = gc.attribute(normalize(x, explainer.predictor.spec), target=[0, 1, 2], relu_attributions=True)
    np.testing.assert_allclose(ours, theirs[:, 0].detach().numpy(), rtol=1e-4, atol=1e-6)


def test_gradcam_plus_plus_runs_and_differs(squares_run, test_squares):
    arr = prepare_array(str(test_squares[0][0]), load_bundle(squares_run).input)
    (_, _, a, _), = CamExplainer(Predictor(load_bundle(squares_run))).explain_arrays([arr])
    (_, _, b, _), = CamExplainer(Predictor(load_bundle(squares_run)), method="gradcam++").explain_arrays([arr])
    assert a.shape == b.shape and not np.allclose(a, b)


# --- the filters figure --------------------------------------------------------------------------------

def test_classical_kernels_are_recognised():
    bank = {b.name: b.kernel for b in classical_kernels(7)}
    sobel_x = bank["Sobel x (vertical edges)"]
    blur = bank["Gaussian blur, sigma 1.4"]
    got = match_kernels(np.stack([-3 * sobel_x, 0.5 * blur, np.eye(7)]))
    assert got[0].best.name.startswith("Sobel x") and got[0].cosine == pytest.approx(-1.0)
    assert got[1].best.name.startswith("Gaussian") and got[1].cosine == pytest.approx(1.0)
    assert abs(got[2].cosine) < 0.6  # a diagonal line is no classical kernel


@pytest.mark.parametrize("arch", ["lenet", "resnet18"])
def test_filters_figure(arch, tmp_path, test_squares):
    model = random_bundle(tmp_path / "m.pt", arch, img_size=64)
    r = invoke(model, "--filters", tmp_path / "f.png", test_squares[0][0])
    assert r.exit_code == 0, r.stderr
    big = Image.open(tmp_path / "f.png")
    r = invoke(model, "--filters", tmp_path / "k.png")  # kernels only, no image
    assert r.exit_code == 0, r.stderr
    small = Image.open(tmp_path / "k.png")
    assert big.size[1] > small.size[1] > 200  # the feature maps add a block below the kernels
    assert invoke(model, "--filters", tmp_path / "k.png").exit_code == 1  # exists: --force to replace

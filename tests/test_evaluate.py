from __future__ import annotations

import csv
import json
import math
import shutil

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from microcli.checkpoint import load_bundle
from microcli.cli.app import app
from microcli.metrics import (TEMPERATURE_RANGE, confusion_report, expected_calibration_error, fit_temperature,
                              softmax_of_views)

from .conftest import REPO

runner = CliRunner()
SAMPLE = REPO / "sample_images"

# a, a, b, b, c, c predicted a, b, b, b, a, a; class d is known to the model but absent from the data.
Y = [0, 0, 1, 1, 2, 2]
P = np.array([[0.7, 0.1, 0.1, 0.1], [0.3, 0.5, 0.1, 0.1], [0.1, 0.6, 0.2, 0.1],
              [0.2, 0.4, 0.3, 0.1], [0.5, 0.1, 0.3, 0.1], [0.6, 0.1, 0.2, 0.1]])
CLASSES = ["a", "b", "c", "d"]


def test_metrics_match_hand_computed_values():
    r = confusion_report(Y, P, CLASSES, [f"img{i}.png" for i in range(6)])
    o = r["overall"]
    assert r["confusion"]["counts"] == [[1, 1, 0, 0], [0, 2, 0, 0], [2, 0, 0, 0], [0, 0, 0, 0]]
    assert o["accuracy"] == pytest.approx(0.5)
    assert o["balanced_accuracy"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert o["macro_precision"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert o["macro_f1"] == pytest.approx((0.4 + 0.8 + 0) / 3)
    assert o["weighted_f1"] == pytest.approx((2 * 0.4 + 2 * 0.8) / 6)
    assert o["top_k"] == 2 and o["top_k_accuracy"] == pytest.approx(1.0)
    assert o["log_loss"] == pytest.approx(-np.mean(np.log([0.7, 0.3, 0.6, 0.4, 0.3, 0.2])))
    pc = {c["class"]: c for c in r["per_class"]}
    assert pc["a"]["precision"] == pytest.approx(1 / 3) and pc["a"]["recall"] == 0.5 and pc["a"]["f1"] == pytest.approx(0.4)
    assert pc["c"] == {"class": "c", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2, "predicted": 0,
                       "mean_confidence_correct": None, "mean_confidence_wrong": pytest.approx(0.55)}
    assert pc["d"]["support"] == 0 and pc["d"]["f1"] == 0.0
    assert pc["b"]["mean_confidence_correct"] == pytest.approx(0.5)
    assert r["confusion"]["normalized"][0] == [0.5, 0.5, 0.0, 0.0] and r["confusion"]["normalized"][3] == [0, 0, 0, 0]
    assert r["most_confused"][0] == {"true": "c", "predicted": "a", "count": 2}
    assert [m["path"] for m in r["misclassified"]] == ["img5.png", "img1.png", "img4.png"]
    assert r["misclassified"][0] == {"path": "img5.png", "true": "c", "predicted": "a", "p_true": 0.2, "p_predicted": 0.6}


def test_expected_calibration_error():
    conf = np.full(10, 0.9)
    correct = np.array([1] * 8 + [0] * 2, bool)
    assert expected_calibration_error(conf, correct) == pytest.approx(0.1)
    assert expected_calibration_error(np.array([1.0, 1.0]), np.array([True, True])) == 0.0


def test_report_schema_is_stable():
    r = confusion_report(Y, P, CLASSES, ["p"] * 6)
    assert set(r) == {"schema_version", "classes", "overall", "per_class", "confusion", "most_confused", "misclassified"}
    assert set(r["overall"]) == {"images", "accuracy", "balanced_accuracy", "macro_precision", "macro_recall",
                                 "macro_f1", "weighted_precision", "weighted_recall", "weighted_f1", "top_k",
                                 "top_k_accuracy", "log_loss", "ece", "ci95", "ci_method"}
    assert r["schema_version"] == 2
    json.dumps(r)  # plain JSON types only


def test_json_on_stdout_is_pure_and_equals_the_train_report(trained_run):
    # training reports with torch: the same engine gives the same bits (others agree to ~1e-7, test_export.py)
    r = runner.invoke(app, ["evaluate", str(trained_run), "--split", "val", "--format", "json", "--workers", "0",
                            "--engine", "torch"])
    assert r.exit_code == 0, r.stderr
    rep = json.loads(r.stdout)
    train_rep = json.loads((trained_run / "val_report.json").read_text())
    intervals = ("ci95", "ci_method")
    assert {k: v for k, v in rep["overall"].items() if k not in intervals} == \
        pytest.approx({k: v for k, v in train_rep["overall"].items() if k not in intervals})
    assert rep["overall"]["ci_method"] == train_rep["overall"]["ci_method"]
    for metric, bounds in rep["overall"]["ci95"].items():
        assert bounds == pytest.approx(train_rep["overall"]["ci95"][metric])
    assert rep["confusion"] == train_rep["confusion"] and rep["misclassified"] == train_rep["misclassified"]
    assert rep["source"]["split"] == "val"


def test_tables_files_and_plot(trained_run, tmp_path):
    r = runner.invoke(app, ["evaluate", str(trained_run / "best.pt"), str(SAMPLE), "--format", "table",
                            "--plot", str(tmp_path / "cm.png"), "--misclassified", str(tmp_path / "wrong.csv"),
                            "--csv", str(tmp_path / "pc.csv"), "--confusion-csv", str(tmp_path / "cm.csv"),
                            "--json", str(tmp_path / "r.json"), "--workers", "0"])
    assert r.exit_code == 0, r.stderr
    assert "per class" in r.stdout and "confusion matrix" in r.stdout and "192 images (all)" in r.stdout
    with Image.open(tmp_path / "cm.png") as im:
        assert im.format == "PNG" and im.width >= 800 and im.height >= 400
    rep = json.loads((tmp_path / "r.json").read_text())
    wrong = list(csv.DictReader(open(tmp_path / "wrong.csv")))
    n_wrong = rep["overall"]["images"] - sum(rep["confusion"]["counts"][i][i] for i in range(6))
    assert len(wrong) == n_wrong and all(w["true"] != w["predicted"] for w in wrong)
    # exactly the wrong predictions: predict the same files and compare
    from microcli.checkpoint import load_bundle
    from microcli.inputs import prepare_array
    from microcli.inference import Predictor

    pred = Predictor(load_bundle(trained_run))
    files = sorted(str(p) for p in SAMPLE.glob("*/*.png"))
    probs = pred.predict_arrays([prepare_array(f, pred.spec) for f in files])
    expected = {f for f, p in zip(files, probs) if pred.classes[p.argmax()] != f.split("/")[-2]}
    assert {w["path"] for w in wrong} == expected
    cm = list(csv.reader(open(tmp_path / "cm.csv")))
    assert cm[0][1:] == pred.classes and len(cm) == 7
    assert [row["class"] for row in csv.DictReader(open(tmp_path / "pc.csv"))] == pred.classes


def test_unknown_labels_are_excluded_with_exit_3(trained_run, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(SAMPLE / "porosity", data / "porosity")
    shutil.copytree(SAMPLE / "lamellar", data / "bainite")  # a class the model never saw
    r = runner.invoke(app, ["evaluate", str(trained_run), str(data), "--format", "json", "--workers", "0"])
    assert r.exit_code == 3
    assert "32 image(s) labelled 'bainite', a class this model does not know" in r.stderr
    rep = json.loads(r.stdout)
    assert rep["overall"]["images"] == 32 and rep["excluded_unknown_labels"] == {"bainite": 32}
    supports = {c["class"]: c["support"] for c in rep["per_class"]}
    assert supports["porosity"] == 32 and supports["equiaxed"] == 0
    assert all(math.isfinite(v) for k, v in rep["overall"].items() if k not in ("ci95", "ci_method"))
    assert all(math.isfinite(b) for bounds in rep["overall"]["ci95"].values() for b in bounds)


def test_tta_runs(trained_run):
    r = runner.invoke(app, ["evaluate", str(trained_run), "--split", "val", "--tta", "--format", "json", "--workers", "0"])
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["source"]["tta"] is True


def test_report_files_never_replace_the_model_an_image_or_an_existing_file_without_force(trained_run, tmp_path):
    run = shutil.copytree(trained_run, tmp_path / "run")
    data = tmp_path / "data" / "lamellar"
    data.mkdir(parents=True)
    for f in sorted((REPO / "sample_images" / "lamellar").glob("*.png"))[:4]:
        shutil.copy(f, data)
    image, model = data / "lamellar_0000.png", run / "best.pt"
    image_bytes, model_bytes = image.read_bytes(), model.read_bytes()
    keep = tmp_path / "keep.json"
    keep.write_text("{}")

    def ev(*args):
        r = runner.invoke(app, ["evaluate", str(run), str(data.parent), "--workers", "0", *map(str, args)])
        return r.exit_code, " ".join(r.stderr.split())

    assert ev("--plot", image, "--force") == (1, f"error: --plot {image}: is one of the inputs (the model, its "
                                                 "split.csv, the data or an image); choose another file name")
    code, said = ev("--html", model, "--force")
    assert code == 1 and f"--html {model}: is one of the inputs" in said
    assert ev("--misclassified", run / "split.csv", "--force")[0] == 1
    assert ev("--json", keep) == (1, f"error: --json {keep}: exists; use --force to replace it")
    assert ev("--json", tmp_path / "a.json", "--csv", tmp_path / "a.json") == \
        (2, f"error: --csv {tmp_path / 'a.json'}: is also given to --json; give each its own file")
    assert image.read_bytes() == image_bytes and model.read_bytes() == model_bytes and keep.read_text() == "{}"
    assert ev("--json", keep, "--force")[0] == 0 and json.loads(keep.read_text())["overall"]["images"] == 4


def test_split_on_data_that_is_not_split_evaluates_it_whole_and_says_so(trained_run, tmp_path):
    data = tmp_path / "data" / "lamellar"
    data.mkdir(parents=True)
    for f in sorted((REPO / "sample_images" / "lamellar").glob("*.png"))[:3]:
        shutil.copy(f, data)
    r = runner.invoke(app, ["evaluate", str(trained_run), str(data.parent), "--split", "val", "--format", "json",
                            "--workers", "0"])
    assert r.exit_code == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["source"]["split"] == "all" and rep["overall"]["images"] == 3
    assert f"warning: --split val: {data.parent} is not split, so all its 3 images are evaluated" in \
        " ".join(r.stderr.split())


def test_a_class_folder_spelt_in_decomposed_unicode_is_the_same_class(tmp_path):
    import unicodedata

    composed = "équiaxé grains"
    decomposed = unicodedata.normalize("NFD", composed)  # how macOS writes the folder name
    assert composed != decomposed
    for data, name in ((tmp_path / "lab", composed), (tmp_path / "mac", decomposed)):
        for cls, src in ((name, "equiaxed"), ("lamellar", "lamellar")):
            (data / cls).mkdir(parents=True)
            for f in sorted((REPO / "sample_images" / src).glob("*.png"))[:6]:
                shutil.copy(f, data / cls)
    r = runner.invoke(app, ["train", str(tmp_path / "mac"), "-o", str(tmp_path / "run"), "--arch", "lenet",
                            "--epochs", "1", "--img-size", "32", "--workers", "0"])
    assert r.exit_code == 0, r.stderr
    assert load_bundle(tmp_path / "run").classes == ["lamellar", composed]
    r = runner.invoke(app, ["evaluate", str(tmp_path / "run"), str(tmp_path / "lab"), "--format", "json",
                            "--workers", "0"])
    assert r.exit_code == 0 and "excluded" not in r.stderr
    assert json.loads(r.stdout)["overall"]["images"] == 12


# --- temperature scaling --------------------------------------------------------------------------------

def _labels_from(probs: np.ndarray, rng) -> np.ndarray:
    return (rng.random(len(probs))[:, None] > np.cumsum(probs, 1)).sum(1)


@pytest.mark.parametrize(("true_t", "fitted"), [(0.4, 0.4), (0.7, 0.7), (2.0, 1.0)])
def test_fit_temperature_recovers_the_temperature_that_drew_the_labels_and_never_softens(true_t, fitted):
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (20_000, 4))
    y = _labels_from(softmax_of_views(logits, np.arange(len(logits)), len(logits), true_t), rng)
    assert fit_temperature(logits, y) == pytest.approx(fitted, rel=0.05)


def test_fit_temperature_averages_an_images_views_as_predict_does():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (2 * 10_000, 3))  # two tiles per image
    owner = np.repeat(np.arange(10_000), 2)
    y = _labels_from(softmax_of_views(logits, owner, 10_000, 0.6), rng)
    assert fit_temperature(logits, y, owner) == pytest.approx(0.6, rel=0.05)


def test_fit_temperature_stops_at_its_floor_when_every_validation_image_is_right():
    # Log loss keeps falling as T falls when nothing is wrong: the bounded search stops at the floor rather
    # than make the model certain of everything.
    logits = np.array([[4.0, 0.0], [0.0, 4.0]] * 20)
    assert fit_temperature(logits, [0, 1] * 20) == pytest.approx(TEMPERATURE_RANGE[0], rel=1e-2)
    with pytest.raises(ValueError, match="at least one held-out image"):
        fit_temperature(np.zeros((0, 2)), [])

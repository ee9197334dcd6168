"""Cross-validation end to end: real images, real training, real processes."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from microcli.checkpoint import load_bundle
from microcli.cli.app import app
from microcli.crossval import cross_validate
from microcli.config import TrainConfig
from microcli.data import discover

from .conftest import REPO

pytestmark = pytest.mark.slow
SAMPLE = REPO / "sample_images"
runner = CliRunner()


def grouped_manifest(tmp_path: Path, per_group: int = 4) -> Path:
    """sample_images with every `per_group` consecutive images of a class made one specimen."""
    rows = [("path", "label", "group")]
    for c in sorted(p.name for p in SAMPLE.iterdir() if p.is_dir()):
        for i, f in enumerate(sorted((SAMPLE / c).glob("*.png"))):
            rows.append((str(f), c, f"{c}-{i // per_group}"))
    path = tmp_path / "m.csv"
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return path


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cv")
    # squash: one view per image, so every fold can be calibrated (LeNet on tiles is not)
    cfg = TrainConfig(data=str(grouped_manifest(tmp)), out=str(tmp / "run"), arch="lenet", epochs=2, img_size=32,
                      fit="squash", workers=0, folds=3, refit=True)
    return cross_validate(cfg)


def test_out_of_fold_rows_cover_every_image_exactly_once(cv_run):
    rows = list(csv.DictReader(open(cv_run.run_dir / "cv_predictions.csv")))
    every = {it.path for it in discover(SAMPLE).items()}
    assert len(rows) == len(every) == 192 and {r["path"] for r in rows} == every
    assert {r["fold"] for r in rows} == {"1", "2", "3"}
    assert set(rows[0]) >= {"path", "label", "group", "fold", "class", "confidence", "p_lamellar"}
    groups: dict[str, set] = {}
    for r in rows:
        groups.setdefault(r["group"], set()).add(r["fold"])
    assert all(len(f) == 1 for f in groups.values())  # a specimen is tested in one fold only


def test_each_fold_is_a_normal_run_folder_tested_on_its_held_out_fold(cv_run):
    oof = list(csv.DictReader(open(cv_run.run_dir / "cv_predictions.csv")))
    for k in (1, 2, 3):
        fold = cv_run.run_dir / f"fold-{k}"
        assert (fold / "best.pt").is_file() and (fold / "metrics.csv").is_file()
        split = list(csv.DictReader(open(fold / "split.csv")))
        test = {r["path"] for r in split if r["split"] == "test"}
        assert test == {r["path"] for r in oof if r["fold"] == str(k)}
        trained = {r["group"] for r in split if r["split"] in ("train", "val")}
        assert trained.isdisjoint({r["group"] for r in split if r["split"] == "test"})


def test_cv_report_pools_the_folds_and_gives_intervals(cv_run):
    rep = json.loads((cv_run.run_dir / "cv_report.json").read_text())
    assert rep["overall"]["images"] == 192
    folds = rep["folds"]
    assert folds["k"] == 3 and len(folds["per_fold"]) == 3
    for m in ("accuracy", "balanced_accuracy", "macro_f1"):
        s = folds["summary"][m]
        values = [f[m] for f in folds["per_fold"]]
        assert s["mean"] == pytest.approx(sum(values) / 3)
        assert s["ci95"][0] <= s["mean"] <= s["ci95"][1]
    assert "95 % interval" in (cv_run.run_dir / "cv_report.txt").read_text()


def test_refit_trains_one_final_model_on_all_images(cv_run):
    final = load_bundle(cv_run.run_dir / "final" / "best.pt")
    assert final.data_summary["train_images"] == 192 and final.data_summary["val_images"] == 0
    assert cv_run.refit.best_epoch == final.metrics["epoch"] >= 1


def test_each_fold_is_calibrated_on_its_validation_and_the_refit_takes_their_geometric_mean(cv_run):
    temps = [load_bundle(cv_run.run_dir / f"fold-{k}" / "best.pt").metrics["temperature"] for k in (1, 2, 3)]
    assert [f.temperature for f in cv_run.folds] == pytest.approx(temps)
    final = load_bundle(cv_run.run_dir / "final" / "best.pt").metrics["temperature"]
    assert final == pytest.approx((temps[0] * temps[1] * temps[2]) ** (1 / 3)) == cv_run.refit.temperature


class _Announced(Exception):
    pass


def test_the_recipe_sizes_its_length_by_a_folds_training_part(tmp_path):
    # 192 images, 3 folds: a fold trains on 2/3 of them less the 20 % validation part, about 102
    # images an epoch; the recipe's length and its printed reason count those, not all 192
    said = []

    def listen(event):
        said.append(event.text)
        if event.text.startswith("epochs:"):
            raise _Announced  # the recipe is announced before any image is decoded: stop there

    cfg = TrainConfig(data=str(grouped_manifest(tmp_path)), out=str(tmp_path / "run"), folds=3, workers=0)
    with pytest.raises(_Announced):
        cross_validate(cfg, on_event=listen)
    assert "102 an epoch" in said[-1] and "192 an epoch" not in said[-1], said


def test_more_folds_than_groups_is_refused(tmp_path):
    r = runner.invoke(app, ["train", str(grouped_manifest(tmp_path, per_group=32)), "-o", str(tmp_path / "run"),
                            "--folds", "7", "--epochs", "1", "--img-size", "32", "--workers", "0", "--arch", "lenet"])
    assert r.exit_code == 1, r.stderr
    assert "fold" in r.stderr and not (tmp_path / "run" / "fold-1").exists()


def test_refit_needs_folds(tmp_path):
    r = runner.invoke(app, ["train", str(SAMPLE), "-o", str(tmp_path / "run"), "--refit"])
    assert r.exit_code == 2 and "--refit must be used with --folds K" in r.stderr


def test_interrupted_cross_validation_resumes_at_its_fold(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "microcli", "train", str(grouped_manifest(tmp_path)), "-o", str(run), "--folds", "3",
           "--epochs", "3", "--img-size", "32", "--workers", "0", "--arch", "lenet"]
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    seen, in_fold2 = [], False
    deadline = time.time() + 180
    while time.time() < deadline:
        line = p.stderr.readline()
        seen.append(line)
        in_fold2 = in_fold2 or line.startswith("fold 2/3")
        if in_fold2 and line.startswith("epoch   1/3"):
            break
    p.send_signal(signal.SIGINT)
    rest = p.stderr.read()
    assert p.wait(timeout=120) == 130, "".join(seen) + rest
    assert f"microcli train --resume {run}" in rest
    assert "cv_report" not in rest and not (run / "cv_report.json").exists()  # none promised, none written
    assert (run / "fold-1" / "oof.json").is_file() and not (run / "fold-2" / "oof.json").exists()
    fold2_epochs = load_bundle(run / "fold-2" / "last.pt").training_state["epoch"]

    r = runner.invoke(app, ["train", "--resume", str(run)])
    assert r.exit_code == 0, r.stderr
    assert "fold 1: done before, kept" in r.stderr
    rows = list(csv.DictReader(open(run / "fold-2" / "metrics.csv")))
    assert [int(x["epoch"]) for x in rows] == [1, 2, 3]  # resumed after epoch `fold2_epochs`, none twice
    assert fold2_epochs >= 1
    assert len(list(csv.DictReader(open(run / "cv_predictions.csv")))) == 192


def test_a_class_of_a_single_specimen_is_refused_before_any_image_is_read(tmp_path):
    from microcli.errors import DataError

    rows = ["path,label,group"]
    for cls, groups in (("lamellar", 3), ("porosity", 1)):
        for i, f in enumerate(sorted((REPO / "sample_images" / cls).glob("*.png"))[:6]):
            rows.append(f"{f},{cls},{cls}-{i % groups}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"class\(es\) 'porosity' have a single group \(specimen\) or image: the fold "
                                        "that tests it would have none to train on"):
        cross_validate(TrainConfig(data=str(tmp_path / "m.csv"), out=str(tmp_path / "cv"), arch="lenet", epochs=1,
                                   img_size=32, workers=0, folds=3))


def test_info_on_the_cross_validation_folder_points_to_its_models(cv_run, tmp_path):
    r = runner.invoke(app, ["info", str(cv_run.run_dir)])
    assert r.exit_code == 1
    assert (f"error: {cv_run.run_dir}: is a cross-validation folder; its models are in final/ (the --refit model) and "
            "fold-N/") in " ".join(r.stderr.split())
    r = runner.invoke(app, ["info", str(cv_run.run_dir / "final"), "--format", "json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["resumable"] is True  # RUN/last.pt is there
    (tmp_path / "empty").mkdir()
    r = runner.invoke(app, ["info", str(tmp_path / "empty")])
    assert r.exit_code == 1 and f"{tmp_path / 'empty'}: a folder without best.pt" in r.stderr

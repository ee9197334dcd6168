"""The recipe chosen from the data, the time planner, imbalance handling and weight averaging."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from microcli.checkpoint import load_bundle
from microcli.config import TrainConfig
from microcli.recipe import DataStats, choose_recipe, class_weights, plan_epochs, sample_weights

from .conftest import REPO

SAMPLE = REPO / "sample_images"


def stats(n=600, classes=6, side=200, skew=1.0, spread=0.0, aspect=1.0) -> DataStats:
    counts = {f"c{i}": max(2, round(n / classes * skew ** (-i / max(1, classes - 1)))) for i in range(classes)}
    return DataStats(sum(counts.values()), counts, side, spread, aspect)


def recipe(st: DataStats, **kw):
    return choose_recipe(TrainConfig(data="d", out="o", **kw), st)


def test_auto_is_a_resnet_and_every_choice_has_a_reason():
    cfg, why = recipe(stats())
    assert cfg.resolved and cfg.arch.value == "resnet10-half"  # on a CPU
    assert set(why) == {"arch", "fit", "img_size", "preprocess", "batch_size", "sampler", "epochs"}
    assert "LeNet only when asked" in why["arch"]
    assert choose_recipe(TrainConfig(data="d", out="o"), stats(), gpu=True)[0].arch.value == "resnet18"


@pytest.mark.parametrize("side,fit,size", [(96, "resize", 96), (128, "resize", 128), (150, "resize", 128),
                                           (200, "crop", 128), (1024, "crop", 128), (20, "resize", 32)])
def test_large_images_train_on_native_scale_crops(side, fit, size):
    cfg, why = recipe(stats(side=side))
    assert (cfg.fit.value, cfg.img_size) == (fit, size)
    assert f"{side} px" in why["fit"]


@pytest.mark.parametrize("spread,aspect,side,fit", [
    (0.45, 1.4, 257, "squash"),  # regions cut around objects (magnetic-tile): sizes vary, the whole image
    (0.0, 1.33, 480, "crop"),  # frames of one microscope, much larger than the input: native scale
    (0.05, 1.0, 128, "resize"),  # one size near the input, square
    (0.0, 1.5, 120, "squash"),  # one size near the input, but 3:2: a centre crop would lose a third
])
def test_fit_follows_how_the_images_were_taken(spread, aspect, side, fit):
    cfg, why = recipe(stats(side=side, spread=spread, aspect=aspect))
    assert cfg.fit.value == fit and why["fit"].startswith(fit)
    assert cfg.img_size == min(side, 128)


@pytest.mark.parametrize("arch,fit,view", [("resnet10-half", "crop", 256), ("resnet18", "crop", 256),
                                           ("lenet", "crop", 0), ("resnet10-half", "squash", 0)])
def test_crop_resnets_evaluate_images_up_to_twice_the_crop_whole(arch, fit, view):
    from microcli.data import Item
    from microcli.train import resolve_input

    items = [Item(str(p), p.parent.name) for p in sorted(SAMPLE.glob("*/*.png"))[:4]]
    spec, reasons = resolve_input(TrainConfig(data="d", out="o", arch=arch, fit=fit, img_size=128), items, None)
    assert spec.whole == view and spec.largest_input == (view or 128)
    assert ("an image up to 256 x 256 px is evaluated whole" in reasons["whole"]) if view else "whole" not in reasons


def test_data_stats_reads_sizes_from_the_headers(tmp_path):
    from PIL import Image

    from microcli.data import Item
    from microcli.recipe import data_stats

    items = []
    for i, (w, h) in enumerate([(300, 200)] * 3 + [(150, 100), (600, 400)]):
        Image.new("L", (w, h)).save(tmp_path / f"{i}.png")
        items.append(Item(str(tmp_path / f"{i}.png"), "a" if i < 3 else "b", ""))
    st = data_stats(items)
    assert (st.n_images, st.class_counts, st.median_side) == (5, {"a": 3, "b": 2}, 200)
    assert st.aspect == pytest.approx(1.5) and st.side_spread == 0.0  # quartiles 200 and 200: one size
    for i, side in enumerate((100, 150, 250, 400)):
        Image.new("L", (side, side)).save(tmp_path / f"v{i}.png")
    varied = data_stats([Item(str(tmp_path / f"v{i}.png"), "a", "") for i in range(4)])
    # shorter sides 100, 150, 250, 400: quartiles 137.5 and 287.5 around a median of 200
    assert varied.median_side == 200 and varied.side_spread == pytest.approx(0.75) and varied.aspect == 1.0


def test_pretrained_weights_pick_the_resnet_that_has_them():
    cfg, why = recipe(stats(), pretrained="imagenet")
    assert cfg.arch.value == "resnet18" and "pretrained weights" in why["arch"]


def test_a_gpu_affords_torchvision_size():
    cfg, _ = choose_recipe(TrainConfig(data="d", out="o"), stats(side=1024), gpu=True)
    assert (cfg.fit.value, cfg.img_size) == ("crop", 224)


def test_small_and_large_sets_get_their_batch_size_and_length():
    small, why_small = recipe(stats(n=120))
    large, _ = recipe(stats(n=20000))
    assert small.batch_size == 16 and large.batch_size == 32  # a ResNet on a CPU
    assert recipe(stats(n=120), arch="lenet")[0].batch_size == 32
    assert small.epochs == 150 and "training images seen" in why_small["epochs"]  # small crop sets: the cap
    assert recipe(stats(n=120, side=128))[0].epochs == 60  # resized whole: the cap without crops
    assert large.epochs == 15  # large sets: the floor


def test_crops_lengthen_training_by_the_share_of_the_image_they_leave_out():
    # NEU-DET-like: 1200 images of 200 px, 128 px crops show 41 % of each: 48000 / 1200 x 2.44
    cfg, why = recipe(stats(n=1200, side=200))
    assert (cfg.fit.value, cfg.epochs) == ("crop", 98) and "41 %" in why["epochs"]
    # crops of much larger frames count at most 4 times (48000 / 2000 x 4), and 150 epochs at most
    assert recipe(stats(n=2000, side=1024))[0].epochs == 96
    assert recipe(stats(n=1200, side=1024))[0].epochs == 150
    # the same images resized whole: 48000 / 1200
    assert recipe(stats(n=1200, side=200), fit="squash")[0].epochs == 40


def test_imbalance_switches_sampling_on_and_says_so():
    cfg, why = recipe(stats(skew=30))
    assert cfg.sampler.value == "sqrt" and "33:1" in why["sampler"]
    assert recipe(stats(skew=2))[0].sampler.value == "uniform"


def test_what_the_user_gave_is_kept():
    cfg, why = recipe(stats(side=1024), arch="lenet", fit="resize", img_size=64, preprocess="", epochs=7,
                      batch_size=16, sampler="balanced")
    assert (cfg.arch.value, cfg.fit.value, cfg.img_size, cfg.preprocess, cfg.epochs, cfg.batch_size,
            cfg.sampler.value) == ("lenet", "resize", 64, "", 7, 16, "balanced")
    assert why == {}


def test_every_choice_given_but_the_input_size_still_chooses_it():
    # every other choice on the command line, --img-size left at 0: training must still run the recipe
    # (it skips it for a resolved config), or the input size stays 0 and no image can be prepared
    given = dict(arch="lenet", fit="resize", preprocess="", epochs=3, batch_size=64, sampler="uniform")
    assert not TrainConfig(data="d", out="o", **given).resolved
    cfg, why = recipe(stats(side=96), **given)
    assert cfg.img_size == 96 and cfg.resolved and set(why) == {"img_size"}


def test_time_budget_leaves_the_length_to_the_planner():
    cfg, why = recipe(stats(), time=10)
    assert cfg.epochs is None and "epochs" not in why


def test_planner_fits_the_epochs_measured_into_the_budget():
    # 600 s budget, 60 s spent decoding, epochs of 10 s: 1 done + 53 more (10 s kept for the report).
    assert plan_epochs(budget_s=600, elapsed_s=70, epoch_s=[10.0], done=1, finish_s=10) == 53
    # the last two epochs are averaged; the plan never drops below what is done
    assert plan_epochs(budget_s=600, elapsed_s=80, epoch_s=[30.0, 10.0, 20.0], done=3, finish_s=0) == 3 + 34
    assert plan_epochs(budget_s=60, elapsed_s=100, epoch_s=[20.0], done=4, finish_s=5) == 4
    assert plan_epochs(budget_s=10_000, elapsed_s=0, epoch_s=[1.0], done=1, finish_s=0, cap=200) == 200


def test_class_weights_are_normalised_and_bounded():
    labels = [0] * 600 + [1] * 10
    for how in ("balanced", "effective"):
        w = class_weights(labels, 2, how)
        assert w[1] > w[0] and w.max() <= 10 and w.min() >= 0.1
    w = class_weights([0] * 30 + [1] * 30, 2, "balanced")
    np.testing.assert_allclose(w, [1, 1])
    assert class_weights(labels, 2, "none") is None


def test_sampling_weights_follow_class_sizes():
    labels = [0] * 100 + [1] * 4
    w = sample_weights(labels, 2, "balanced")
    assert w[:100].sum() == pytest.approx(w[100:].sum())  # each class drawn equally often
    s = sample_weights(labels, 2, "sqrt")
    assert s[:100].sum() / s[100:].sum() == pytest.approx(5.0)  # sqrt(100 / 4)
    assert sample_weights(labels, 2, "uniform") is None


def _imbalanced(root: Path, n_major=100, n_minor=5) -> Path:
    """lamellar (many) against porosity (few) to train on, 20 of each to test on."""
    from microcli.synth import SynthSpec, write_dataset

    src = root / "src"
    list(write_dataset(src, SynthSpec(per_class=n_major + 20, size=48, seed=11,
                                      classes=("lamellar", "porosity"))))
    for c, n in (("lamellar", n_major), ("porosity", n_minor)):
        files = sorted((src / c).glob("*.png"))
        for split, part in (("train", files[:n]), ("test", files[-20:])):
            (root / "data" / split / c).mkdir(parents=True, exist_ok=True)
            for f in part:
                shutil.copy(f, root / "data" / split / c / f.name)
    return root / "data"


@pytest.mark.slow
@pytest.mark.parametrize("option", [{"sampler": "balanced"}, {"class_weights": "balanced", "sampler": "uniform"}])
def test_a_20_to_1_set_learns_the_rare_class(tmp_path, option):
    from microcli.evaluate import evaluate
    from microcli.train import train_model

    data = _imbalanced(tmp_path)
    train_model(TrainConfig(data=str(data), out=str(tmp_path / "run"), arch="lenet", epochs=30, img_size=48,
                            workers=0, val_split=0.2, **option))
    rep = evaluate(tmp_path / "run", data, split="test").report
    rare = next(c for c in rep["per_class"] if c["class"] == "porosity")
    # Predicting the majority class alone gives balanced accuracy 0.5 and rare recall 0; how far above
    # that the 5 training images take it depends on the CPU's arithmetic (fp32 on AVX2, bf16 elsewhere).
    assert rep["overall"]["balanced_accuracy"] > 0.6 and rare["recall"] >= 0.4, rep["per_class"]


@pytest.mark.slow
def test_best_pt_holds_the_averaged_weights_that_were_validated(tmp_path):
    from microcli.evaluate import evaluate
    from microcli.train import train_model

    # fp32 training arithmetic, so that validation during training and evaluate compute the same numbers
    result = train_model(TrainConfig(data=str(SAMPLE), out=str(tmp_path / "run"), arch="lenet", epochs=3,
                                     img_size=48, workers=0, fit="resize", patience=0, precision="fp32"))
    last = load_bundle(tmp_path / "run" / "last.pt")
    raw = last.training_state["model"]  # the trained weights, kept apart for resuming
    assert any(not torch.equal(raw[k], v) for k, v in last.state_dict.items() if v.is_floating_point())
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    best_row = next(r for r in rows if int(r["epoch"]) == result.best_epoch)
    again = evaluate(tmp_path / "run", split="val").report["overall"]["macro_f1"]
    assert again == pytest.approx(float(best_row["val_macro_f1"]), abs=1e-4)  # the saved model is the one scored
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["train"]["ema"] is True


@pytest.mark.slow
def test_no_flags_on_sample_images_prints_and_records_the_recipe(tmp_path):
    from typer.testing import CliRunner

    from microcli.cli.app import app

    r = CliRunner().invoke(app, ["train", str(SAMPLE), "-o", str(tmp_path / "run"), "--epochs", "1",
                                 "--workers", "0"])
    assert r.exit_code == 0, r.stderr
    arch = "resnet18" if torch.cuda.is_available() else "resnet10-half"
    for line in ("arch: ResNet-18 on a GPU" if arch == "resnet18" else "arch: ResNet-10 at half width",
                 "fit: resize", "preprocess: stretch", "sampler: uniform", "batch-size: "):
        assert line in r.stderr
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["train"]["arch"] == arch and cfg["train"]["preprocess"] == "stretch"
    assert "median shorter side" in cfg["resolved"]["reasons"]["img_size"]
    # 153 training images make 9 batches of 16: the batch is lowered to 9 (17 steps), and the run says so.
    assert cfg["resolved"]["batch_size"] == 9
    assert "batch size 9, not 16: 153 training images, so that an epoch still has 17 optimiser steps" in \
        " ".join(r.stderr.split())


@pytest.mark.slow
def test_no_flags_on_colour_images_keep_three_channels_and_the_same_recipe(tmp_path):
    from PIL import Image
    from typer.testing import CliRunner

    from microcli.cli.app import app

    # Two classes of the sample micrographs, each image tinted another way (as a stained section or a
    # colour camera gives): the channels differ, so the input keeps all three.
    for c in ("lamellar", "equiaxed"):
        (tmp_path / "data" / c).mkdir(parents=True)
        for i, f in enumerate(sorted((SAMPLE / c).glob("*.png"))[:16]):
            g = np.asarray(Image.open(f).convert("L"), dtype=np.float32)
            tint = np.array([1.0, 0.55 + 0.03 * i, 0.3])
            Image.fromarray((g[..., None] * tint).astype(np.uint8), "RGB").save(tmp_path / "data" / c / f"{f.stem}.jpg")
    r = CliRunner().invoke(app, ["train", str(tmp_path / "data"), "-o", str(tmp_path / "run"), "--epochs", "1",
                                 "--workers", "0"])
    assert r.exit_code == 0, r.stderr
    for line in ("fit: resize", "preprocess: stretch", "sampler: uniform"):
        assert line in r.stderr
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["resolved"]["channels"] == 3 and len(cfg["resolved"]["input"]["mean"]) == 3
    assert cfg["train"]["arch"] == ("resnet18" if torch.cuda.is_available() else "resnet10-half")
    assert load_bundle(tmp_path / "run" / "best.pt").input.channels == 3

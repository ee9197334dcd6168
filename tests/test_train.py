from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from microcli.checkpoint import load_bundle
from microcli.cli.app import app
from microcli.errors import CheckpointError, DataError, OutputExistsError
from microcli.engines import network_views
from microcli.inference import Predictor
from microcli.metrics import TEMPERATURE_RANGE
from microcli.models import REGISTRY, create_model
from microcli.train import TrainConfig, train_model as fit, with_temperature

from .conftest import REPO, free_port

pytestmark = pytest.mark.slow  # these train real models; `pytest -m "not slow"` skips them

SAMPLE = REPO / "sample_images"
runner = CliRunner()


def small(tmp_path, name="run", **kw) -> TrainConfig:
    base = dict(data=str(SAMPLE), out=str(tmp_path / name), arch="lenet", epochs=2, workers=0, img_size=48)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture
def lenet_run(trained_result):
    """The session's shared LeNet run (12 epochs on sample_images)."""
    return trained_result


def test_lenet_learns_well_above_chance_and_writes_the_run(lenet_run):
    run = lenet_run.run_dir
    for name in ("best.pt", "last.pt", "config.json", "split.csv", "metrics.csv", "curves.png", "val_report.json",
                 "val_report.txt", "val_per_class.csv", "val_confusion.csv", "val_confusion.png", "val_misclassified.csv"):
        assert (run / name).is_file(), name
    chance = 1 / 6
    assert lenet_run.best_score > 2.5 * chance  # macro-F1 on the held-out 20 %
    assert lenet_run.report["overall"]["accuracy"] >= 0.5
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 13))
    assert set(rows[0]) >= {"train_loss", "train_acc", "val_loss", "val_acc", "val_macro_f1", "lr", "seconds",
                            "images_per_s"}
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["train"]["arch"] == "lenet" and cfg["resolved"]["channels"] == 1
    assert cfg["resolved"]["input"]["img_size"] == 96  # auto: the images' side


def test_bundle_loads_with_weights_only_and_gives_the_same_logits(lenet_run):
    raw = torch.load(lenet_run.run_dir / "best.pt", map_location="cpu", weights_only=True)
    assert raw["format"] == "microcli-model" and raw["format_version"] == 1
    assert raw["classes"] == sorted(p.name for p in SAMPLE.iterdir() if p.is_dir())
    assert raw["input"]["channels"] == 1 and len(raw["input"]["mean"]) == 1
    assert {"microcli", "torch", "torchvision"} <= set(raw["versions"])
    model = create_model(raw["arch"], len(raw["classes"]), raw["input"]["channels"])
    model.load_state_dict(raw["state_dict"])
    model.eval()
    bundle = load_bundle(lenet_run.run_dir)
    from microcli.inputs import prepare_array

    files = sorted(SAMPLE.glob("*/*.png"))[:5]
    x = torch.from_numpy(network_views([prepare_array(str(f), bundle.input) for f in files], bundle.input).groups[0][0])
    mean = torch.tensor(raw["input"]["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(raw["input"]["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        direct = model((x - mean) / std)
    got = Predictor(bundle, precision="fp32").logits(x)
    torch.testing.assert_close(got, direct, rtol=1e-4, atol=1e-4)


def _val_items(run: Path):
    from microcli.data import Item

    return [Item(r["path"], r["label"]) for r in csv.DictReader(open(run / "split.csv")) if r["split"] == "val"]


def test_best_pt_is_calibrated_on_validation_and_no_prediction_changes(lenet_run):
    from microcli.evaluate import evaluate_items

    calibrated = load_bundle(lenet_run.run_dir / "best.pt")
    t = calibrated.metrics["temperature"]
    assert TEMPERATURE_RANGE[0] <= t <= TEMPERATURE_RANGE[1] and t == lenet_run.temperature
    raw = with_temperature(calibrated, 1 / t)  # the network as training left it
    items = _val_items(lenet_run.run_dir)
    got, before = (evaluate_items(Predictor(b), items, workers=0) for b in (calibrated, raw))  # as final_report
    assert (got.probs.argmax(1) == before.probs.argmax(1)).all()
    assert got.report["overall"]["log_loss"] < before.report["overall"]["log_loss"]
    assert lenet_run.report["overall"]["log_loss"] == pytest.approx(got.report["overall"]["log_loss"], abs=1e-4)


def test_calibrating_again_fits_the_raw_network_not_the_calibrated_one(lenet_run, tmp_path):
    # A resumed run whose best.pt stayed the best calibrates that file a second time.
    from microcli.inputs import prepare_array
    from microcli.train import Runtime, calibrate

    path = Path(shutil.copy(lenet_run.run_dir / "best.pt", tmp_path / "best.pt"))
    bundle = load_bundle(path)
    items = _val_items(lenet_run.run_dir)
    views = network_views([prepare_array(it.path, bundle.input) for it in items], bundle.input)
    y = [bundle.classes.index(it.label) for it in items]
    env = Runtime(torch.device("cpu"), None)
    first = calibrate(path, views, y, env)
    second = calibrate(path, views, y, env)
    assert second == pytest.approx(first, rel=1e-3)
    assert load_bundle(path).metrics["temperature"] == pytest.approx(first, rel=1e-3)
    # Resumed with too few validation images to fit one: the old temperature goes, not just its effect.
    few = network_views([prepare_array(it.path, bundle.input) for it in items[:5]], bundle.input)
    assert calibrate(path, few, y[:5], env) is None
    raw = load_bundle(path)
    assert "temperature" not in raw.metrics
    x = torch.from_numpy(views.groups[0][0])
    torch.testing.assert_close(Predictor(raw, precision="fp32").logits(x),
                               Predictor(bundle, precision="fp32").logits(x) * bundle.metrics["temperature"], rtol=1e-4,
                               atol=1e-4)


@pytest.mark.parametrize("arch", list(REGISTRY))
def test_a_temperature_divides_every_registry_models_logits(arch, lenet_run):
    from dataclasses import replace

    from microcli.inputs import prepare_array

    base = load_bundle(lenet_run.run_dir / "best.pt")
    bundle = replace(base, arch=arch, state_dict=create_model(arch, len(base.classes), 1).state_dict())
    files = sorted(SAMPLE.glob("*/*.png"))[:4]
    x = torch.from_numpy(network_views([prepare_array(str(f), bundle.input) for f in files], bundle.input).groups[0][0])
    plain, hotter = (Predictor(b, precision="fp32").logits(x) for b in (bundle, with_temperature(bundle, 2.5)))
    torch.testing.assert_close(hotter, plain / 2.5, rtol=1e-4, atol=1e-5)


def test_tiled_models_and_tiny_validation_parts_are_left_uncalibrated_and_say_why(tmp_path):
    # LeNet on 48 px crops of 96 px images evaluates four tiles an image: a temperature would change the
    # class their averaged softmax favours. One validation image cannot fit a temperature.
    r = runner.invoke(app, ["train", str(SAMPLE), "-o", str(tmp_path / "tiles"), "--arch", "lenet", "--epochs", "1",
                            "--img-size", "48", "--fit", "crop", "--workers", "0"])
    assert r.exit_code == 0, r.stderr
    assert ("best.pt not calibrated, its softmax is as training left it: some validation images are evaluated as "
            "several tiles") in r.stderr.replace("\n", " ")
    assert "temperature" not in load_bundle(tmp_path / "tiles" / "best.pt").metrics
    files = sorted(SAMPLE.glob("*/*.png"))
    rows = [("path", "label", "split")] + [(str(f), f.parent.name, "val" if i == 0 else "train")
                                           for i, f in enumerate(files)]
    with open(tmp_path / "one_val.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    r = runner.invoke(app, ["train", str(tmp_path / "one_val.csv"), "-o", str(tmp_path / "tiny"), "--arch", "lenet",
                            "--epochs", "1", "--img-size", "48", "--fit", "squash", "--workers", "0"])
    assert r.exit_code == 0, r.stderr
    assert "only 1 validation image, and a temperature takes 20" in r.stderr.replace("\n", " ")


def test_no_calibrate_keeps_the_raw_softmax(tmp_path):
    r = runner.invoke(app, ["train", str(SAMPLE), "-o", str(tmp_path / "run"), "--arch", "lenet", "--epochs", "1",
                            "--img-size", "48", "--fit", "squash", "--workers", "0", "--no-calibrate"])
    assert r.exit_code == 0, r.stderr
    assert "calibrated" not in r.stderr
    assert "temperature" not in load_bundle(tmp_path / "run" / "best.pt").metrics


def test_split_csv_has_every_image_once(lenet_run):
    rows = list(csv.DictReader(open(lenet_run.run_dir / "split.csv")))
    assert len(rows) == 192 and len({r["path"] for r in rows}) == 192
    val = [r for r in rows if r["split"] == "val"]
    per_class = {c: sum(r["label"] == c for r in val) for c in (p.name for p in SAMPLE.iterdir() if p.is_dir())}
    assert all(n in (6, 7) for n in per_class.values()), per_class  # 20 % of 32 images per class


def test_resume_continues_from_the_next_epoch(tmp_path):
    first = fit(small(tmp_path, epochs=2))
    assert [r["epoch"] for r in first.rows] == [1, 2]
    from microcli.train import resume_config

    second = fit(resume_config(tmp_path / "run", epochs=4), resume=True)
    assert [r["epoch"] for r in second.rows] == [1, 2, 3, 4]
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert load_bundle(tmp_path / "run" / "last.pt").training_state["epoch"] == 4


def test_resume_with_other_classes_is_refused(tmp_path):
    fit(small(tmp_path, epochs=1))
    other = tmp_path / "other"
    for c in ("equiaxed", "lamellar"):
        shutil.copytree(SAMPLE / c, other / c)
    from microcli.train import resume_config

    with pytest.raises(DataError, match=r"--resume: the run was trained on classes \[.*\], but .* has \['equiaxed', 'lamellar'\]"):
        fit(resume_config(tmp_path / "run", epochs=2, data=str(other)), resume=True)


def test_existing_run_folder_needs_force(tmp_path):
    fit(small(tmp_path, epochs=1))
    with pytest.raises(OutputExistsError, match="run folder exists and is not empty; use --force"):
        fit(small(tmp_path, epochs=1))
    fit(small(tmp_path, epochs=1, force=True))


def test_malicious_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"format": "microcli-model", "evil": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"evil\.pt: not a microcli model bundle; .*never does"):
        load_bundle(tmp_path / "evil.pt")
    assert not marker.exists()


def test_non_bundle_files_are_refused(tmp_path):
    torch.save(create_model("lenet", 3).state_dict(), tmp_path / "sd.pt")
    with pytest.raises(CheckpointError, match="not a microcli model bundle"):
        load_bundle(tmp_path / "sd.pt")
    for content, told in ((b"junk\n", r"it begins b'junk\\n'"), (b"", "it is empty")):
        (tmp_path / "junk.pt").write_bytes(content)
        with pytest.raises(CheckpointError, match=r"junk\.pt: not a model file: neither a torch checkpoint \(a zip "
                                                  rf"archive\) nor an older torch pickle \({told}\)"):
            load_bundle(tmp_path / "junk.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "sd.pt").read_bytes()[:2000])  # a zip cut short in the copy
    with pytest.raises(CheckpointError, match=r"cut\.pt: a damaged model file: a zip archive without its directory "
                                              r"\(a copy cut short\?\)"):
        load_bundle(tmp_path / "cut.pt")


def make_classes(root: Path, spec: dict[str, int]) -> Path:
    for name, n in spec.items():
        (root / name).mkdir(parents=True)
        for f in sorted((SAMPLE / "lamellar").glob("*.png"))[:n]:
            shutil.copy(f, root / name / f.name)
    return root


@pytest.mark.parametrize("spec,message", [
    ({"grain boundaries": 3, "empty one": 0}, r"empty class folder\(s\): 'empty one'"),
    ({"only": 4}, r"only one class \('only'\); a classifier needs at least two"),
])
def test_bad_data_sets_fail_before_training(tmp_path, spec, message):
    data = make_classes(tmp_path / "data", spec)
    with pytest.raises(DataError, match=message):
        fit(small(tmp_path, data=str(data)))
    assert not (tmp_path / "run").exists()


def test_a_class_that_cannot_be_held_out_trains_with_a_warning(tmp_path):
    data = make_classes(tmp_path / "data", {"a": 6, "b b": 1})
    r = runner.invoke(app, ["train", str(data), "-o", str(tmp_path / "run"), "--epochs", "1", "--workers", "0", "--arch", "lenet",
                            "--img-size", "32"])
    assert r.exit_code == 0, r.stderr
    assert "warning:" in r.stderr and "'b b'" in r.stderr
    rows = list(csv.DictReader(open(tmp_path / "run" / "split.csv")))
    assert [r["split"] for r in rows if r["label"] == "b b"] == ["train"]


def test_unreadable_images_are_skipped_and_listed_or_fail_with_strict(tmp_path, truncated_png):
    data = make_classes(tmp_path / "data", {"grain boundaries (etched)": 6, "pearlite, coarse": 6})
    shutil.copy(truncated_png, data / "pearlite, coarse" / "zz_broken.png")
    r = runner.invoke(app, ["train", str(data), "-o", str(tmp_path / "run"), "--epochs", "1", "--workers", "0", "--arch", "lenet",
                            "--img-size", "32"])
    assert r.exit_code == 3, r.stderr
    assert "zz_broken.png: truncated or corrupt image data" in r.stderr
    assert (tmp_path / "run" / "best.pt").is_file()
    [row] = list(csv.DictReader(open(tmp_path / "run" / "skipped.csv", newline="")))
    assert row["path"].endswith("zz_broken.png") and row["error"].startswith("truncated or corrupt image data")
    assert load_bundle(tmp_path / "run").classes == ["grain boundaries (etched)", "pearlite, coarse"]
    with pytest.raises(DataError, match=r"zz_broken\.png: truncated .*--strict"):
        fit(small(tmp_path, name="strict", data=str(data), strict=True))


def test_manifest_with_groups(tmp_path):
    rows = [("path", "label", "group")]
    for c in ("equiaxed", "porosity"):
        for i, f in enumerate(sorted((SAMPLE / c).glob("*.png"))[:12]):
            rows.append((str(f), c, f"{c}-specimen-{i // 3}"))
    with open(tmp_path / "m.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    fit(small(tmp_path, data=str(tmp_path / "m.csv"), epochs=1, val_split=0.25))
    split = list(csv.DictReader(open(tmp_path / "run" / "split.csv")))
    sides = {}
    for r in split:
        sides.setdefault(r["group"], set()).add(r["split"])
    assert all(len(s) == 1 for s in sides.values()) and any("val" in s for s in sides.values())


@pytest.mark.parametrize("arch", list(REGISTRY))
@pytest.mark.parametrize("channels", [1, 3])
def test_every_registry_model_trains_saves_and_reloads(arch, channels, tmp_path):
    model = create_model(arch, 4, channels)
    x = torch.randn(2, channels, 64, 64)
    out = model(x)
    assert out.shape == (2, 4)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    again = create_model(arch, 4, channels)
    again.load_state_dict(torch.load(tmp_path / "sd.pt", weights_only=True))
    model.eval(), again.eval()
    torch.testing.assert_close(model(x), again(x))


def test_half_width_resnet10_is_resnet10_with_half_the_channels():
    full, half = create_model("resnet10", 6, 1), create_model("resnet10-half", 6, 1)
    widths = [half.conv1.out_channels] + [getattr(half, f"layer{i}")[0].conv2.out_channels for i in range(1, 5)]
    assert widths == [32, 32, 64, 128, 256] and half.fc.in_features == 256 and half.conv1.in_channels == 1
    # the same modules under the same names (what explain, export and checkpoints read), at half width
    assert [n for n, _ in half.named_modules()] == [n for n, _ in full.named_modules()]
    n_full, n_half = (sum(p.numel() for p in m.parameters()) for m in (full, half))
    assert 0.2 < n_half / n_full < 0.3


def test_narrow_resnet_at_full_width_is_torchvisions_resnet10():
    # NarrowResNet re-states torchvision's ResNet.__init__ with other widths: at width 1 it must build the
    # same network, initialised the same way (same seed, same tensors)
    import torchvision

    from microcli.models.resnet import NarrowResNet

    torch.manual_seed(0)
    ours = NarrowResNet([1, 1, 1, 1], 6, 1.0).state_dict()
    torch.manual_seed(0)
    theirs = torchvision.models.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1], num_classes=6).state_dict()
    assert list(ours) == list(theirs)
    for k in ours:
        torch.testing.assert_close(ours[k], theirs[k])


def test_pretrained_state_dict_file_is_adapted_to_one_channel(tmp_path):
    import torchvision

    tv = torchvision.models.resnet18(weights=None)
    torch.save(tv.state_dict(), tmp_path / "r18.pth")
    from microcli.models import load_pretrained

    model = create_model("resnet18", 6, 1)
    skipped = load_pretrained(model, "resnet18", str(tmp_path / "r18.pth"))
    assert skipped == ["fc.bias", "fc.weight"]
    torch.testing.assert_close(model.conv1.weight, tv.conv1.weight.sum(1, keepdim=True))
    torch.testing.assert_close(model.layer4[1].conv2.weight, tv.layer4[1].conv2.weight)
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), tmp_path / "r34.pth")  # another network
    with pytest.raises(CheckpointError, match=r"r34\.pth: 96 tensor\(s\) do not fit this ResNet \(e\.g\. "
                                              r"layer1\.2\.conv1\.weight: not in this model\); are these the weights "
                                              "of another network"):
        load_pretrained(create_model("resnet18", 6, 1), "resnet18", str(tmp_path / "r34.pth"))


def test_resnet18_trains_end_to_end_via_cli(tmp_path):
    r = runner.invoke(app, ["train", str(SAMPLE), "-o", str(tmp_path / "r18"), "--arch", "resnet18", "--epochs", "1",
                            "--img-size", "32", "--workers", "0"])
    assert r.exit_code == 0, r.stderr
    assert r.stdout == ""
    assert "epoch   1/1" in r.stderr and "confusion matrix" in r.stderr
    assert load_bundle(tmp_path / "r18").arch == "resnet18"


def test_list_models_on_stdout():
    r = runner.invoke(app, ["train", "--list-models"])
    assert r.exit_code == 0 and all(name in r.stdout for name in REGISTRY)


def test_torchrun_two_processes_write_one_bundle(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "microcli", "train", str(SAMPLE), "-o", str(tmp_path / "ddp"), "--epochs", "2", "--img-size", "32",
           "--arch", "resnet10-half", "--fit", "crop", "--precision", "fp32", "--workers", "0", "--threads", "1"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    run = tmp_path / "ddp"
    assert sorted(f.name for f in run.glob("*.pt")) == ["best.pt", "last.pt"]
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["resolved"]["world_size"] == 2
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert p.stderr.count("epoch   2/2") == 1  # only rank 0 reports
    # validation was split between the ranks (16 tiles of 32 px per 128 px image) and gathered: one process
    # scoring best.pt on the same images finds the same figures
    from microcli.evaluate import evaluate

    assert cfg["resolved"]["input"]["whole"] == 64
    best = next(r for r in rows if int(r["epoch"]) == load_bundle(run / "best.pt").metrics["epoch"])
    again = evaluate(run, split="val").report["overall"]
    assert again["macro_f1"] == pytest.approx(float(best["val_macro_f1"]), abs=1e-4)
    assert again["accuracy"] == pytest.approx(float(best["val_acc"]), abs=1e-4)


def test_ctrl_c_writes_last_pt_and_prints_the_resume_command(tmp_path):
    cmd = [sys.executable, "-m", "microcli", "train", str(SAMPLE), "-o", str(tmp_path / "run"), "--epochs", "500", "--arch", "lenet",
           "--workers", "0", "--img-size", "64"]
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    lines = []
    deadline = time.time() + 120
    while time.time() < deadline:
        line = p.stderr.readline()
        lines.append(line)
        if line.startswith("epoch   2/500"):
            break
    p.send_signal(signal.SIGINT)
    rest = p.stderr.read()
    assert p.wait(timeout=60) == 130, "".join(lines) + rest
    assert f"microcli train --resume {tmp_path / 'run'}" in rest
    state = load_bundle(tmp_path / "run" / "last.pt").training_state
    assert state["epoch"] >= 2
    assert np.isfinite(state["best_score"])


def test_a_run_trained_on_a_relative_path_is_evaluated_and_resumed_from_another_folder(tmp_path, monkeypatch):
    make_classes(tmp_path / "lab" / "data", {"ferrite": 6, "pearlite": 6})
    monkeypatch.chdir(tmp_path / "lab")
    r = runner.invoke(app, ["train", "data", "-o", "runs/a", "--arch", "lenet", "--epochs", "1", "--img-size", "32",
                            "--workers", "0"])
    assert r.exit_code == 0, r.stderr
    run = tmp_path / "lab" / "runs" / "a"
    assert all(os.path.isabs(row["path"]) for row in csv.DictReader(open(run / "split.csv")))
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["evaluate", str(run), "--split", "val", "--format", "json", "--workers", "0"])
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["overall"]["images"] == sum(1 for row in csv.DictReader(open(run / "split.csv"))
                                                            if row["split"] == "val")
    r = runner.invoke(app, ["train", "--resume", str(run), "--epochs", "2", "--workers", "0"])
    assert r.exit_code == 0, r.stderr
    assert [int(row["epoch"]) for row in csv.DictReader(open(run / "metrics.csv"))] == [1, 2]


def test_preprocess_takes_the_pipeline_json_that_microcli_preprocess_wrote(tmp_path):
    data = make_classes(tmp_path / "data", {"ferrite": 6, "pearlite": 6})
    assert runner.invoke(app, ["preprocess", str(data), "-o", str(tmp_path / "pre"), "--op", "median:radius=2",
                               "--op", "clahe:clip=0.03", "--workers", "0"]).exit_code == 0
    r = runner.invoke(app, ["train", str(data), "-o", str(tmp_path / "run"), "--arch", "lenet", "--epochs", "1",
                            "--img-size", "32", "--workers", "0",
                            "--preprocess", str(tmp_path / "pre" / "pipeline.json")])
    assert r.exit_code == 0, r.stderr
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["train"]["preprocess"]
    assert saved == "median:radius=2|clahe:clip=0.03"


def test_resume_keeps_the_runs_split_when_images_were_added_since(tmp_path):
    data = make_classes(tmp_path / "data", {"ferrite": 8, "pearlite": 8})
    args = ["--arch", "lenet", "--img-size", "32", "--workers", "0"]
    assert runner.invoke(app, ["train", str(data), "-o", str(tmp_path / "run"), "--epochs", "1", *args]).exit_code == 0
    before = (tmp_path / "run" / "split.csv").read_text()
    for i, f in enumerate(sorted((SAMPLE / "porosity").glob("*.png"))[:3]):
        shutil.copy(f, data / "ferrite" / f"new_{i}.png")
    r = runner.invoke(app, ["train", "--resume", str(tmp_path / "run"), "--epochs", "2", "--workers", "0"])
    assert r.exit_code == 0, r.stderr
    assert (f"warning: {data}: 3 image(s) are not in the run's split.csv (added since the run started, e.g. "
            f"{data / 'ferrite' / 'new_0.png'}); a resumed run keeps its split") in " ".join(r.stderr.split())
    assert (tmp_path / "run" / "split.csv").read_text() == before


def test_resume_says_what_it_ignores_and_refuses_to_train_nothing(tmp_path):
    data = make_classes(tmp_path / "data", {"ferrite": 6, "pearlite": 6})
    args = ["--arch", "lenet", "--img-size", "32", "--workers", "0"]
    assert runner.invoke(app, ["train", str(data), "-o", str(tmp_path / "run"), "--epochs", "2", *args]).exit_code == 0
    r = runner.invoke(app, ["train", "--resume", str(tmp_path / "run"), "--epochs", "2"])
    assert r.exit_code == 2
    assert (f"error: --resume {tmp_path / 'run'}: the run has trained 2 epochs, and --epochs 2 asks for no more; "
            "give --epochs above 2 to go on") in " ".join(r.stderr.split())
    r = runner.invoke(app, ["train", "--resume", str(tmp_path / "run"), "--epochs", "3", "--arch", "resnet18",
                            "--val-split", "0.5"])
    assert r.exit_code == 0, r.stderr
    assert (f"warning: --resume {tmp_path / 'run'} goes on with the run's own settings; ignored: --arch, "
            "--val-split") in " ".join(r.stderr.split())
    assert load_bundle(tmp_path / "run").arch == "lenet"

"""The training configuration and the model registry: every bad value fails at once, before any I/O."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from microcli.cli.app import app
from microcli.config import TrainConfig
from microcli.errors import UsageError
from microcli.models import REGISTRY
from microcli.options import Arch, Fit

runner = CliRunner()


def cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"data": "nowhere", "out": "nowhere-run", **kw})


def test_choices_are_typed_and_accept_their_values():
    c = cfg(arch="resnet18", fit="crop", optimizer="sgd", channels=3)
    assert c.arch is Arch("resnet18") and c.fit is Fit.crop and c.channels.value == "3"
    assert c.to_dict()["fit"] == "crop" and json.dumps(c.to_dict())  # JSON-ready
    assert TrainConfig.from_dict(c.to_dict()) == c


def test_config_is_built_by_keyword_only():
    with pytest.raises(TypeError):
        TrainConfig("data", "out")  # a reordered field can never shift values silently


@pytest.mark.parametrize("field,value,message", [
    ("arch", "vgg", r"--arch must be one of auto, lenet, resnet10, resnet10-half, resnet18, .*, got 'vgg'"),
    ("optimizer", "adam", r"--optimizer must be one of adamw, sgd, got 'adam'"),
    ("class_weights", "inverse", r"--class-weights must be one of none, balanced"),
    ("fit", "stretch", r"--fit must be one of auto, resize, squash, crop"),
    ("img_size", 4, r"--img-size must be 0 \(auto\) or 32\.\.2048 for the ResNet that --arch auto picks, got 4"),
    ("img_size", 100000, r"--img-size must be 0 \(auto\) or 32\.\.2048 for the ResNet that --arch auto picks, "
                         r"got 100000"),
    ("epochs", 0, r"--epochs must be at least 1, got 0"),
    ("val_split", 1.0, r"--val-split must be in \(0, 1\), got 1\.0"),
    ("label_smoothing", 0.7, r"--label-smoothing must be in \[0, 0\.5\]"),
    ("max_pixels", -5, r"--max-pixels must be at least 0 \(0: no limit\), got -5"),
    ("workers", -3, r"--workers must be -1 \(auto\), 0 \(in this process\) or more"),
    ("time", 0, r"--time must be greater than 0 \(minutes\), got 0"),
    ("sampler", "oversample", r"--sampler must be one of auto, uniform, sqrt, balanced"),
])
def test_bad_values_name_the_option_rule_and_value(field, value, message):
    with pytest.raises(UsageError, match=message):
        cfg(**{field: value})


def test_lenet_has_its_own_size_range_and_no_pretrained_weights():
    with pytest.raises(UsageError, match=r"--img-size must be 0 \(auto\) or 16\.\.2048 for lenet, got 4"):
        cfg(arch="lenet", img_size=4)
    with pytest.raises(UsageError, match=r"--pretrained: no pretrained weights exist for 'lenet'"):
        cfg(arch="lenet", pretrained="imagenet")


def test_image_size_range_comes_from_the_registry():
    with pytest.raises(UsageError, match=r"32\.\.2048 for resnet18, got 16"):
        cfg(arch="resnet18", img_size=16)
    assert cfg(arch="lenet", img_size=16).img_size == 16


def test_missing_pretrained_file_and_bad_pipeline_fail_before_any_io(tmp_path):
    with pytest.raises(UsageError, match=r"--pretrained .*nope\.pt: no such file"):
        cfg(arch="resnet18", pretrained=str(tmp_path / "nope.pt"))
    from microcli.errors import PipelineError

    with pytest.raises(PipelineError, match="unknown op 'blurr'"):
        cfg(preprocess="blurr")


def test_cli_exits_2_before_reading_any_image(tmp_path, truncated_png):
    # DATA holds an unreadable image: had decoding started, the message would name it.
    data = tmp_path / "data"
    for c in ("a", "b"):
        (data / c).mkdir(parents=True)
        (data / c / "x.png").write_bytes(truncated_png.read_bytes())
    r = runner.invoke(app, ["train", str(data), "-o", str(tmp_path / "run"), "--img-size", "4", "--arch", "lenet"])
    assert r.exit_code == 2
    assert "--img-size must be 0 (auto) or 16..2048 for lenet, got 4" in r.stderr
    assert "x.png" not in r.stderr and not (tmp_path / "run").exists()


def test_registry_is_the_one_source_of_architecture_facts():
    r = runner.invoke(app, ["train", "--help"])
    for name, info in REGISTRY.items():
        assert name in r.stdout
        assert info.default_lr > 0 and info.min_size <= 224 <= info.max_size
    assert set(Arch.__members__) == {"auto", *REGISTRY}


def test_config_options_and_registry_do_not_import_torch():
    code = ("import sys; import microcli.config, microcli.options, microcli.models\n"
            "microcli.config.TrainConfig(data='d', out='o', arch='resnet50', fit='crop')\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_bracketed_defaults_in_option_help_are_shown_not_eaten_as_markup():
    wide = {**os.environ, "COLUMNS": "250"}  # so that no help text shares its lines with the next column
    said = {cmd: " ".join(subprocess.run([sys.executable, "-m", "microcli", cmd, "--help"], capture_output=True,
                                         text=True, env=wide, check=True).stdout.replace("│", " ").split())
            for cmd in ("train", "predict")}
    assert "'none' for none [default: chosen from the data]." in said["train"]
    assert "Epochs [default: chosen from the data, or planned by --time; with --resume: the run's]." in said["train"]
    assert "Row format [default: from the -o file's suffix (.tsv, .jsonl), else csv]." in said["predict"]
    assert "pip install 'microcli[fast]'" in said["predict"]

import glob
import os

import pytest
import yaml

from conftest import REPO_ROOT
from fnn_keras.config import (
    Config,
    ConfigError,
    config_from_dict,
    load_yaml,
    merge_overrides,
    save_config,
)
from fnn_keras.layout import run_paths


@pytest.mark.parametrize(
    "path",
    sorted(glob.glob(os.path.join(REPO_ROOT, "pipelines", "*.yaml"))),
    ids=os.path.basename,
)
def test_pipeline_recipes_are_valid(path):
    config = config_from_dict(load_yaml(path), path)
    assert config.data.train.startswith("../shared/data/")


def test_flags_override_yaml():
    values = {"training": {"epochs": 5, "seed": 3}, "model": {"backbone": "tiny"}}
    merged = merge_overrides(values, {"training.epochs": 1, "data.sequence_length": 32})
    config = config_from_dict(merged)
    assert config.training.epochs == 1
    assert config.training.seed == 3
    assert config.data.sequence_length == 32
    assert config.model.backbone == "tiny"


def test_saved_config_round_trips(tmp_path):
    config = config_from_dict({"training": {"learning_rate": 3e-5}, "output": {"run_name": "x"}})
    save_config(config, str(tmp_path / "config.yaml"))
    assert config_from_dict(load_yaml(str(tmp_path / "config.yaml"))) == config


@pytest.mark.parametrize(
    "values, fragment",
    [
        ({"data": {"sequence_length": 2}}, "sequence_length"),
        ({"data": {"train": "a.tsv"}}, "--dev"),
        ({"model": {"dropout": 1.0}}, "model.dropout"),
        ({"training": {"batch_size": "32"}}, "training.batch_size"),
        ({"training": {"learning_rate": 0}}, "learning_rate"),
        ({"output": {"run_name": "a/b"}}, "run name"),
        ({"trainer": {}}, "unknown section"),
        ({"model": {"fine_tune": "partial"}}, "model.fine_tune"),
        ({"model": {"lora_rank": 0}}, "model.lora_rank"),
        ({"model": {"backbone_dropout": 1.5}}, "model.backbone_dropout"),
        ({"training": {"loss": "hinge"}}, "training.loss"),
        ({"training": {"focal_gamma": -1}}, "training.focal_gamma"),
        ({"training": {"label_smoothing": 1.0}}, "training.label_smoothing"),
        ({"training": {"clip_norm": 0}}, "training.clip_norm"),
        ({"training": {"adversarial": "pgd"}}, "training.adversarial"),
        ({"training": {"adversarial_epsilon": 0}}, "training.adversarial_epsilon"),
    ],
    ids=[
        "short_sequence",
        "train_without_dev",
        "dropout",
        "string_int",
        "zero_rate",
        "run_name_slash",
        "unknown_section",
        "fine_tune",
        "lora_rank",
        "backbone_dropout",
        "loss",
        "focal_gamma",
        "label_smoothing",
        "clip_norm",
        "adversarial",
        "adversarial_epsilon",
    ],
)
def test_invalid_config(values, fragment):
    with pytest.raises(ConfigError, match=fragment):
        config_from_dict(values)


def test_invalid_yaml_names_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("training:\n  epochs: [1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml at line \d"):
        load_yaml(str(path))


def test_run_paths_layout():
    paths = run_paths(Config().output, "demo")
    assert paths.run_dir == os.path.join("exported", "demo")
    assert paths.log_dir == os.path.join("tensorboard_logs", "demo")
    assert paths.model == os.path.join("exported", "demo", "model.keras")
    assert yaml.safe_dump(Config().to_dict())


@pytest.mark.parametrize(
    "content, fragment",
    [("- a\n- b\n", "found a list"), ("data: 5\n", "section 'data'")],
    ids=["top_level_list", "section_not_mapping"],
)
def test_yaml_must_be_mappings(tmp_path, content, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=fragment):
        load_yaml(str(path))

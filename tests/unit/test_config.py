"""Configuration: the shipped YAML files, overrides, the seed-style dict and errors reported all at once."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from resume_ner.config import SECTION_FILES, ResumeNerConfig, config_from_dict, load, save
from resume_ner.config_docs import render_reference, render_section_yaml
from resume_ner.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_shipped_config_files_are_valid_and_equal_to_the_built_in_defaults():
    assert load(REPO_ROOT / "config") == ResumeNerConfig()


def test_the_mpnet_preset_changes_only_the_backbone_its_depth_and_the_learning_rate():
    preset = load(REPO_ROOT / "config" / "presets" / "mpnet-6")
    assert (preset.model.backbone, preset.model.num_layers) == ("packaged:all-mpnet-base-v2", 6)
    assert preset.training.learning_rate == 1e-4
    defaults = ResumeNerConfig().to_dict()
    changed = preset.to_dict()
    changed["model"].update(backbone=defaults["model"]["backbone"], num_layers=None)
    changed["training"]["learning_rate"] = defaults["training"]["learning_rate"]
    assert changed == defaults


def test_shipped_config_files_and_reference_match_a_fresh_render():
    """`make config-docs` regenerates them; this fails when the models changed and it was not run."""
    for section, name in SECTION_FILES.items():
        assert (REPO_ROOT / "config" / name).read_text() == render_section_yaml(section), name
    assert (REPO_ROOT / "docs" / "configuration.md").read_text() == render_reference()


def test_every_setting_is_documented_in_the_configuration_reference():
    reference = render_reference()
    for section_name, section in ResumeNerConfig.model_fields.items():
        for field_name in section.annotation.model_fields:
            assert f"`{section_name}.{field_name}`" in reference, f"{section_name}.{field_name} is not documented"


def test_overrides_are_parsed_as_yaml_and_win_over_files(tmp_path):
    (tmp_path / "train.yaml").write_text("learning_rate: 1.0e-4\nepochs: 7\n")
    config = load(tmp_path, ["training.learning_rate=3e-5", "model.backbone=/models/x", "tracking.enabled=false"])
    assert config.training.learning_rate == 3e-5 and config.training.epochs == 7
    assert config.model.backbone == "/models/x" and config.tracking.enabled is False


def test_seed_style_dict_is_accepted():
    config = config_from_dict({
        "model": {"backbone": "some/model", "num_labels": 25},
        "training": {"learning_rate": 2e-5, "batch_size": 4, "epochs": 1, "random_seed": 1},
    })
    assert config.model.num_labels == 25 and config.training.random_seed == 1


def test_every_error_is_reported_at_once_with_its_path(tmp_path):
    (tmp_path / "model.yaml").write_text("max_length: 4\nbogus: 1\n")
    (tmp_path / "train.yaml").write_text("epochs: 0\nlearning_rate: -1\n")
    with pytest.raises(ConfigError) as info:
        load(tmp_path, ["data.format=xml"])
    message = str(info.value)
    for path in ("model.max_length", "model.bogus", "training.epochs", "training.learning_rate", "data.format"):
        assert path in message


def test_broken_yaml_and_bad_override_name_the_file_or_item(tmp_path):
    (tmp_path / "data.yaml").write_text("label_map: [unclosed\n")
    with pytest.raises(ConfigError, match="data.yaml"):
        load(tmp_path)
    with pytest.raises(ConfigError, match="KEY.PATH=VALUE"):
        load(None, ["training.learning_rate"])
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "missing")


def test_stride_must_leave_room_in_the_window():
    with pytest.raises(ConfigError, match="stride"):
        config_from_dict({"model": {"max_length": 32, "stride": 31}})


def test_saved_config_round_trips(tmp_path):
    config = load(None, ["training.epochs=9"])
    path = save(config, tmp_path / "out" / "config.yaml")
    assert config_from_dict(yaml.safe_load(path.read_text())) == config
    assert config.config_hash() != ResumeNerConfig().config_hash()


def _problems(info: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    """The problem lines of a ``ConfigError``, sorted."""
    return sorted(line.strip() for line in str(info.value).splitlines()[1:])


def test_override_problems_name_the_set_item_in_plain_words_with_the_closest_key():
    with pytest.raises(ConfigError) as info:
        load(None, ["training.learnin_rate=1e-4", "training.epochs=zero", "traning.batch_size=3",
                    "training.device=cdua", "training.max_length=128", "training.batch_size"])
    assert _problems(info) == sorted([
        "--set training.learnin_rate=1e-4: no setting training.learnin_rate; did you mean training.learning_rate?",
        "--set training.epochs=zero: expected an integer, got 'zero'",
        "--set traning.batch_size=3: no section traning; did you mean training.batch_size?",
        "--set training.device=cdua: expected one of 'auto', 'cpu' or 'cuda', got 'cdua'; did you mean 'cuda'?",
        "--set training.max_length=128: no setting training.max_length; did you mean model.max_length or "
        "hpo.max_length?",
        "--set training.batch_size: expected KEY.PATH=VALUE, e.g. --set training.learning_rate=3e-5",
    ])


def test_file_problems_name_the_file_and_an_override_of_a_bad_value_wins(tmp_path):
    (tmp_path / "train.yaml").write_text("learnin_rate: 1.0e-4\nepochs: zero\nbatch_size: 0\n")
    (tmp_path / "data.yaml").write_text("label_map: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load(tmp_path, ["training.epochs=3", "model.max_length=32"])
    train = tmp_path / "train.yaml"
    assert _problems(info) == sorted([
        f"{tmp_path / 'data.yaml'}: not valid YAML: expected ',' or ']', but got '<stream end>' at line 2, column 1",
        f"{train}: no setting training.learnin_rate; did you mean training.learning_rate?",
        f"{train}: training.batch_size: must be at least 1, got 0",
        "--set model.max_length=32: model: stride (64) must be below max_length - 2 (30)",
    ])


def test_problems_inside_dict_valued_settings_name_the_key_and_suggest_the_corrected_path():
    with pytest.raises(ConfigError) as info:
        load(None, ["pipeline.resources.hpo_trial.cpu_reqest='2'", "pipeline.resources.final_train.cpu_limit=8",
                    "pipeline.resorces.select_best.cpu_limit='1'"])
    assert _problems(info) == sorted([
        "--set pipeline.resources.hpo_trial.cpu_reqest='2': no setting pipeline.resources.hpo_trial.cpu_reqest; "
        "did you mean pipeline.resources.hpo_trial.cpu_request?",
        "--set pipeline.resources.final_train.cpu_limit=8: expected text, got 8 (YAML reads it as a number: put it "
        "in quotes)",
        "--set pipeline.resorces.select_best.cpu_limit='1': no setting pipeline.resorces; did you mean "
        "pipeline.resources.select_best.cpu_limit?",
    ])
    resources = load(None, ["pipeline.resources.final_train.cpu_limit='8'"]).pipeline.resources
    assert resources["final_train"].cpu_limit == "8"


def test_dict_problems_name_their_origin_in_plain_words():
    with pytest.raises(ConfigError) as info:
        config_from_dict({"training": {"epochs": 1.5}, "hpo": 3}, origin="best configuration")
    assert _problems(info) == ["best configuration: hpo: expected a mapping of settings, got 3",
                               "best configuration: training.epochs: expected an integer, got 1.5"]


@pytest.mark.parametrize("value", ["!!int", "!!bool x", "!!timestamp x", "!!float _"])
def test_a_value_that_does_not_fit_its_yaml_tag_is_a_config_error(tmp_path, value):
    (tmp_path / "train.yaml").write_text(f"epochs: {value}\n")
    with pytest.raises(ConfigError, match="train.yaml: not valid YAML: a value does not fit its tag"):
        load(tmp_path)
    with pytest.raises(ConfigError, match=f"--set training.epochs={value}: the value is not valid YAML"):
        load(None, [f"training.epochs={value}"])

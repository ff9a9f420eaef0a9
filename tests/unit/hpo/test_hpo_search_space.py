"""Search spaces: every bad spec reported at once before any training; good specs sample within bounds."""

from __future__ import annotations

import optuna
import pytest

from resume_ner.config import ResumeNerConfig, config_from_dict
from resume_ner.errors import ConfigError
from resume_ner.hpo.search_space import apply_params, parse_search_space

BASE = ResumeNerConfig()


def test_every_kind_of_bad_spec_is_reported_in_one_error():
    raw = {
        "model.dropout": {"type": "uniform", "min": 0.3, "max": 0.1},  # min >= max
        "training.learnin_rate": {"type": "log_uniform", "min": 1e-5, "max": 1e-3},  # unknown path
        "training.batch_size": {"type": "choice", "values": []},  # empty choices
        "training.epochs": {"type": "choice", "values": [2, "three"]},  # wrong type for the field
        "training.learning_rate": {"type": "log_uniform", "min": 0.0, "max": 1e-3},  # non-positive log bound
        "training.weight_decay": {"type": "gaussian", "min": 0, "max": 1},  # unknown type
        "training.warmup_ratio": {"type": "uniform", "min": 0, "max": 0.2, "scale": 2},  # unknown key
    }
    with pytest.raises(ConfigError) as info:
        parse_search_space(raw, BASE)
    message = str(info.value)
    assert "7 problem(s)" in message
    assert "model.dropout: min (0.3) must be below max (0.1)" in message
    assert "training.learnin_rate: unknown setting" in message and "learning_rate" in message
    assert "training.batch_size: a choice needs a non-empty list of values" in message
    assert "training.epochs: choice value 'three' is not a valid value" in message
    assert "training.learning_rate: min (0.0) must be positive on a log scale" in message
    assert "training.weight_decay: type 'gaussian' is not one of" in message
    assert "training.warmup_ratio: unknown key(s) scale" in message


def test_values_outside_the_fields_limits_and_untunable_paths_are_refused():
    raw = {
        "model.dropout": {"type": "uniform", "min": 0.0, "max": 1.5},  # dropout < 1
        "training.batch_size": {"type": "uniform", "min": 4, "max": 32},  # an int setting needs type int
        "training.gradient_accumulation_steps": {"type": "choice", "values": [1, True]},  # bool is not a number
        "model.backbone": {"type": "int", "min": 1, "max": 2},  # not numeric
        "data.split_seed": {"type": "int", "min": 1, "max": 3},  # data is loaded once per sweep
    }
    with pytest.raises(ConfigError) as info:
        parse_search_space(raw, BASE)
    message = str(info.value)
    assert "model.dropout: max 1.5 is not a valid value of this setting" in message
    assert "training.batch_size: the setting is an integer; use type int" in message
    assert "training.gradient_accumulation_steps: choice value True is a boolean" in message
    assert "model.backbone: type int needs a numeric setting" in message
    assert "data.split_seed: not a tunable setting" in message


def test_good_spec_suggests_values_in_range_and_parses_yaml_number_strings():
    raw = {
        "training.learning_rate": {"type": "log_uniform", "min": "1e-5", "max": "1e-3"},  # YAML 1.1 reads 1e-5 as str
        "model.dropout": {"type": "uniform", "min": 0.0, "max": 0.3, "step": 0.1},
        "training.epochs": {"type": "int", "min": 2, "max": 4},
        "training.batch_size": {"type": "choice", "values": [8, "16"]},
    }
    space = parse_search_space(raw, BASE)
    assert space.paths == list(raw)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        params = space.suggest(study.ask())
        assert 1e-5 <= params["training.learning_rate"] <= 1e-3
        assert round(params["model.dropout"], 6) in (0.0, 0.1, 0.2, 0.3)
        assert params["training.epochs"] in (2, 3, 4)
        assert params["training.batch_size"] in (8, 16)
    config = apply_params(BASE, params)
    assert config.training.batch_size == params["training.batch_size"]
    assert config.training.learning_rate == params["training.learning_rate"]


def test_grid_needs_an_all_choice_space():
    space = parse_search_space({"training.batch_size": {"type": "choice", "values": [8, 16]},
                                "training.learning_rate": {"type": "choice", "values": [1e-4, 3e-4]}}, BASE)
    assert space.grid() == {"training.batch_size": [8, 16], "training.learning_rate": [1e-4, 3e-4]}
    mixed = parse_search_space({"training.batch_size": {"type": "choice", "values": [8]},
                                "model.dropout": {"type": "uniform", "min": 0.0, "max": 0.2}}, BASE)
    with pytest.raises(ConfigError, match=r"not a choice: model.dropout \(uniform\)"):
        mixed.grid()


def test_empty_space_is_refused():
    with pytest.raises(ConfigError, match="search_space is empty"):
        parse_search_space({}, BASE)


def test_apply_params_validates_the_whole_config():
    config = config_from_dict({"model": {"max_length": 128, "stride": 32}})
    assert apply_params(config, {"model.dropout": 0.25}).model.dropout == 0.25
    with pytest.raises(ConfigError, match="training.batch_size"):
        apply_params(config, {"training.batch_size": 0})
    with pytest.raises(ConfigError, match="stride"):
        apply_params(config, {"model.max_length": 32})  # the stride of 32 no longer fits

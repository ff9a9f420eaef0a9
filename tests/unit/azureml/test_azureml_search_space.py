"""The project's search-space specs, sampler and pruner as AzureML sweep settings; what AzureML cannot express."""

from __future__ import annotations

import logging
import math

import pytest

from resume_ner.azureml import create_hpo_sweep_job_for_backbone
from resume_ner.azureml.sweep import map_search_space
from resume_ner.config import HpoConfig, ResumeNerConfig
from resume_ner.errors import ConfigError
from resume_ner.hpo.search_space import parse_search_space

TARGET = {"data_asset": "azureml:resumes:1", "environment": "azureml:resume-ner:1", "compute_cluster": "gpu",
          "aml_experiment_name": "exp"}
EVERY_TYPE = {
    "training.learning_rate": {"type": "log_uniform", "min": 1e-5, "max": 3e-4},
    "model.dropout": {"type": "uniform", "min": 0.0, "max": 0.3},
    "training.warmup_ratio": {"type": "uniform", "min": 0.0, "max": 0.2, "step": 0.05},
    "training.early_stopping_patience": {"type": "int", "min": 0, "max": 3},
    "training.epochs": {"type": "int", "min": 2, "max": 6, "step": 2},
    "training.batch_size": {"type": "choice", "values": [8, 16]},
    "model.label_all_tokens": {"type": "choice", "values": [True, False]},
}


def _mapped(space: dict, sampler: str = "random") -> dict:
    mapped = map_search_space(parse_search_space(space, ResumeNerConfig()), sampler)
    return {name: vars(distribution) for name, distribution in mapped.items()}


def _sweep(**hpo):
    return create_hpo_sweep_job_for_backbone("bert-base-cased", hpo_config=HpoConfig(**hpo), **TARGET)


def test_every_spec_type_maps_to_its_azureml_distribution():
    mapped = _mapped(EVERY_TYPE)
    assert mapped["training_learning_rate"] == {"type": "loguniform", "min_value": math.log(1e-5),
                                                "max_value": math.log(3e-4)}  # natural-log exponents
    assert mapped["model_dropout"] == {"type": "uniform", "min_value": 0.0, "max_value": 0.3}
    assert mapped["training_warmup_ratio"] == {"type": "quniform", "min_value": 0.0, "max_value": 0.2, "q": 0.05}
    assert mapped["training_early_stopping_patience"] == {"type": "randint", "upper": 4}  # upper is exclusive
    assert mapped["training_epochs"] == {"type": "quniform", "min_value": 2, "max_value": 6, "q": 2}
    assert mapped["training_batch_size"] == {"type": "choice", "values": [8, 16]}
    assert mapped["model_label_all_tokens"] == {"type": "choice", "values": [True, False]}


def test_bayesian_sampling_draws_integers_from_zero_with_quniform():
    mapped = _mapped({"training.early_stopping_patience": {"type": "int", "min": 0, "max": 3}}, "tpe")
    assert mapped["training_early_stopping_patience"] == {"type": "quniform", "min_value": 0, "max_value": 3, "q": 1}


def test_a_step_that_does_not_divide_the_bounds_cannot_be_a_quniform():
    with pytest.raises(ConfigError, match=r"training.epochs: AzureML's QUniform rounds to multiples of the step "
                                          r"\(2\), so min \(1\) and max \(5\) must be multiples of it"):
        _mapped({"training.epochs": {"type": "int", "min": 1, "max": 5, "step": 2}})


def test_choices_that_cannot_travel_on_a_command_line_are_refused():
    with pytest.raises(ConfigError, match=r"model.num_labels: choice value\(s\) \[None\] cannot be passed"):
        _mapped({"model.num_labels": {"type": "choice", "values": [None, 25]}})
    with pytest.raises(ConfigError, match=r"model.backbone: choice value\(s\) \['my model'\]"):
        _mapped({"model.backbone": {"type": "choice", "values": ["bert-base-cased", "my model"]}})


def test_a_log_uniform_needs_positive_bounds():
    with pytest.raises(ConfigError, match=r"training.learning_rate: min \(0.0\) must be positive on a log scale"):
        _mapped({"training.learning_rate": {"type": "log_uniform", "min": 0.0, "max": 1e-3}})


def test_samplers_map_to_azureml_sampling_algorithms():
    assert _sweep(sampler="random", seed=7)._to_dict()["sampling_algorithm"] == {"type": "random", "seed": 7}
    tpe = _sweep(sampler="tpe", pruner="none", search_space={"model.dropout": {"type": "uniform", "min": 0.0,
                                                                                "max": 0.3}})
    assert tpe._to_dict()["sampling_algorithm"] == "bayesian" and tpe.early_termination is None
    grid = _sweep(sampler="grid", pruner="none", search_space={"training.batch_size": {"type": "choice",
                                                                                        "values": [8, 16]}})
    assert grid._to_dict()["sampling_algorithm"] == "grid"


def test_pruners_map_to_early_termination_policies():
    median = _sweep(sampler="random", pruner="median", n_warmup_epochs=2).early_termination
    assert (median.type, median.evaluation_interval, median.delay_evaluation) == ("median_stopping", 1, 2)
    for pruner in ("hyperband", "successive_halving"):
        bandit = _sweep(sampler="random", pruner=pruner).early_termination
        assert (bandit.type, bandit.slack_factor, bandit.evaluation_interval) == ("bandit", 0.1, 1)
    assert _sweep(sampler="random", pruner="none").early_termination is None


def test_what_azureml_cannot_run_is_reported_at_once():
    with pytest.raises(ConfigError) as error:
        _sweep(sampler="tpe", pruner="hyperband")  # the defaults' log_uniform learning rate, and a chosen pruner
    message = str(error.value)
    assert "training.learning_rate: AzureML's bayesian sampling (hpo.sampler=tpe) takes only choice, uniform, " \
           "quniform distributions, not log_uniform" in message
    assert "hpo.pruner=hyperband: AzureML's bayesian sampling (hpo.sampler=tpe) takes no early termination" in message


def test_the_shipped_defaults_run_as_random_sampling_with_median_stopping_and_say_so(caplog):
    with caplog.at_level(logging.WARNING, logger="resume_ner.azureml.sweep"):
        job = _sweep()  # HpoConfig(): tpe, a log_uniform learning rate, the median pruner
    assert job._to_dict()["sampling_algorithm"] == {"type": "random", "seed": 42}
    assert job.early_termination.type == "median_stopping"
    assert [r.getMessage() for r in caplog.records] == [
        "hpo.sampler=tpe maps to AzureML bayesian sampling, which cannot take training.learning_rate (log_uniform) "
        "nor early termination (hpo.pruner=median); using random sampling with median early termination instead "
        "(set hpo.sampler=random to silence this; for bayesian sampling, give training.learning_rate a uniform or "
        "choice and set hpo.pruner=none)"]


def test_the_default_sampler_falls_back_for_the_default_pruner_alone(caplog):
    space = {"model.dropout": {"type": "uniform", "min": 0.0, "max": 0.3}}
    with caplog.at_level(logging.WARNING, logger="resume_ner.azureml.sweep"):
        job = _sweep(search_space=space)
    assert job._to_dict()["sampling_algorithm"] == {"type": "random", "seed": 42}
    assert [r.getMessage() for r in caplog.records] == [
        "hpo.sampler=tpe maps to AzureML bayesian sampling, which cannot take early termination (hpo.pruner=median); "
        "using random sampling with median early termination instead (set hpo.sampler=random to silence this; for "
        "bayesian sampling, set hpo.pruner=none)"]
    with caplog.at_level(logging.WARNING, logger="resume_ner.azureml.sweep"):
        caplog.clear()
        assert _sweep(search_space=space, pruner="none")._to_dict()["sampling_algorithm"] == "bayesian"
    assert caplog.records == []


@pytest.mark.parametrize("hpo, problem", [
    ({"sampler": "cmaes"}, "hpo.sampler=cmaes has no AzureML sweep equivalent"),
    ({"sampler": "grid", "pruner": "none"}, "hpo.sampler=grid needs every hpo.search_space entry to be {type: choice"),
    ({"sampler": "random", "search_space": {"model.backbone": {"type": "choice", "values": ["a", "b"]}}},
     "model.backbone is in hpo.search_space, but an AzureML sweep tunes one backbone"),
])
def test_settings_without_an_azureml_equivalent_are_refused(hpo, problem):
    with pytest.raises(ConfigError, match="cannot run as an AzureML sweep of bert-base-cased") as error:
        _sweep(**hpo)
    assert problem in str(error.value)

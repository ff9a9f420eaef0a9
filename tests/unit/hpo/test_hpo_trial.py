"""A trial's config obeys the HPO budget; the pruning callback reports each epoch and stops when told."""

from __future__ import annotations

import optuna
import pytest

from resume_ner.config import config_from_dict
from resume_ner.hpo.trial import PruningCallback, trial_config, training_subset
from resume_ner.training.callbacks import TrainerState


def test_trial_config_applies_params_and_budget_caps():
    config = config_from_dict({
        "model": {"max_length": 256, "stride": 64},
        "training": {"epochs": 10, "metric": "f1_micro"},
        "hpo": {"max_epochs": 3, "max_length": 64, "metric": "span_f1_micro"},
    })
    trial = trial_config(config, {"training.learning_rate": 2e-4, "training.epochs": 5})
    assert trial.training.learning_rate == 2e-4
    assert trial.training.epochs == 3  # capped by hpo.max_epochs
    assert trial.model.max_length == 64 and trial.model.stride == 16  # stride clamped to fit the window
    assert trial.training.metric == "span_f1_micro"  # trials optimise the study's metric
    assert trial_config(config, {"training.epochs": 2}).training.epochs == 2


def test_training_subset_is_seeded_and_keeps_order():
    docs = list(range(20))
    subset = training_subset(docs, 0.25, seed=1)
    assert len(subset) == 5 and subset == sorted(subset)
    assert training_subset(docs, 0.25, seed=1) == subset
    assert training_subset(docs, 1.0, seed=1) == docs
    assert training_subset(docs[:2], 0.1, seed=1) != []


def test_pruning_callback_reports_every_epoch_and_prunes_a_bad_trial():
    study = optuna.create_study(direction="maximize",
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0))
    good = study.ask()
    callback = PruningCallback(good, "f1_micro", "maximize")
    for epoch, value in ((1, 0.5), (2, 0.6)):
        callback.on_evaluate(TrainerState(epoch=epoch), {"f1_micro": value, "loss": 1.0}, value)
    study.tell(good, 0.6)
    assert study.trials[0].intermediate_values == {1: 0.5, 2: 0.6}

    bad = study.ask()
    callback = PruningCallback(bad, "f1_micro", "maximize")
    with pytest.raises(optuna.TrialPruned, match="pruned after epoch 1"):
        callback.on_evaluate(TrainerState(epoch=1), {"f1_micro": 0.01, "loss": 1.0}, 0.01)
    assert callback.pruned_epoch == 1
    assert bad.user_attrs == {"last_value": 0.01, "pruned_epoch": 1}


def test_pruning_on_validation_loss_in_a_maximising_study_ranks_trials_by_loss_not_f1():
    study = optuna.create_study(direction="maximize",
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0))
    learning = study.ask()
    PruningCallback(learning, "loss", "maximize").on_evaluate(TrainerState(epoch=1), {"f1_micro": 0, "loss": 0.7}, 0)
    study.tell(learning, 0.4)
    assert study.trials[0].intermediate_values == {1: -0.7}  # negated: higher is better, as for the study

    stuck = study.ask()  # the same F1 after one epoch (0: nothing predicted yet), a higher loss
    callback = PruningCallback(stuck, "loss", "maximize")
    with pytest.raises(optuna.TrialPruned, match="validation loss 0.9000 \\(study metric 0.0000\\)"):
        callback.on_evaluate(TrainerState(epoch=1), {"f1_micro": 0.0, "loss": 0.9}, 0.0)
    assert stuck.user_attrs["last_value"] == 0.0  # the study metric, as the report shows it

    better = study.ask()  # a lower loss than the median: kept, whatever its F1
    PruningCallback(better, "loss", "maximize").on_evaluate(TrainerState(epoch=1), {"f1_micro": 0, "loss": 0.5}, 0)
    assert not better.should_prune()


def test_pruning_on_loss_in_a_minimising_study_reports_the_loss_itself():
    study = optuna.create_study(direction="minimize")
    trial = study.ask()
    PruningCallback(trial, "loss", "minimize").on_evaluate(TrainerState(epoch=1), {"loss": 0.7}, 0.7)
    assert study.trials[0].intermediate_values == {1: 0.7}

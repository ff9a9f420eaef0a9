"""The best trial of a study: ``select_best(storage, study_name) -> BestTrial``.

Only COMPLETE trials count; among equal values the earlier trial (lower number) wins.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, cast

from resume_ner.errors import ConfigError
from resume_ner.hpo.study import (
    DIRECTION_ATTR,
    FINGERPRINT_ATTR,
    METRIC_ATTR,
    PARENT_RUN_ATTR,
    load_existing_study,
)

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage
    from optuna.trial import FrozenTrial

log = logging.getLogger(__name__)


@dataclass
class BestTrial:
    """The winning trial of a study and where its model and runs are."""

    study_name: str
    number: int
    value: float
    params: dict[str, Any]
    metric: str
    direction: str
    mlflow_run_id: str | None
    parent_run_id: str | None
    checkpoint: str | None
    data_fingerprint: str | None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of the fields."""
        return asdict(self)


def best_frozen_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best COMPLETE ``FrozenTrial`` of ``study`` (ties: the lowest number), or None when none completed."""
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        return None
    sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    return min(complete, key=lambda trial: (sign * cast(float, trial.value), trial.number))  # COMPLETE: a value


def best_trial_of(study: optuna.Study) -> BestTrial:
    """``BestTrial`` of a loaded study; ``ConfigError`` with the count of each trial state when none completed."""
    best = best_frozen_trial(study)
    if best is None:
        counts = Counter(trial.state.name for trial in study.get_trials(deepcopy=False))
        states = ", ".join(f"{count} {state}" for state, count in sorted(counts.items())) or "no trials"
        raise ConfigError(
            f"hpo study {study.study_name!r} has no COMPLETE trial ({states}); run more trials "
            "with `resume-ner hpo run` or `hpo worker`, and see `hpo report` for the errors"
        )
    attrs = study.user_attrs
    return BestTrial(
        study_name=study.study_name,
        number=best.number,
        value=float(cast(float, best.value)),
        params=dict(best.params),
        metric=attrs.get(METRIC_ATTR, "objective"),
        direction=attrs.get(DIRECTION_ATTR, study.direction.name.lower()),
        mlflow_run_id=best.user_attrs.get("mlflow_run_id"),
        parent_run_id=attrs.get(PARENT_RUN_ATTR),
        checkpoint=best.user_attrs.get("checkpoint"),
        data_fingerprint=attrs.get(FINGERPRINT_ATTR),
    )


def select_best(storage: BaseStorage | str, study_name: str) -> BestTrial:
    """The best trial of study ``study_name`` in ``storage`` (an Optuna storage, or a path or URL)."""
    best = best_trial_of(load_existing_study(storage, study_name))
    log.info("hpo study %r: best trial %d, %s %.4f", study_name, best.number, best.metric, best.value)
    return best

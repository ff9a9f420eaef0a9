"""The ``select_best`` step of the AzureML pipeline: the best trial's settings -> the final training's config.

AzureML's sweep picks the best trial itself (its objective) and a sweep node's outputs are that trial's, so the
step gets the best trial's training output directory. It reads the resolved ``config.yaml`` the trainer saved
there, takes the searched settings (``params``, dotted paths) from it, merges them into the pipeline's base
config with ``build_final_training_config`` (the trial's budget caps, such as ``hpo.max_epochs``, stay behind),
and writes the result as a config directory (one YAML file per section) for ``--config-dir``, with
``best_trial.json``: the params and, from the trial's ``train_result.json``, its metric, value and MLflow run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from resume_ner.config import ResumeNerConfig, config_from_dict, save_sections
from resume_ner.errors import ConfigError
from resume_ner.io import write_json_atomic
from resume_ner.training.trainer import RESULT_FILE
from resume_ner.workflows.final import build_final_training_config

TRIAL_CONFIG_FILE = "config.yaml"  # the resolved config the trainer saves in its output directory
BEST_TRIAL_FILE = "best_trial.json"


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc}); expected the training output directory "
                          f"of the sweep's best trial, which holds {TRIAL_CONFIG_FILE}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None


def select_best_trial_config(
    trial_dir: str | Path, params: Sequence[str], base: ResumeNerConfig, out_dir: str | Path
) -> dict[str, Any]:
    """Write the final training's config directory ``out_dir`` from the best trial's output ``trial_dir``
    (see the module docstring); returns the ``best_trial.json`` dict."""
    trial_dir = Path(trial_dir)
    trial = config_from_dict(_read_yaml(trial_dir / TRIAL_CONFIG_FILE), origin=str(trial_dir / TRIAL_CONFIG_FILE))
    settings = trial.to_dict()
    values: dict[str, Any] = {}
    for path in params:
        section, _, name = path.partition(".")
        if name not in settings.get(section, {}):
            raise ConfigError(f"--param {path}: not a setting of {trial_dir / TRIAL_CONFIG_FILE}; pass the dotted "
                              "paths of hpo.search_space, e.g. training.learning_rate")
        values[path] = settings[section][name]
    final = build_final_training_config(values, base)
    best: dict[str, Any] = {"params": values, "trial_dir": str(trial_dir)}
    result_path = trial_dir / RESULT_FILE
    if result_path.is_file():
        result = json.loads(result_path.read_text(encoding="utf-8"))
        best.update(metric=result.get("metric"), value=result.get("best_metric"), mlflow_run_id=result.get("run_id"))
    out_dir = Path(out_dir)
    save_sections(final, out_dir)
    write_json_atomic(out_dir / BEST_TRIAL_FILE, best)
    return best

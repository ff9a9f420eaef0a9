"""``resume-ner hpo best`` and ``hpo report`` on a stored study; ``hpo`` help stays light."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import optuna
import pytest

from resume_ner.cli.main import main
from resume_ner.config import HpoConfig, ResumeNerConfig
from resume_ner.hpo.search_space import parse_search_space
from resume_ner.hpo.study import create_or_load_study, resolve_storage


@pytest.fixture
def stored_study(tmp_path):
    """Study 's' in a sqlite file: trials 0-2 COMPLETE (0.3, 0.8, 0.5), 3 PRUNED after epoch 1, 4 FAIL."""
    hpo = HpoConfig(study_name="s", sampler="random",
                    search_space={"training.learning_rate": {"type": "log_uniform", "min": 1e-5, "max": 1e-3},
                                  "model.dropout": {"type": "uniform", "min": 0.0, "max": 0.3}})
    db = tmp_path / "s.db"
    space = parse_search_space(hpo.search_space, ResumeNerConfig())
    study = create_or_load_study(hpo, resolve_storage(str(db), tmp_path, "s", hpo), space, data_fingerprint="fp")
    outcomes = iter([0.3, 0.8, 0.5, "prune", "fail"])

    def objective(trial):
        space.suggest(trial)
        outcome = next(outcomes)
        trial.set_user_attr("checkpoint", f"/runs/trials/trial-{trial.number:04d}/model")
        trial.report(0.1, 1)
        if outcome == "prune":
            trial.set_user_attr("pruned_epoch", 1)
            trial.set_user_attr("last_value", 0.1)
            raise optuna.TrialPruned()
        if outcome == "fail":
            trial.set_user_attr("error", "RuntimeError: out of memory")
            raise RuntimeError("out of memory")
        trial.report(outcome, 2)
        return outcome

    study.optimize(objective, n_trials=5, catch=(RuntimeError,))
    return db


def test_hpo_best_prints_the_winner_and_json(stored_study, capsys):
    assert main(["hpo", "best", "--study", "s", "--storage", str(stored_study)]) == 0
    out = capsys.readouterr().out
    assert "best trial: 1 of study 's': f1_micro 0.8000 (maximize)" in out
    assert "/runs/trials/trial-0001/model" in out

    assert main(["hpo", "best", "--study", "s", "--storage", str(stored_study), "--json"]) == 0
    best = json.loads(capsys.readouterr().out)
    assert best["number"] == 1 and best["value"] == 0.8 and best["data_fingerprint"] == "fp"
    assert set(best["params"]) == {"training.learning_rate", "model.dropout"}


def test_hpo_report_prints_the_table_and_writes_csv_and_plots(stored_study, tmp_path, capsys):
    out_dir = tmp_path / "report"
    assert main(["hpo", "report", "--study", "s", "--storage", str(stored_study), "--out", str(out_dir),
                 "--no-tracking"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["#", "state", "value", "duration"]
    rows = {line.split()[0]: line for line in lines[1:6]}
    assert "COMPLETE" in rows["*1"] and "0.8" in rows["*1"]  # the best trial is starred
    assert "PRUNED@1" in rows["3"] and "(0.1)" in rows["3"]
    assert "FAIL" in rows["4"] and "RuntimeError: out of memory" in rows["4"]
    assert "training.learning_rate=" in rows["0"] and "model.dropout=" in rows["0"]
    files = {p.name for p in out_dir.iterdir()}
    assert files == {"trials.csv", "optimization_history.png", "param_importances.png", "intermediate_values.png"}
    assert all((out_dir / name).read_bytes().startswith(b"\x89PNG") for name in files if name.endswith(".png"))
    with open(out_dir / "trials.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [row["state"] for row in table] == ["COMPLETE", "COMPLETE", "COMPLETE", "PRUNED", "FAIL"]
    assert table[3]["pruned_epoch"] == "1" and table[4]["error"] == "RuntimeError: out of memory"
    assert table[1]["value"] == "0.8" and table[1]["params.model.dropout"] != ""


def test_hpo_commands_refuse_a_missing_study_or_storage(stored_study, tmp_path, capsys):
    assert main(["hpo", "best", "--study", "nope", "--storage", str(stored_study)]) == 1
    assert "no hpo study 'nope' in this storage; it has: s" in capsys.readouterr().err
    assert main(["hpo", "report", "--study", "s", "--storage", str(tmp_path / "missing.db"), "--out", "r"]) == 1
    assert "no such file" in capsys.readouterr().err
    assert not (tmp_path / "missing.db").exists()


def test_hpo_help_does_not_import_heavy_libraries():
    code = (
        "import sys\n"
        "from resume_ner.cli.main import main\n"
        "for command in ('run', 'worker', 'best', 'report'):\n"
        "    try:\n        main(['hpo', command, '--help'])\n    except SystemExit:\n        pass\n"
        "print('HEAVY', [m for m in ('torch', 'transformers', 'mlflow', 'optuna', 'matplotlib') if m in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in result.stdout, result.stdout + result.stderr
    assert "--n-trials" in result.stdout and "--json" in result.stdout

"""HPO efficiency: the same sweep with the median pruner and with no pruner.

Both sweeps run ``resume-ner hpo run`` (one process, one worker) with the same sampler seed, trials, search
space and data: a subset of the training resumes and of the validation resumes (the pruner sees the
validation ``hpo.pruning_metric`` of the shipped config after every epoch; the study optimises
``hpo.metric``). Reported per sweep: wall time, finished / pruned / failed trials and the best validation
value, with each trial's history; and the best trial of the pruned sweep as ``best_trial.json``
(``{"params": ...}``) for ``quality.py --best-json``.

    python bench/hpo_pruning.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

STUDY = "bench-pruning"
BUDGET = {"full": {"train": 40, "validation": 20, "n_trials": 12,
                   "settings": ["hpo.max_epochs=3", "hpo.max_length=128", "hpo.n_startup_trials=2"]},
          "quick": {"train": 8, "validation": 4, "n_trials": 3,
                    "settings": ["hpo.max_epochs=2", "hpo.max_length=128", "hpo.n_startup_trials=1"]}}


def _trials(storage: str) -> list[dict[str, Any]]:
    import optuna

    study = optuna.load_study(study_name=STUDY, storage=storage)
    return [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
             "duration_s": t.duration.total_seconds() if t.duration else None,
             "epochs": len(t.intermediate_values)} for t in study.get_trials(deepcopy=False)]


def _sweep(pruner: str, splits: Path, work: Path, settings: list[str], threads: int) -> dict[str, Any]:
    out = work / f"sweep-{pruner}"
    storage = f"sqlite:///{out / 'optuna.db'}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "optuna.db").unlink(missing_ok=True)
    cmd = [*common.python_cmd("-m", "resume_ner.cli.main", "hpo", "run"), "--data", str(splits), "--output-dir",
           str(out), "--study", STUDY, "--storage", storage, "--no-tracking", "-q",
           "--set", f"hpo.pruner={pruner}", "--set", "hpo.seed=42", "--set", f"hpo.num_threads={threads}"]
    for setting in settings:
        cmd += ["--set", setting]
    measured = common.run_measured(cmd, work / f"sweep-{pruner}.log")
    history = _trials(storage)
    complete = [t for t in history if t["state"] == "COMPLETE"]
    best = max(complete, key=lambda t: t["value"])
    return {"command": " ".join(cmd[1:]), "wall_s": measured.wall_s, "n_complete": len(complete),
            "n_pruned": sum(t["state"] == "PRUNED" for t in history),
            "n_failed": sum(t["state"] == "FAIL" for t in history), "best_value": best["value"],
            "best_params": best["params"], "history": history}


def main(argv: list[str] | None = None) -> int:
    """Run both sweeps; write ``bench/results/hpo_pruning[-quick].json`` and the pruned sweep's best trial."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small budgets, same code paths")
    parser.add_argument("--work", type=Path, default=Path("runs/bench/hpo_pruning"), help="scratch directory")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    args = parser.parse_args(argv)

    from resume_ner.config import ResumeNerConfig

    hpo = ResumeNerConfig().hpo
    mode = "quick" if args.quick else "full"
    budget, threads = BUDGET[mode], args.threads or os.cpu_count() or 1
    work = args.work.resolve() / mode
    splits = work / "splits"
    counts = common.write_splits(common.data_dir(), splits, budget["train"], budget["validation"])
    sweeps = {}
    for pruner in ("median", "none"):
        sweeps[pruner] = _sweep(pruner, splits, work, [f"hpo.n_trials={budget['n_trials']}", *budget["settings"]],
                                threads)
        print(f"hpo_pruning: {pruner}: {sweeps[pruner]['wall_s']:.0f} s, {sweeps[pruner]['n_pruned']} pruned, "
              f"best {sweeps[pruner]['best_value']:.4f}", flush=True)
    (work / "best_trial.json").write_text(json.dumps({"params": sweeps["median"]["best_params"]}, indent=2) + "\n",
                                          encoding="utf-8")
    payload = {"settings": {"train_docs": counts["train"], "validation_docs": counts["validation"],
                            "overrides": budget["settings"], "seed": 42, "threads": threads,
                            "n_trials": budget["n_trials"], "metric": hpo.metric, "pruning_metric": hpo.pruning_metric,
                            "n_warmup_epochs": hpo.n_warmup_epochs},
               "sweeps": sweeps, "wall_reduction": 1 - sweeps["median"]["wall_s"] / sweeps["none"]["wall_s"],
               "best_delta": sweeps["median"]["best_value"] - sweeps["none"]["best_value"],
               "best_trial_json": str(work / "best_trial.json")}
    path = common.write_result("hpo_pruning", payload, args.quick)
    print(f"hpo_pruning: wall reduction {payload['wall_reduction']:.0%}, best delta {payload['best_delta']:+.4f}; "
          f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

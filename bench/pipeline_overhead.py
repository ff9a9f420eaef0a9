"""Pipeline overhead: ``resume-ner pipeline run --local`` against the same work called directly in Python.

Both sides do the same work on the same split files, with the same settings, one HPO worker each (the
pipeline's ``--parallelism 1``), each in a fresh process with its own MLflow sqlite store and Optuna storage:

* pipeline: kfp.local runs every task (load_data, the HPO worker, select_best, final_train, register_lineage
  and the pipeline run's start and end) in its own subprocess;
* direct: ``run_local_hpo_sweep`` then ``run_final_training_workflow`` (which also registers the model).

The ratio is pipeline wall time / direct wall time.

    python bench/pipeline_overhead.py [--quick]
    python bench/pipeline_overhead.py direct --data DIR --out DIR --set KEY=VALUE ...   # the direct side
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

# The work both sides do: a small sweep and the final training (quick: smaller).
WORK = {"full": {"train_limit": 60, "settings": ["hpo.n_trials=4", "hpo.max_epochs=1", "training.epochs=2"]},
        "quick": {"train_limit": 8, "settings": ["hpo.n_trials=2", "hpo.max_epochs=1", "training.epochs=1"]}}


def direct(args: argparse.Namespace) -> int:
    """The direct side: the sweep and the final training in this process."""
    from resume_ner.config import load
    from resume_ner.hpo.sweep import run_local_hpo_sweep
    from resume_ner.workflows.final import run_final_training_workflow

    config = load(None, args.overrides)
    storage = f"sqlite:///{(args.out / 'optuna.db').resolve()}"
    run_local_hpo_sweep(config, "overhead", data_path=args.data, output_dir=args.out / "hpo", storage=storage)
    outcome = run_final_training_workflow(config, args.out / "final", data_path=args.data, study_name="overhead",
                                          storage=storage, quiet=True)
    print(f"direct: registered {outcome}")
    return 0


def benchmark(args: argparse.Namespace) -> int:
    """Both sides, pipeline first; write ``bench/results/pipeline_overhead[-quick].json``."""
    mode = "quick" if args.quick else "full"
    work = args.work.resolve() / mode
    splits = work / "splits"
    common.write_splits(common.data_dir(), splits, WORK[mode]["train_limit"])
    settings = [*WORK[mode]["settings"], "training.num_threads=0"]
    sets = [arg for setting in settings for arg in ("--set", setting)]
    walls = {}
    for side in ("pipeline", "direct"):
        out = work / side
        env = {"MLFLOW_TRACKING_URI": f"sqlite:///{out / 'mlflow.db'}"}
        out.mkdir(parents=True, exist_ok=True)
        if side == "pipeline":
            cmd = [*common.python_cmd("-m", "resume_ner.cli.main", "pipeline", "run", "--local"), "--data",
                   str(splits), "--output-dir", str(out), "--parallelism", "1", "-q", *sets]
        else:
            cmd = common.python_cmd("bench/pipeline_overhead.py", "direct", "--data", str(splits), "--out", str(out),
                                    *sets)
        walls[side] = common.run_measured(cmd, work / f"{side}.log", env=env).wall_s
        print(f"pipeline_overhead: {side}: {walls[side]:.1f} s", flush=True)
    ratio = walls["pipeline"] / walls["direct"]
    payload = {"settings": {"train_docs": WORK[mode]["train_limit"], "overrides": settings, "parallelism": 1},
               "pipeline_wall_s": walls["pipeline"], "direct_wall_s": walls["direct"], "ratio": ratio}
    path = common.write_result("pipeline_overhead", payload, args.quick)
    print(f"pipeline_overhead: ratio {ratio:.2f}x; wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``direct`` (one side) or the benchmark."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    if argv[:1] == ["direct"]:
        parser.add_argument("command")
        parser.add_argument("--data", type=Path, required=True)
        parser.add_argument("--out", type=Path, required=True)
        parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
        return direct(parser.parse_args(argv))
    parser.add_argument("--quick", action="store_true", help="small budgets, same code paths")
    parser.add_argument("--work", type=Path, default=Path("runs/bench/pipeline_overhead"), help="scratch directory")
    return benchmark(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())

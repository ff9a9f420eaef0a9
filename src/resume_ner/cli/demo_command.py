"""``resume-ner demo`` (what ``make run`` runs): the whole local workflow on synthetic resumes.

Synthesise resumes -> HPO sweep (pruning on) -> final training with the best trial -> MLflow registration
-> lineage -> entities extracted from a new resume -> test metrics per entity type.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from resume_ner.cli.model_commands import report_tracking_loss

SHOWN_ENTITIES = 25

# Budget of the demo sweep and final training (packaged MiniLM, 2 CPU cores, under 10 minutes);
# --set overrides win over these.
DEMO_SETTINGS = [
    "hpo.study_name=demo",
    "hpo.n_trials=4",
    "hpo.train_fraction=0.4",
    "hpo.max_epochs=2",
    "hpo.max_length=128",
    "hpo.n_startup_trials=1",
    "hpo.n_warmup_epochs=1",
    "training.epochs=3",
]


def cmd_demo(args: argparse.Namespace) -> int:
    """Synthesise resumes, sweep, train the final model, register it, show its lineage and predictions."""
    from resume_ner.data.synth import generate_resumes, write_synthetic_resumes
    from resume_ner.hpo.report import trials_table
    from resume_ner.hpo.study import load_existing_study, resolve_storage
    from resume_ner.hpo.sweep import run_local_hpo_sweep
    from resume_ner.inference import Predictor
    from resume_ner.training.metrics import format_metrics_table
    from resume_ner.workflows.final import run_final_training_workflow

    output_dir = Path(args.output_dir)
    config = _with_demo_settings(args, output_dir)
    data_file = write_synthetic_resumes(output_dir / "data", args.n, args.seed)
    print(f"1. synthesised {args.n} resumes -> {data_file}")

    run_local_hpo_sweep(config, data_path=data_file, output_dir=output_dir)
    storage = resolve_storage(config.hpo.storage, output_dir, config.hpo.study_name, config.hpo, create=False)
    print(f"\n2. HPO sweep '{config.hpo.study_name}' ({config.hpo.storage}):")
    print(trials_table(load_existing_study(storage, config.hpo.study_name)))

    outcome = run_final_training_workflow(
        config, output_dir / "final", data_path=data_file, study_name=config.hpo.study_name,
        storage=config.hpo.storage, register=config.tracking.enabled, quiet=args.quiet, overwrite=True,
    )
    result = outcome.train_result
    print(f"\n3. final model: {result.model_dir} (best trial #{outcome.best_trial['number']}, "
          f"{result.global_step} steps, {result.tokens_per_second:.0f} tokens/s)")
    if outcome.model_uri:
        print(f"\n4. registered {outcome.model_uri} (aliases: {', '.join(outcome.lineage.aliases)}); "
              f"{outcome.promotion_reason}")
        print(f"\n5. lineage ({outcome.lineage_path}):")
        print(outcome.lineage.render())
    sample = generate_resumes(1, args.seed + 10_000)[0]
    entities = Predictor(result.model_dir).predict([sample.text])[0]
    print(f"\n6. entities extracted from a new synthetic resume ({len(entities)}; `resume-ner predict` gives all):")
    for entity in entities[:SHOWN_ENTITIES]:
        print(f"  {entity.label:<18} {entity.start:>5}-{entity.end:<5} {entity.score:.2f}  {entity.text!r}")
    if len(entities) > SHOWN_ENTITIES:
        print(f"  ... and {len(entities) - SHOWN_ENTITIES} more")
    print(f"\n7. test metrics ({outcome.test_metrics['documents']} whole documents):")
    print(format_metrics_table(outcome.test_metrics))
    return report_tracking_loss(outcome.tracking_lost, output_dir)


def _with_demo_settings(args: argparse.Namespace, output_dir: Path) -> Any:
    """The user's config with the demo budget applied under the user's own ``--set`` overrides."""
    from resume_ner.config import load

    storage = f"hpo.storage={output_dir.resolve() / 'hpo' / 'demo.db'}"
    overrides = DEMO_SETTINGS + [storage] + list(args.overrides)
    if args.no_tracking:
        overrides.append("tracking.enabled=false")
    return load(args.config_dir, overrides)


def register(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add ``demo``."""
    demo = subparsers.add_parser("demo", parents=parents, help="the whole local workflow on synthetic resumes",
                                 description=cmd_demo.__doc__)
    demo.add_argument("--output-dir", default="runs/demo", help="where data, study, model and lineage go")
    demo.add_argument("--n", type=int, default=120, help="synthetic resumes to generate (default: 120)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the synthetic resumes (default: 0)")
    demo.add_argument("--no-tracking", action="store_true", help="no MLflow (then nothing is registered)")
    demo.set_defaults(func=cmd_demo)

"""Hyperparameter search with Optuna: search spaces, studies, trials, sweeps and workers, best-trial selection.

Import the modules themselves (``resume_ner.hpo.sweep``, ``.select``, ...): this package imports nothing, so
the CLI stays fast.
"""

"""Experiment tracking with MLflow: ``setup_mlflow`` starts a run, ``TrackingRun`` logs to it."""

from resume_ner.tracking.mlflow import RetryPolicy, TrackingRun, resolve_tracking_uri, setup_mlflow, standard_tags

__all__ = ["RetryPolicy", "TrackingRun", "resolve_tracking_uri", "setup_mlflow", "standard_tags"]

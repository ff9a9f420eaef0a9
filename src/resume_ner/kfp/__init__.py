"""Kubeflow Pipelines: components, the training pipeline, local runs and the KFP server client."""

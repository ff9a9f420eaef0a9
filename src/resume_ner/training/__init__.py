"""Training: model creation, the training loop, checkpoints, callbacks, evaluation and metrics."""

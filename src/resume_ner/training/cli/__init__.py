"""Entry points run by containers and remote jobs (``python -m resume_ner.training.cli.train``)."""

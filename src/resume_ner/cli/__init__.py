"""The ``resume-ner`` command line; each subcommand imports its heavy modules lazily."""

"""End-to-end workflows shared by the CLI, the KFP components and remote jobs."""

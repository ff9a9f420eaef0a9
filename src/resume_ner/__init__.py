"""resume-ner: train, tune, track and ship named-entity recognition models for resumes."""

__version__ = "0.1.0"

__all__ = ["__version__"]

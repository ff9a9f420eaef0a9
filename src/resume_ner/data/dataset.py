"""Annotated resumes on disk -> validated documents -> train/validation/test splits.

A path is either one file (split here by the configured fractions and seed), a directory holding just one
such file (a data asset mounted by a remote job), or a directory of given splits: ``train.*`` (required),
``validation.*`` / ``dev.*`` / ``valid.*`` and ``test.*``; a missing validation or test split is cut from
train. Every problem of every file is reported in one
``DataValidationError``, including a text that appears in two splits.
"""

from __future__ import annotations

import logging
from pathlib import Path

from resume_ner.config import DataConfig, ResumeNerConfig
from resume_ner.data.document import Document, SplitDataset
from resume_ner.data.readers import read_documents
from resume_ner.data.splits import fingerprint_documents, split_documents
from resume_ner.data.validation import document_problem, validate_documents
from resume_ner.errors import ConfigError, DataValidationError, Problem

logger = logging.getLogger(__name__)

_SPLIT_STEMS: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "validation": ("validation", "dev", "valid"),
    "test": ("test",),
}


def load_documents(path: str | Path, data_config: DataConfig) -> list[Document]:
    """Read and validate one file; raise ``DataValidationError`` listing every parse and validation problem."""
    documents, problems = _read_valid(Path(path), data_config)
    if problems:
        raise DataValidationError(problems, summary=f"{path}: invalid annotated resumes")
    return documents


def load_dataset(path: str | Path, data_config: DataConfig) -> SplitDataset:
    """The train/validation/test documents of a file (split by the config) or of a directory of splits."""
    path = Path(path)
    if path.is_dir() and (single := _single_data_file(path)) is not None:
        logger.info("%s has one data file and no train/validation/test files: splitting %s", path, single.name)
        path = single
    if not path.is_dir():
        dataset = split_documents(
            load_documents(path, data_config),
            data_config.validation_fraction,
            data_config.test_fraction,
            data_config.split_seed,
        )
        logger.info(
            "%s: %d train, %d validation, %d test document(s)",
            path,
            len(dataset.train),
            len(dataset.validation),
            len(dataset.test),
        )
        return dataset
    files = _split_files(path)
    problems: list[Problem] = []
    given: dict[str, list[Document]] = {}
    for split, file in files.items():
        given[split], file_problems = _read_valid(file, data_config)
        problems += file_problems
    if data_config.on_split_leak == "drop-from-train":
        held_out = {d.text for split in ("validation", "test") for d in given.get(split, [])}
        leaked = [d for d in given["train"] if d.text in held_out]
        if leaked:
            given["train"] = [d for d in given["train"] if d.text not in held_out]
            logger.warning(
                "%s: dropped %d training document(s) whose text is also in validation/test: %s",
                path,
                len(leaked),
                ", ".join(f"{d.id} ({d.source})" for d in leaked[:10]),
            )
    missing_validation = "validation" not in given
    missing_test = "test" not in given
    if missing_validation or missing_test:
        cut = split_documents(
            given["train"],
            data_config.validation_fraction if missing_validation else 0.0,
            data_config.test_fraction if missing_test else 0.0,
            data_config.split_seed,
        )
        train = cut.train  # a given split got fraction 0 above, so nothing else was cut from train
        validation = cut.validation if missing_validation else given["validation"]
        test = cut.test if missing_test else given["test"]
    else:  # all given: as they are, in file order, so the fingerprint does not depend on data.split_seed
        train, validation, test = given["train"], given["validation"], given["test"]
    problems += _leaks({"train": train, "validation": validation, "test": test})
    if problems:
        raise DataValidationError(problems, summary=f"{path}: invalid annotated resumes")
    logger.info(
        "%s: %d train, %d validation, %d test document(s) (given: %s)",
        path,
        len(train),
        len(validation),
        len(test),
        ", ".join(sorted(files)),
    )
    return SplitDataset(train, validation, test, fingerprint_documents(train + validation + test))


def dataset_files(path: str | Path) -> dict[str, Path]:
    """The files ``load_dataset`` reads for ``path``: ``{"all": path}`` for a file, or a directory's one data file,
    else the directory's split files by split name (``DataValidationError`` when it is no dataset directory)."""
    path = Path(path)
    if not path.is_dir():
        return {"all": path}
    single = _single_data_file(path)
    return {"all": single} if single is not None else _split_files(path)


def _single_data_file(directory: Path) -> Path | None:
    """The only file of ``directory`` when it has exactly one visible file and none is named like a split."""
    files = [f for f in directory.iterdir() if f.is_file() and not f.name.startswith(".")]
    stems = {stem for stems in _SPLIT_STEMS.values() for stem in stems}
    if len(files) == 1 and files[0].name.split(".", 1)[0].lower() not in stems:
        return files[0]
    return None


def _split_files(directory: Path) -> dict[str, Path]:
    """The file of each given split in ``directory`` (``train`` required, no split given twice)."""
    found: dict[str, list[Path]] = {}
    for file in sorted(directory.iterdir()):
        stem = file.name.split(".", 1)[0].lower()
        for split, stems in _SPLIT_STEMS.items():
            if file.is_file() and stem in stems and not file.name.startswith("."):
                found.setdefault(split, []).append(file)
    problems = [
        Problem(str(directory), None, None, f"several {split} files: {', '.join(f.name for f in files)}; keep one")
        for split, files in found.items()
        if len(files) > 1
    ]
    if "train" not in found:
        problems.append(
            Problem(
                str(directory),
                None,
                None,
                "no train.* file; a dataset directory needs train.* and may have "
                "validation.* (or dev.*, valid.*) and test.*",
            )
        )
    if problems:
        raise DataValidationError(problems, summary=f"{directory}: not a dataset directory")
    return {split: files[0] for split, files in found.items()}


def _read_valid(path: Path, data_config: DataConfig) -> tuple[list[Document], list[Problem]]:
    """Validated documents of one file and every problem found while reading and validating it."""
    result = read_documents(path, data_config.format)
    report = validate_documents(
        result.documents,
        label_map=data_config.label_map,
        on_overlap=data_config.on_overlap,
        on_duplicate=data_config.on_duplicate,
    )
    if report.warnings:
        logger.warning("%s: %d warning(s), the first: %s", path, len(report.warnings), report.warnings[0])
    if report.trimmed_spans or report.resolved_overlaps:
        logger.info(
            "%s: trimmed whitespace off %d span(s), resolved %d overlap(s)",
            path,
            report.trimmed_spans,
            report.resolved_overlaps,
        )
    return report.documents, result.problems + report.problems


def _leaks(splits: dict[str, list[Document]]) -> list[Problem]:
    """One problem per document whose text is already in another split."""
    seen: dict[str, tuple[str, Document]] = {}
    problems = []
    for split, documents in splits.items():
        for document in documents:
            first_split, first = seen.setdefault(document.text, (split, document))
            if first_split != split:
                message = (
                    f"the same text is in {first_split} (document {first.id!r} at {first.source}) and in "
                    f"{split}: remove one copy so evaluation does not see training data"
                )
                problems.append(document_problem(document, message))
    return problems


def load_training_data(config: ResumeNerConfig, data_path: str | Path | None) -> tuple[Path, SplitDataset]:
    """The data path (``data_path``, else ``data.path``) and its train/validation/test documents."""
    path = data_path if data_path is not None else config.data.path
    if path is None:
        raise ConfigError(
            "no training data: pass --data PATH (or set data.path); "
            "to try the system, run `resume-ner data synth --n 300 --output-dir data/synth` first"
        )
    dataset = load_dataset(Path(path), config.data)
    logger.info(
        "dataset %s: %d train / %d validation / %d test documents (fingerprint %s)",
        path,
        len(dataset.train),
        len(dataset.validation),
        len(dataset.test),
        dataset.fingerprint[:12],
    )
    return Path(path), dataset

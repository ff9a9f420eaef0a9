"""What every benchmark shares: the corpus splits, span scoring, machine facts, measured subprocesses, results.

Every system is trained and scored on the same files: ``write_splits`` writes the project's split of the
corpus (``train.jsonl`` minus the resume that is also in ``test.jsonl``, a seeded validation split of the
rest, and ``test.jsonl``; labels canonical, span edges trimmed by validation) as Doccano JSONL, and every
system's test predictions are scored by ``score_predictions`` with the project's exact character-span match.

Predictions files (every system writes the same form): JSON lines, one per test document in test order,
``{"id": DOC_ID, "entities": [[start, end, LABEL], ...]}``.

Model FLOPs (``flops_per_token``, for the model-FLOPs utilisation in the report): a BERT-style encoder of ``L``
layers, hidden size ``h``, intermediate size ``i`` and a token-classification head of ``C`` labels multiplies
``N = L * (4 * h^2 + 2 * h * i) + h * C`` weights per token (Q, K, V and attention output, the two feed-forward
layers, the head; embedding lookups, biases, LayerNorm and softmax are left out). One forward pass over a window
of ``s`` tokens costs ``2 * N + 4 * L * s * h`` FLOPs per token (the weights, then the attention scores QK^T and
the weighted values AV); training costs three times that (the backward pass is twice the forward). MiniLM-L6
(L 6, h 384, i 1536) with 25 labels at s = 256: 23.6 MFLOP per predicted token, 70.8 MFLOP per trained token.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
DATA_ENV = "RESUME_NER_BENCH_DATA"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "resume-cvs"
SPLIT_FILES = ("train", "validation", "test")


def data_dir() -> Path:
    """The benchmark corpus: ``$RESUME_NER_BENCH_DATA``, else ``../shared/data/resume-cvs``."""
    path = Path(os.environ.get(DATA_ENV) or DEFAULT_DATA)
    if not (path / "train.jsonl").is_file() or not (path / "test.jsonl").is_file():
        sys.exit(f"bench: {path} has no train.jsonl and test.jsonl; set {DATA_ENV} to the resume-cvs folder")
    return path


def write_splits(source: Path, out_dir: Path, train_limit: int | None = None,
                 validation_limit: int | None = None) -> dict[str, int]:
    """Write the project's split of ``source`` to ``out_dir/{train,validation,test}.jsonl``; document counts.

    ``train_limit`` / ``validation_limit`` keep the first N documents of those splits (small budgets); the
    test split stays whole.
    """
    from resume_ner.config import ResumeNerConfig
    from resume_ner.data.dataset import load_dataset

    dataset = load_dataset(source, ResumeNerConfig().data)
    splits = {"train": dataset.train[:train_limit] if train_limit else dataset.train,
              "validation": dataset.validation[:validation_limit] if validation_limit else dataset.validation,
              "test": dataset.test}
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, documents in splits.items():
        with open(out_dir / f"{name}.jsonl", "w", encoding="utf-8") as handle:
            for document in documents:
                handle.write(json.dumps(document.to_doccano(), ensure_ascii=False) + "\n")
    return {name: len(documents) for name, documents in splits.items()}


def read_records(path: Path) -> list[dict[str, Any]]:
    """The JSON records of a Doccano JSONL file, as they are (the baselines read them without resume_ner);
    exits when the file is missing."""
    if not path.is_file():
        sys.exit(f"bench: no such file {path}")
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def read_split(split_dir: Path, name: str) -> list[Any]:
    """The documents of one written split."""
    from resume_ner.config import ResumeNerConfig
    from resume_ner.data.dataset import load_documents

    return load_documents(split_dir / f"{name}.jsonl", ResumeNerConfig().data)


def write_predictions(path: Path, ids: list[str], entities: list[list[tuple[int, int, str]]]) -> None:
    """Write one predictions line per document (see the module docstring)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for doc_id, doc_entities in zip(ids, entities, strict=True):
            handle.write(json.dumps({"id": doc_id, "entities": [list(e) for e in doc_entities]}) + "\n")


def _trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    """``start, end`` with whitespace at both edges removed (validation trims it off the gold spans)."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def score_predictions(gold: list[Any], predictions: Path) -> dict[str, Any]:
    """Exact character-span scores (``span_metrics``) of a predictions file against the gold documents.

    Whitespace at the edges of every predicted span is trimmed first, for every system alike (validation trims
    it off the gold spans; a spaCy entity can end in a whitespace token).
    """
    from resume_ner.data.document import Span
    from resume_ner.training.metrics import span_metrics

    lines = [json.loads(line) for line in predictions.read_text(encoding="utf-8").splitlines() if line.strip()]
    by_id = {line["id"]: line["entities"] for line in lines}
    missing = [doc.id for doc in gold if doc.id not in by_id]
    if missing:
        raise ValueError(f"{predictions}: no prediction for {len(missing)} test document(s), e.g. {missing[:3]}")
    pred = [[Span(*_trimmed(doc.text, int(s), int(e)), str(label)) for s, e, label in by_id[doc.id]] for doc in gold]
    return span_metrics([doc.spans for doc in gold], pred)


def machine_info() -> dict[str, Any]:
    """The facts a reader needs to compare figures: cores, CPU model, torch threads, library versions."""
    import torch
    import transformers

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu_model": cpu, "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "platform": platform.platform()}


@dataclass
class Measured:
    """A finished subprocess: exit status, wall seconds, peak resident memory (MiB) of it and its children."""

    returncode: int
    wall_s: float
    peak_rss_mb: float | None  # None: not measured


def run_measured(cmd: list[str], log: Path, env: dict[str, str] | None = None, check: bool = True) -> Measured:
    """Run ``cmd`` with output to ``log``; its wall time and peak RSS (``wait4``: the process's own rusage).

    The peak covers the process itself, not its descendants (every benchmarked system trains or predicts in
    the process it was started as). ``check``: exit with the log's tail when it fails.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                **(env or {})}
    started = time.perf_counter()
    with open(log, "w", encoding="utf-8") as handle:
        handle.write("$ " + shlex.join(cmd) + "\n")
        handle.flush()
        process = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=full_env, cwd=ROOT)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    measured = Measured(process.returncode, time.perf_counter() - started, usage.ru_maxrss / 1024)
    if check and measured.returncode != 0:
        tail = "".join(log.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-30:])
        sys.exit(f"bench: {shlex.join(cmd)} failed ({measured.returncode}); log {log}:\n{tail}")
    return measured


def speed_inputs(work_root: Path, quick: bool, model: Path | None, threads: int) -> tuple[Path, Path, Path]:
    """A speed benchmark's (work directory ``work_root/<quick|full>``, test split file, model): the project's split
    of the corpus (16 training resumes when quick without ``model``) and ``bench_model``."""
    work = work_root.resolve() / ("quick" if quick else "full")
    splits = work / "splits"
    write_splits(data_dir(), splits, 16 if quick and not model else None)
    return work, splits / "test.jsonl", bench_model(model, work, splits, threads)


def bench_model(model: Path | None, work: Path, splits: Path, threads: int) -> Path:
    """``model``, else a one-epoch project training on ``splits`` made in ``work`` once (speed benchmarks: speed
    does not depend on quality)."""
    if model:
        return model.resolve()
    out = work / "model-run"
    if not (out / "model" / "config.json").is_file():
        run_measured([*python_cmd("-m", "resume_ner.cli.main", "train"), "--data", str(splits),
                      "--output-dir", str(out), "--overwrite", "--no-tracking", "-q",
                      "--set", "training.epochs=1", "--set", f"training.num_threads={threads}"],
                     work / "model-train.log")
    return out / "model"


def python_cmd(*args: str) -> list[str]:
    """``python`` of this environment with ``args``."""
    return [sys.executable, *args]


def write_result(name: str, payload: dict[str, Any], quick: bool, results_dir: Path = RESULTS_DIR) -> Path:
    """Write ``results_dir/<name>[-quick].json``: the payload with the machine, the command and the time."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}{'-quick' if quick else ''}.json"
    record = {"benchmark": name, "quick": quick,
              "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": os.environ.get("RESUME_NER_BENCH_COMMAND") or shlex.join(sys.argv),
              "machine": machine_info(), **payload}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def median(values: list[float]) -> float:
    """The median of a non-empty list."""
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def best_setting(medians: dict[str, float]) -> tuple[str, float]:
    """The name and figure of the fastest setting: the highest of ``medians``."""
    name = max(medians, key=medians.__getitem__)
    return name, medians[name]


def peer_ratios(ours: float, peers: dict[str, float], fp32_peer: str) -> dict[str, Any]:
    """``ours`` against the best of the ``peers`` medians (``ratio``, ``best_peer``) and against the peer's fp32
    setting ``fp32_peer`` (``ratio_fp32``: the baseline the benchmarks compared with before)."""
    best, best_value = best_setting(peers)
    return {"best_peer": best, "ratio": ours / best_value, "ratio_fp32": ours / peers[fp32_peer]}


def model_shape(config_file: Path, labels: int, seq_len: int) -> dict[str, int]:
    """The dimensions ``flops_per_token`` needs, read from a Hugging Face BERT-style ``config.json``."""
    config = json.loads(config_file.read_text(encoding="utf-8"))
    return {"layers": config["num_hidden_layers"], "hidden": config["hidden_size"],
            "intermediate": config["intermediate_size"], "labels": labels, "seq_len": seq_len}


def matmul_weights(shape: dict[str, int]) -> int:
    """The weights multiplied per token (see the module docstring)."""
    hidden = shape["hidden"]
    return shape["layers"] * (4 * hidden * hidden + 2 * hidden * shape["intermediate"]) + hidden * shape["labels"]


def flops_per_token(shape: dict[str, int], training: bool) -> int:
    """Model FLOPs per token of a forward pass, or of a training step (three forward passes' worth)."""
    forward = 2 * matmul_weights(shape) + 4 * shape["layers"] * shape["seq_len"] * shape["hidden"]
    return 3 * forward if training else forward

"""The "Hugging Face run_ner.py way" baseline: resume NER with ``transformers`` + ``torch`` + ``seqeval`` alone.

What a user would write with the public libraries, following the ``run_ner.py`` example: tokenize each
training resume once with ``truncation=True, max_length=...`` (everything after the first ``max_length``
tokens is lost), IOB2 token labels from the character spans, ``Trainer`` with ``DataCollatorForTokenClassification``
and seqeval entity F1 on the (equally truncated) validation set, then the ``token-classification`` pipeline
with ``aggregation_strategy="simple"`` and its own ``stride`` to cover whole resumes at prediction time.

No handicaps: the orchestrator gives it the project's backbone, hyperparameters and thread count. Truncation
to ``max_length`` is the ``run_ner.py`` behaviour being measured, not a choice made here to weaken it.

Subcommands (run as a subprocess by the benchmark orchestrators):

- ``train``: fine-tune, save ``OUT/model`` and ``OUT/train_result.json``.
- ``predict``: pipeline predictions in the ``common`` predictions format, and optional timing JSON; the model
  in fp32 or bf16 (``--dtype``), the pipeline's ``batch_size`` (``--batch-size``).
- ``speed``: ``Trainer`` throughput on exactly the windows the project trains on (the only path that imports
  ``resume_ner``, to build those windows).

``train`` and ``speed`` take ``Trainer``'s own speed settings: ``--bf16`` (``TrainingArguments(bf16=True)``:
bf16 autocast on the CPU, weights in fp32) and ``--group-by-length``
(``train_sampling_strategy="group_by_length"``: batches of windows of similar length, less padding).

``Trainer`` needs ``accelerate`` (pinned in ``requirements.lock``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

IGNORE_INDEX = -100
OUTSIDE = "O"


def label_list(documents: list[dict[str, Any]]) -> list[str]:
    """``O`` then ``B-X, I-X`` of every entity type in ``documents``, types sorted."""
    types = sorted({label for doc in documents for _, _, label in doc["labels"]})
    return [OUTSIDE] + [f"{prefix}-{etype}" for etype in types for prefix in ("B", "I")]


def token_labels(offsets: list[tuple[int, int]], word_ids: list[int | None], spans: list[list[Any]],
                 label2id: dict[str, int]) -> list[int]:
    """IOB2 label id of every token: ``B-`` on the first token overlapping a span, ``I-`` on the following
    tokens of that span, ``O`` elsewhere (also for types unknown to ``label2id``), -100 on special tokens."""
    ordered = sorted((int(s), int(e), str(label)) for s, e, label in spans)
    labels: list[int] = []
    j, previous_span = 0, -1
    for (start, end), word_id in zip(offsets, word_ids):
        if word_id is None:
            labels.append(IGNORE_INDEX)
            continue
        while j < len(ordered) and ordered[j][1] <= start:
            j += 1
        if j < len(ordered) and ordered[j][0] < end:
            tag = f"{'I' if previous_span == j else 'B'}-{ordered[j][2]}"
            labels.append(label2id.get(tag, 0))
            previous_span = j
        else:
            labels.append(0)
            previous_span = -1
    return labels


def truncated_features(documents: list[dict[str, Any]], tokenizer: Any, label2id: dict[str, int],
                       max_length: int) -> list[dict[str, list[int]]]:
    """One feature per document: its first ``max_length`` tokens (the run_ner.py way) with their labels."""
    enc = tokenizer([doc["text"] for doc in documents], truncation=True, max_length=max_length,
                    return_offsets_mapping=True)
    features = []
    for i, doc in enumerate(documents):
        feature = {key: enc[key][i] for key in enc.keys() if key != "offset_mapping"}
        feature["labels"] = token_labels(enc["offset_mapping"][i], enc.word_ids(i), doc["labels"], label2id)
        features.append(feature)
    return features


def speed_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The ``TrainingArguments`` fields that ``--bf16`` and ``--group-by-length`` choose."""
    return {"bf16": args.bf16, "train_sampling_strategy": "group_by_length" if args.group_by_length else "random"}


def training_arguments(args: argparse.Namespace, output_dir: str, evaluate: bool) -> Any:
    """``TrainingArguments`` for CPU training with the given hyperparameters and speed settings, never saving
    checkpoints.

    transformers 5 dropped ``warmup_ratio``: a ``warmup_steps`` below 1 is read as the share of steps.
    """
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=output_dir, num_train_epochs=args.epochs, learning_rate=args.learning_rate,
        per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=32,
        warmup_steps=args.warmup_ratio, weight_decay=args.weight_decay, seed=args.seed,
        eval_strategy="epoch" if evaluate else "no", save_strategy="no", logging_steps=50, report_to=[],
        use_cpu=True, dataloader_num_workers=0, **speed_settings(args),
    )


def timed_training(trainer: Any, features: list[dict[str, list[int]]], epochs: int) -> dict[str, Any]:
    """Run ``trainer.train()`` and ``trainer.save_model()`` (as run_ner.py does; the project's figure includes
    writing its model too); their wall seconds, tokens (attention masks x epochs) and tokens per second."""
    started = time.perf_counter()
    trainer.train()
    trainer.save_model()  # to args.output_dir
    wall = time.perf_counter() - started
    tokens = sum(sum(f["attention_mask"]) for f in features) * epochs
    return {"train_wall_s": wall, "tokens": tokens, "tokens_per_s": tokens / wall}


def seqeval_metrics(id2label: dict[int, str]) -> Any:
    """``compute_metrics`` for ``Trainer``: seqeval micro F1 over the labelled tokens."""
    import numpy as np
    from seqeval.metrics import f1_score

    def compute(eval_pred: Any) -> dict[str, float]:
        predictions = np.argmax(eval_pred.predictions, axis=-1)
        gold, pred = [], []
        for row_pred, row_gold in zip(predictions, eval_pred.label_ids):
            keep = row_gold != IGNORE_INDEX
            gold.append([id2label[int(i)] for i in row_gold[keep]])
            pred.append([id2label[int(i)] for i in row_pred[keep]])
        return {"f1": float(f1_score(gold, pred))}

    return compute


def train(args: argparse.Namespace) -> None:
    """Fine-tune on truncated resumes; save the model, tokenizer and ``train_result.json`` under ``--out``."""
    import torch
    from transformers import (AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification,
                              Trainer, set_seed)

    torch.set_num_threads(args.threads)
    train_docs = common.read_records(args.splits / "train.jsonl")[: args.train_limit]
    val_docs = common.read_records(args.splits / "validation.jsonl")
    labels = label_list(train_docs)
    label2id = {label: i for i, label in enumerate(labels)}
    id2label = dict(enumerate(labels))
    tokenizer = AutoTokenizer.from_pretrained(args.backbone, model_max_length=args.max_length)
    train_features = truncated_features(train_docs, tokenizer, label2id, args.max_length)
    val_features = truncated_features(val_docs, tokenizer, label2id, args.max_length)
    set_seed(args.seed)
    model = AutoModelForTokenClassification.from_pretrained(args.backbone, num_labels=len(labels),
                                                            id2label=id2label, label2id=label2id)
    trainer = Trainer(model=model, args=training_arguments(args, str(args.out / "model"), evaluate=True),
                      train_dataset=train_features, eval_dataset=val_features,
                      data_collator=DataCollatorForTokenClassification(tokenizer), processing_class=tokenizer,
                      compute_metrics=seqeval_metrics(id2label))
    timing = timed_training(trainer, train_features, args.epochs)  # the model is saved to OUT/model
    history = [{"epoch": round(log["epoch"]), "val_f1_micro": log["eval_f1"]}
               for log in trainer.state.log_history if "eval_f1" in log]
    result = {**timing, "epochs": args.epochs, "train_docs": len(train_docs), "history": history,
              "settings": speed_settings(args), "label_list": labels}
    (args.out / "train_result.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k != "label_list"}))


def chunk_tokens(tokenizer: Any, texts: list[str], stride: int) -> int:
    """The tokens of the chunks the pipeline cuts ``texts`` into (``tokenizer.model_max_length`` tokens with
    ``stride`` overlap, special tokens included, padding not): what one prediction pass runs the model on."""
    enc = tokenizer(texts, truncation=True, stride=stride, return_overflowing_tokens=True)
    return sum(len(ids) for ids in enc["input_ids"])


def predict(args: argparse.Namespace) -> None:
    """Pipeline predictions over whole resumes (the pipeline's own striding); optional timing JSON."""
    import torch
    from transformers import AutoTokenizer, pipeline

    torch.set_num_threads(args.threads)
    if not (args.model / "config.json").is_file():
        sys.exit(f"hf_baseline: {args.model} has no config.json: not a trained model directory")
    documents = common.read_records(args.docs)
    texts = [doc["text"] for doc in documents]
    started = time.perf_counter()
    # the pipeline cuts a text into chunks of tokenizer.model_max_length tokens
    tokenizer = AutoTokenizer.from_pretrained(args.model, model_max_length=args.max_length)
    ner = pipeline("token-classification", model=str(args.model), tokenizer=tokenizer,
                   aggregation_strategy="simple", stride=args.stride, device="cpu",
                   dtype=torch.bfloat16 if args.dtype == "bf16" else torch.float32, batch_size=args.batch_size)
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(args.repeat):
        outputs = ner(texts)
    predict_s = time.perf_counter() - started
    entities = [[(int(e["start"]), int(e["end"]), str(e["entity_group"])) for e in doc_entities]
                for doc_entities in outputs]
    common.write_predictions(args.out, [str(doc["id"]) for doc in documents], entities)
    timing = {"docs": len(documents), "repeat": args.repeat, "load_s": load_s, "predict_s": predict_s,
              "resumes_per_s": len(documents) * args.repeat / predict_s, "bf16": args.dtype == "bf16",
              "settings": {"dtype": args.dtype, "batch_size": args.batch_size},
              "window_tokens": chunk_tokens(tokenizer, texts, args.stride)}
    if args.timing:
        args.timing.parent.mkdir(parents=True, exist_ok=True)
        args.timing.write_text(json.dumps(timing, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(timing))


def speed(args: argparse.Namespace) -> None:
    """``Trainer`` throughput on the project's own training windows of the first ``--docs`` resumes."""
    import torch
    from transformers import AutoModelForTokenClassification, DataCollatorForTokenClassification, Trainer, set_seed

    from resume_ner.config import ResumeNerConfig
    from resume_ner.data.dataset import load_documents
    from resume_ner.data.labels import scheme_for
    from resume_ner.data.windows import build_windows
    from resume_ner.training.model import load_fast_tokenizer

    torch.set_num_threads(args.threads)
    path = args.splits / "train.jsonl"
    if not path.is_file():
        sys.exit(f"hf_baseline: {path} not found")
    data_config = ResumeNerConfig().data
    documents = load_documents(path, data_config)[: args.docs]
    tokenizer = load_fast_tokenizer(str(args.backbone))
    scheme = scheme_for(data_config.label_map)
    windowed = build_windows(documents, tokenizer, scheme, max_length=args.max_length, stride=args.stride)
    features = []
    for window in windowed.windows:
        feature = {"input_ids": window.input_ids, "attention_mask": window.attention_mask, "labels": window.labels}
        if window.token_type_ids is not None:
            feature["token_type_ids"] = window.token_type_ids
        features.append(feature)
    set_seed(args.seed)
    model = AutoModelForTokenClassification.from_pretrained(args.backbone, num_labels=len(scheme.labels),
                                                            id2label=scheme.id2label, label2id=scheme.label2id)
    with tempfile.TemporaryDirectory(prefix="hf_baseline_speed_") as scratch:
        trainer = Trainer(model=model, args=training_arguments(args, scratch, evaluate=False),
                          train_dataset=features, data_collator=DataCollatorForTokenClassification(tokenizer))
        timing = timed_training(trainer, features, args.epochs)
    result = {"system": "hf-trainer", "windows": len(features), **timing, "batch_size": args.batch_size,
              "max_length": args.max_length, "threads": args.threads, "bf16": args.bf16,
              "settings": speed_settings(args)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result))


def warmup_share(value: str) -> float:
    """An ``argparse`` type: a warmup share in [0, 1)."""
    share = float(value)
    if not 0 <= share < 1:
        raise argparse.ArgumentTypeError(f"warmup ratio must be in [0, 1), got {value}")
    return share


def add_training_options(parser: argparse.ArgumentParser, epochs: int | None) -> None:
    """Options shared by ``train`` and ``speed`` (defaults: the project's training defaults)."""
    parser.add_argument("--splits", type=Path, required=True, help="directory with train/validation/test.jsonl")
    parser.add_argument("--backbone", type=Path, required=True, help="local model directory (fast tokenizer)")
    parser.add_argument("--epochs", type=int, default=epochs, required=epochs is None)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--warmup-ratio", type=warmup_share, default=0.1)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--bf16", action="store_true", help="TrainingArguments(bf16=True): bf16 autocast")
    parser.add_argument("--group-by-length", action="store_true",
                        help='TrainingArguments(train_sampling_strategy="group_by_length")')


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run one subcommand."""
    parser = argparse.ArgumentParser(prog="hf_baseline", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p_train = commands.add_parser("train", help="fine-tune on truncated resumes (the run_ner.py way)")
    add_training_options(p_train, epochs=None)
    p_train.add_argument("--out", type=Path, required=True, help="output directory (model/, train_result.json)")
    p_train.add_argument("--train-limit", type=int, default=None, help="keep the first N training resumes")
    p_predict = commands.add_parser("predict", help="pipeline predictions over whole resumes")
    p_predict.add_argument("--model", type=Path, required=True, help="model directory written by train")
    p_predict.add_argument("--docs", type=Path, required=True, help="Doccano JSONL of the resumes to label")
    p_predict.add_argument("--out", type=Path, required=True, help="predictions JSONL")
    p_predict.add_argument("--stride", type=int, default=64)
    p_predict.add_argument("--max-length", type=int, default=256)
    p_predict.add_argument("--threads", type=int, default=1)
    p_predict.add_argument("--repeat", type=int, default=1, help="prediction passes over the documents")
    p_predict.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="the model's weights")
    p_predict.add_argument("--batch-size", type=int, default=1, help="the pipeline's batch_size (chunks)")
    p_predict.add_argument("--timing", type=Path, default=None, help="timing JSON")
    p_speed = commands.add_parser("speed", help="Trainer throughput on the project's training windows")
    add_training_options(p_speed, epochs=1)
    p_speed.add_argument("--out", type=Path, required=True, help="result JSON")
    p_speed.add_argument("--docs", type=int, required=True, help="first N training resumes")
    p_speed.add_argument("--stride", type=int, default=64)
    args = parser.parse_args(argv)
    if getattr(args, "backbone", None) is not None and not (args.backbone / "config.json").is_file():
        sys.exit(f"hf_baseline: backbone {args.backbone} has no config.json")
    {"train": train, "predict": predict, "speed": speed}[args.command](args)


if __name__ == "__main__":
    main()

"""spaCy NER baseline: the pipeline many resume parsers train, built exactly the way its users build it.

Nothing here is tuned. ``train`` converts the Doccano splits to DocBin files (``spacy.blank("en")``
tokenization; gold spans snapped to tokens with ``alignment_mode="contract"``; spans that cannot be aligned
or that overlap a kept span are dropped and counted), generates spaCy's own starter config with
``spacy init config --lang en --pipeline ner --optimize efficiency`` (CPU, default tok2vec) and runs
``spacy train`` on it with spaCy's defaults; only the options given on this command line are passed as
config overrides. ``predict`` loads ``model-best`` and writes the common predictions file.

    python bench/spacy_baseline.py train --splits SPLITS --out OUT --threads 2
    python bench/spacy_baseline.py predict --model OUT/model-best --docs SPLITS/test.jsonl --out preds.jsonl
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

ANSI = re.compile(r"\x1b\[[0-9;]*m")
TABLE_COLUMNS = {"E": "epoch", "#": "step", "LOSS TOK2VEC": "loss_tok2vec", "LOSS NER": "loss_ner",
                 "ENTS_F": "val_f1", "ENTS_P": "val_precision", "ENTS_R": "val_recall", "SCORE": "score"}
PERCENT_COLUMNS = {"val_f1", "val_precision", "val_recall"}


def _without_space_edges(span: Any) -> Any:
    """``span`` without whitespace tokens (e.g. a newline) at its edges, None when nothing is left: spaCy's NER
    cannot be trained on an entity that starts or ends with one (E024)."""
    from spacy.tokens import Span

    if span is None:
        return None
    start, end = span.start, span.end
    while start < end and span.doc[start].is_space:
        start += 1
    while end > start and span.doc[end - 1].is_space:
        end -= 1
    return Span(span.doc, start, end, label=span.label_) if end > start else None


def to_docbin(records: list[dict[str, Any]], path: Path) -> dict[str, int]:
    """Write ``records`` as a DocBin at ``path``; counts of gold, dropped and contracted (resized) spans."""
    import spacy
    from spacy.tokens import DocBin
    from spacy.util import filter_spans

    nlp = spacy.blank("en")
    nlp.max_length = max(nlp.max_length, max((len(r["text"]) for r in records), default=0) + 1)
    docbin, counts = DocBin(), {"gold": 0, "dropped": 0, "contracted": 0}
    for record in records:
        doc = nlp.make_doc(record["text"])
        spans = [_without_space_edges(doc.char_span(start, end, label=label, alignment_mode="contract"))
                 for start, end, label in record["labels"]]
        kept = filter_spans([span for span in spans if span is not None])
        doc.ents = kept
        counts["gold"] += len(spans)
        counts["dropped"] += len(spans) - len(kept)
        gold = {(start, end) for start, end, _ in record["labels"]}
        counts["contracted"] += sum((span.start_char, span.end_char) not in gold for span in kept)
        docbin.add(doc)
    path.parent.mkdir(parents=True, exist_ok=True)
    docbin.to_disk(path)
    return counts


def parse_table(log: str) -> list[dict[str, float | int]]:
    """The rows of ``spacy train``'s progress table (header ``E  #  LOSS TOK2VEC  LOSS NER  ENTS_F ...``)."""
    columns: list[str] = []
    history: list[dict[str, float | int]] = []
    for line in ANSI.sub("", log).splitlines():
        fields = line.split()
        if fields[:2] == ["E", "#"]:
            columns = re.split(r"\s{2,}", line.strip())
        elif columns and len(fields) == len(columns) and all(re.fullmatch(r"-?[\d.]+", f) for f in fields):
            row: dict[str, float | int] = {}
            for name, value in zip(columns, fields):
                key = TABLE_COLUMNS.get(name, name.lower().replace(" ", "_"))
                row[key] = int(value) if key in ("epoch", "step") else float(value)
                if key in PERCENT_COLUMNS:
                    row[key] = round(row[key] / 100, 4)
            history.append(row)
    return history


def effective_settings(config: Path) -> dict[str, Any]:
    """The training settings ``spacy train`` used (its defaults plus the overrides), from the saved config."""
    from spacy.util import load_config

    training = load_config(config, interpolate=True)["training"]
    return {key: training[key] for key in ("max_steps", "max_epochs", "patience", "eval_frequency", "seed")}


def train(args: argparse.Namespace) -> None:
    """Convert the splits, generate spaCy's config, run ``spacy train``; write ``OUT/train_result.json``."""
    out = args.out.resolve()
    train_records = common.read_records(args.splits / "train.jsonl")[: args.train_limit]
    dev_records = common.read_records(args.splits / "validation.jsonl")
    counts = {"train": to_docbin(train_records, out / "corpus" / "train.spacy"),
              "validation": to_docbin(dev_records, out / "corpus" / "dev.spacy")}
    config = out / "config.cfg"
    common.run_measured(common.python_cmd("-m", "spacy", "init", "config", str(config), "--lang", "en",
                                          "--pipeline", "ner", "--optimize", "efficiency", "--force"),
                        out / "init_config.log")
    options = {"training.max_steps": args.max_steps, "training.max_epochs": args.max_epochs,
               "training.patience": args.patience, "training.eval_frequency": args.eval_frequency,
               "system.seed": args.seed}
    overrides = [f"--{key}={value}" for key, value in options.items() if value is not None]
    threads = str(args.threads)
    env = {"OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
           "ANSI_COLORS_DISABLED": "1"}
    log = out / "train.log"
    measured = common.run_measured(
        common.python_cmd("-m", "spacy", "train", str(config), "--output", str(out),
                          "--paths.train", str(out / "corpus" / "train.spacy"),
                          "--paths.dev", str(out / "corpus" / "dev.spacy"), *overrides),
        log, env=env)
    history = parse_table(log.read_text(encoding="utf-8", errors="replace"))
    if not history:
        sys.exit(f"spacy_baseline: no training table found in {log}")
    result = {"train_wall_s": round(measured.wall_s, 2), "train_peak_rss_mb": round(measured.peak_rss_mb, 1),
              "train_docs": len(train_records),
              "dropped_spans": {name: c["dropped"] for name, c in counts.items()},
              "contracted_spans": {name: c["contracted"] for name, c in counts.items()},
              "gold_spans": {name: c["gold"] for name, c in counts.items()},
              "history": history, "best_model": str(out / "model-best"),
              "settings": {**effective_settings(out / "model-best" / "config.cfg"), "threads": args.threads}}
    (out / "train_result.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"spacy_baseline: trained in {measured.wall_s:.1f}s, best val F1 "
          f"{max(row.get('val_f1', 0.0) for row in history):.4f}; {out / 'train_result.json'}")


def predict(args: argparse.Namespace) -> None:
    """Tag ``--docs`` with the trained pipeline ``--repeat`` times; write predictions and optional timing."""
    import spacy

    if not (args.model / "config.cfg").is_file():
        sys.exit(f"spacy_baseline: {args.model} is not a trained spaCy pipeline (no config.cfg)")
    records = common.read_records(args.docs)
    texts = [record["text"] for record in records]
    started = time.perf_counter()
    nlp = spacy.load(args.model)
    load_s = time.perf_counter() - started
    nlp.max_length = max(nlp.max_length, max(map(len, texts), default=0) + 1)
    entities: list[list[tuple[int, int, str]]] = []
    started = time.perf_counter()
    for _ in range(args.repeat):
        entities = [[(ent.start_char, ent.end_char, ent.label_) for ent in doc.ents] for doc in nlp.pipe(texts)]
    predict_s = time.perf_counter() - started
    common.write_predictions(args.out, [str(record["id"]) for record in records], entities)
    if args.timing:
        timing = {"docs": len(texts), "repeat": args.repeat, "load_s": round(load_s, 3),
                  "predict_s": round(predict_s, 3),
                  "resumes_per_s": round(len(texts) * args.repeat / predict_s, 3) if predict_s else None}
        args.timing.parent.mkdir(parents=True, exist_ok=True)
        args.timing.write_text(json.dumps(timing, indent=2) + "\n", encoding="utf-8")


def positive(value: str) -> int:
    """argparse type: an integer of at least 1."""
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return number


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the subcommand."""
    parser = argparse.ArgumentParser(prog="spacy_baseline", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    t = commands.add_parser("train", help="convert the splits and run spacy train (spaCy defaults)")
    t.add_argument("--splits", type=Path, required=True, help="folder with train.jsonl and validation.jsonl")
    t.add_argument("--out", type=Path, required=True, help="output folder (model-best, train_result.json)")
    t.add_argument("--threads", type=positive, required=True, help="OMP/OpenBLAS/MKL threads")
    t.add_argument("--max-steps", type=int, help="training.max_steps (spaCy default 20000; 0 = no limit)")
    t.add_argument("--max-epochs", type=int, help="training.max_epochs (spaCy default 0 = no limit)")
    t.add_argument("--patience", type=int, help="training.patience (spaCy default 1600)")
    t.add_argument("--eval-frequency", type=positive, help="training.eval_frequency (spaCy default 200)")
    t.add_argument("--train-limit", type=positive, help="train on the first N training documents only")
    t.add_argument("--seed", type=int, help="system.seed (spaCy default 0)")
    t.set_defaults(run=train)
    p = commands.add_parser("predict", help="tag documents with a trained pipeline")
    p.add_argument("--model", type=Path, required=True, help="trained pipeline folder (OUT/model-best)")
    p.add_argument("--docs", type=Path, required=True, help="Doccano JSONL documents to tag")
    p.add_argument("--out", type=Path, required=True, help="predictions JSONL to write")
    p.add_argument("--repeat", type=positive, default=1, help="tag the documents this many times (timing)")
    p.add_argument("--timing", type=Path, help="write load and prediction times here (JSON)")
    p.set_defaults(run=predict)
    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()

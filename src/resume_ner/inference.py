"""Entity extraction with a trained checkpoint: whole documents are windowed, predicted in batches and
merged back into character-offset entities.

>>> from resume_ner.inference import Predictor
>>> Predictor("runs/demo/model").predict(["Jane Doe\\nSenior Data Engineer at Contoso"])  # doctest: +SKIP
[[Entity(label='NAME', start=0, end=8, text='Jane Doe', score=0.98), ...]]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from resume_ner.data.document import Document
from resume_ner.training.decoding import Decoding, decode_tags, model_decoding
from resume_ner.training.distributed import resolve_device
from resume_ner.training.ensemble import ensemble_word_log_probs, load_members, mean_transitions, members_autocast
from resume_ner.training.evaluator import predicted_spans
from resume_ner.training.precision import Precision


@dataclass(frozen=True)
class Entity:
    """An extracted entity: canonical type, character offsets into the input text (end exclusive), score."""

    label: str
    start: int
    end: int
    text: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Predictor:
    """A loaded checkpoint ready to extract entities; reuse it for many calls.

    ``precision``: ``auto`` runs the forward passes under bf16 autocast where the hardware has native bf16
    (AVX512-BF16 or AMX CPUs, bf16 GPUs), else in fp32; ``fp32`` or ``bf16`` force one. On the corpus's test
    resumes bf16 changed span micro-F1 by +0.0006 and predicted 1.8x faster on a 2-core AVX512-BF16 CPU
    (docs/benchmarks.md). ``decoding``: how word tags are read from the label probabilities
    (``resume_ner.training.decoding``); by default the one the checkpoint was trained with. A checkpoint with a
    CRF head (``crf.safetensors``) decodes with its learned transition scores. ``on_windows`` is called with the
    number of windows of each batch predicted (a progress bar's update). ``model_dir`` may be an ONNX export
    (``resume-ner export``): its graph runs on ONNX Runtime in fp32, windows and decoding unchanged.

    Several model directories predict as an ensemble (``resume_ner.training.ensemble``): each scores the texts
    with its own tokenizer and windows, their word probabilities are averaged on the first one's words, and
    Viterbi decodes the mean with the mean of their CRF transition scores; the first directory's decoding is
    the default. Prediction costs the sum of the members' forward passes.
    """

    def __init__(
        self,
        model_dir: str | Path | Sequence[str | Path],
        *,
        device: str = "auto",
        batch_size: int = 32,
        precision: Precision = "auto",
        decoding: Decoding | None = None,
        on_windows: Callable[[int], None] | None = None,
    ) -> None:
        self.device = resolve_device(device)
        directories = [model_dir] if isinstance(model_dir, (str, Path)) else list(model_dir)
        self.members = load_members(directories, self.device)
        first = self.members[0]
        self.model, self.tokenizer, self.metadata = first.model, first.tokenizer, first.metadata
        self.scheme = first.scheme
        self.onnx = first.onnx
        self.autocast = members_autocast(self.members, precision, self.device)  # for every member but ONNX exports
        self.bf16 = self.autocast and not self.onnx
        self.max_length = int(self.metadata["windows"]["max_length"])
        self.stride = int(self.metadata["windows"]["stride"])
        self.batch_size = batch_size
        self.on_windows = on_windows
        self.decoding = decoding or model_decoding(self.metadata)
        self.transitions = mean_transitions(self.members)

    def predict(self, texts: Sequence[str]) -> list[list[Entity]]:
        """Entities of each text, in text order."""
        documents = [Document(id=str(i), text=text) for i, text in enumerate(texts)]
        windowed = self.members[0].windows(documents)
        word_log_probs = ensemble_word_log_probs(
            self.members,
            documents,
            windowed,
            batch_size=self.batch_size,
            device=self.device,
            bf16=self.autocast,
            on_windows=self.on_windows,
        )
        merged = decode_tags(word_log_probs, self.scheme, self.decoding, self.transitions)
        return [
            [
                Entity(span.label, span.start, span.end, doc.text[span.start : span.end], round(score, 4))
                for span, score in doc_spans
            ]
            for doc, doc_spans in zip(documents, predicted_spans(windowed, merged), strict=True)
        ]

    def predict_stream(self, texts: Iterable[str], chunk_size: int = 64) -> Iterable[list[Entity]]:
        """Like ``predict`` over an iterable, ``chunk_size`` texts at a time (bounded memory)."""
        chunk: list[str] = []
        for text in texts:
            chunk.append(text)
            if len(chunk) == chunk_size:
                yield from self.predict(chunk)
                chunk = []
        if chunk:
            yield from self.predict(chunk)


def predict(
    texts: Sequence[str],
    model_dir: str | Path | Sequence[str | Path],
    *,
    device: str = "auto",
    batch_size: int = 32,
    precision: Precision = "auto",
    decoding: Decoding | None = None,
) -> list[list[Entity]]:
    """Load ``model_dir`` (several: an ensemble) and return the entities of each text."""
    return Predictor(model_dir, device=device, batch_size=batch_size, precision=precision, decoding=decoding).predict(
        texts
    )

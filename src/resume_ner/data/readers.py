"""Annotated resume files -> ``Document`` objects, one reader per format, with every parse problem named.

Formats (``end`` is exclusive everywhere except where said):

- ``doccano``: JSON lines ``{"id"?, "text", "labels" | "label": [[start, end, label], ...]}``.
- ``spanjson``: ``{"id"?, "text", "annotations": [[start, end, label], ...]}`` as JSON lines or one JSON array.
- ``dataturks``: JSON lines ``{"content", "annotation": [{"label": [str] | str, "points": [{"start", "end"}]}]
  | null}`` where ``end`` is inclusive (converted to exclusive here).
- ``conll``: whitespace columns, token first and BIO tag last; blank line between sentences, ``-DOCSTART-``
  between documents. The text is the tokens joined by single spaces, sentences joined by newlines.

Bytes are decoded line by line so that a line with invalid UTF-8 is named; a UTF-16 or UTF-32 file with a
byte order mark is read as such. A missing, empty, binary or undetectable file raises ``DataValidationError``;
problems inside records are returned in ``ReadResult``.
"""

from __future__ import annotations

import bisect
import codecs
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resume_ner.data.document import Document, Span
from resume_ner.errors import DataValidationError, Problem

logger = logging.getLogger(__name__)

FORMATS = ("doccano", "spanjson", "dataturks", "conll")
_CONLL_TAG = re.compile(r"O|[BI]-\S+")
_DOCSTART = "-DOCSTART-"
_WHITESPACE = re.compile(r"\s*")
_WIDE_BOMS = (  # UTF-32 first: the UTF-32 LE mark starts with the UTF-16 LE one
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_SNIFF_BYTES = 8000  # the start of a file that tells text from binary data
_CONTROL_BYTES = frozenset(range(32)) - frozenset(b"\t\n\v\f\r") | {0x7F}


class _Decoder(json.JSONDecoder):
    """A JSON decoder whose every failure is a ``JSONDecodeError``, also nesting too deep and over-long integers."""

    def raw_decode(self, s: str, idx: int = 0) -> tuple[Any, int]:
        try:
            return super().raw_decode(s, idx)
        except json.JSONDecodeError:
            raise
        except RecursionError:
            raise json.JSONDecodeError("nested too deeply", s, idx) from None
        except ValueError:  # an integer of more than sys.get_int_max_str_digits() digits
            raise json.JSONDecodeError("a number has too many digits", s, idx) from None


_DECODER = _Decoder()


@dataclass
class ReadResult:
    """Documents parsed from one file, the problems met while parsing, and the format used."""

    documents: list[Document]
    problems: list[Problem] = field(default_factory=list)
    format: str = "auto"


@dataclass
class _Record:
    """Where a record sits in its file, and where to put its problems."""

    file: str  # the path as given, for messages and ``Document.source``
    name: str  # the file name, for ids of records without one
    line: int
    problems: list[Problem]

    def problem(self, message: str, doc_id: str | None = None) -> None:
        self.problems.append(Problem(self.file, self.line, doc_id, message))

    @property
    def source(self) -> str:
        return f"{self.file}:{self.line}"


def detect_format(path: str | Path) -> str:
    """The format of ``path`` guessed from its first non-empty line (raises ``DataValidationError`` if unknown)."""
    path = Path(path)
    return _detect(_read_bytes(path), str(path))


def read_documents(path: str | Path, fmt: str = "auto") -> ReadResult:
    """Parse ``path`` in format ``fmt`` (``auto``: detected from the content) into documents and problems."""
    path = Path(path)
    if fmt != "auto" and fmt not in FORMATS:
        known = ", ".join(("auto",) + FORMATS)
        raise DataValidationError([Problem(str(path), None, None, f"unknown format {fmt!r}; use one of {known}")])
    data = _read_bytes(path)
    fmt = _detect(data, str(path)) if fmt == "auto" else fmt
    problems: list[Problem] = []
    if fmt == "conll":
        documents = _read_conll(data, str(path), path.name, problems)
    else:
        documents = []
        parse = _RECORD_PARSERS[fmt]
        for line, record in _json_records(data, str(path), problems):
            ctx = _Record(str(path), path.name, line, problems)
            if not isinstance(record, dict):
                ctx.problem(f"expected a JSON object, got {type(record).__name__}")
                continue
            document = parse(record, ctx)
            if document is not None:
                documents.append(document)
    if not documents and not problems:
        problems.append(Problem(str(path), None, None, f"no documents found (read as {fmt})"))
    logger.info("read %d document(s) from %s as %s (%d problem(s))", len(documents), path, fmt, len(problems))
    return ReadResult(documents=documents, problems=problems, format=fmt)


def _read_bytes(path: Path) -> bytes:
    """The bytes of a readable, non-empty text file as UTF-8 without a BOM (UTF-16 / UTF-32 with a BOM are
    re-encoded); a binary file or UTF-16 without a BOM is refused."""
    if path.is_dir():
        raise DataValidationError([Problem(str(path), None, None, "is a directory; pass one annotated file")])
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataValidationError([Problem(str(path), None, None, "file not found")]) from None
    except OSError as exc:
        raise DataValidationError([Problem(str(path), None, None, f"cannot read file: {exc.strerror}")]) from None
    data = _as_utf8(data, str(path)).removeprefix(codecs.BOM_UTF8)
    if not data.strip():
        raise DataValidationError([Problem(str(path), None, None, "file is empty")])
    _refuse_binary(data, str(path))
    return data


def _as_utf8(data: bytes, file: str) -> bytes:
    """``data`` re-encoded as UTF-8 when it starts with a UTF-32 or UTF-16 byte order mark; else unchanged."""
    for bom, codec in _WIDE_BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom) :].decode(codec).encode("utf-8")
            except UnicodeDecodeError as exc:
                message = (
                    f"is {codec[:6].upper()} text (byte order mark {bom.hex(' ').upper()}) but byte "
                    f"{exc.start + len(bom) + 1} is not valid {codec[:6].upper()}; save it as UTF-8"
                )
                raise DataValidationError([Problem(file, None, None, message)]) from None
    return data


def _refuse_binary(data: bytes, file: str) -> None:
    """``DataValidationError`` when the start of ``data`` is not text: UTF-16 without a byte order mark, NUL
    bytes, or mostly bytes that are neither UTF-8 nor printable (as ``git`` and ``grep`` tell binary files)."""
    head = data[:_SNIFF_BYTES]
    nul = head.find(b"\0")
    if nul >= 0 and _looks_like_utf16(head):
        message = "looks like UTF-16 text without a byte order mark (NUL bytes between the letters); save it as UTF-8"
        raise DataValidationError([Problem(file, None, None, message)])
    unreadable = head.decode("utf-8", "replace").count("\ufffd") + sum(byte in _CONTROL_BYTES for byte in head)
    if nul < 0 and unreadable * 10 <= len(head):
        return
    at = nul if nul >= 0 else _first_non_text_byte(head)
    message = f"is not a text file (binary data at byte {at + 1}); pass an annotated JSON or CoNLL file"
    raise DataValidationError([Problem(file, None, None, message)])


def _looks_like_utf16(head: bytes) -> bool:
    """Whether ``head`` has a NUL in most odd (UTF-16 LE) or most even (UTF-16 BE) bytes and few in the others,
    as ASCII text in UTF-16 has."""
    pairs = len(head) // 2
    even, odd = head[0 : 2 * pairs : 2].count(0), head[1 : 2 * pairs : 2].count(0)
    return pairs > 0 and max(even, odd) > pairs // 2 and min(even, odd) * 10 < pairs


def _first_non_text_byte(head: bytes) -> int:
    """Offset of the first control byte or invalid UTF-8 sequence in ``head``."""
    control = next((i for i, byte in enumerate(head) if byte in _CONTROL_BYTES), len(head))
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return min(control, exc.start)
    return control


def _decoded_lines(data: bytes, file: str, problems: list[Problem]) -> list[tuple[int, str | None]]:
    """``(line number, text)`` of every line; ``None`` text (and a problem) for a line that is not UTF-8."""
    lines: list[tuple[int, str | None]] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            lines.append((number, raw.decode("utf-8").rstrip("\r")))
        except UnicodeDecodeError as exc:
            problems.append(Problem(file, number, None, f"not valid UTF-8 (byte {exc.start + 1} of the line)"))
            lines.append((number, None))
    return lines


def _detect(data: bytes, file: str) -> str:
    """The format of non-empty ``data``: the first record's keys for JSON, BIO columns for CoNLL."""
    lines = ((n, raw.decode("utf-8", "replace").strip()) for n, raw in enumerate(data.split(b"\n"), start=1))
    first = next(((n, text) for n, text in lines if text), None)
    if first is None:  # only Unicode whitespace, such as no-break spaces
        raise DataValidationError([Problem(file, None, None, "file is empty (only whitespace)")])
    number, line = first
    hint = f"pass the format explicitly ({', '.join(FORMATS)})"
    if line.startswith("["):
        text = data.decode("utf-8", "replace")
        start = _skip_whitespace(text, text.index("[") + 1)
        if text.startswith("]", start):
            return "spanjson"
        try:
            record, _ = _DECODER.raw_decode(text, start)
        except json.JSONDecodeError as exc:
            raise DataValidationError([Problem(file, exc.lineno, None, f"invalid JSON ({exc.msg}); {hint}")]) from None
    elif line.startswith("{"):
        try:
            record = _DECODER.decode(line)
        except json.JSONDecodeError as exc:
            message = f"invalid JSON ({exc.msg}, column {exc.colno}); {hint}"
            raise DataValidationError([Problem(file, number, None, message)]) from None
    else:
        columns = line.split()
        if columns[0] == _DOCSTART or (len(columns) >= 2 and _CONLL_TAG.fullmatch(columns[-1])):
            return "conll"
        message = f"first line is neither JSON nor CoNLL columns (token ... BIO-tag); {hint}"
        raise DataValidationError([Problem(file, number, None, message)])
    fmt = _format_of_record(record)
    if fmt is None:
        keys = sorted(record) if isinstance(record, dict) else type(record).__name__
        message = (
            f"cannot tell the format of the first record (keys {keys}): expected text+labels (doccano), "
            f"text+annotations (spanjson) or content+annotation (dataturks); {hint}"
        )
        raise DataValidationError([Problem(file, number, None, message)])
    return fmt


def _format_of_record(record: Any) -> str | None:
    if not isinstance(record, dict):
        return None
    if "content" in record and "annotation" in record:
        return "dataturks"
    if "annotations" in record:
        return "spanjson"
    if "text" in record and ("labels" in record or "label" in record):
        return "doccano"
    return None


def _skip_whitespace(text: str, pos: int) -> int:
    """The position of the first non-whitespace character of ``text`` at or after ``pos`` (or its length)."""
    match = _WHITESPACE.match(text, pos)
    assert match is not None  # r"\s*" matches at every position, if only the empty string
    return match.end()


def _json_records(data: bytes, file: str, problems: list[Problem]) -> list[tuple[int, Any]]:
    """``(line, value)`` of each record of a JSON-lines file or of a file holding one JSON array."""
    lines = _decoded_lines(data, file, problems)
    first = next((text.lstrip() for _, text in lines if text and text.strip()), "")
    if first.startswith("["):
        return _array_records(data.decode("utf-8", "replace"), file, problems)
    records: list[tuple[int, Any]] = []
    for number, text in lines:
        if text is None or not text.strip():
            continue
        try:
            records.append((number, _DECODER.decode(text)))
        except json.JSONDecodeError as exc:
            problems.append(Problem(file, number, None, f"invalid JSON: {exc.msg} (column {exc.colno})"))
    return records


def _array_records(text: str, file: str, problems: list[Problem]) -> list[tuple[int, Any]]:
    newlines = [i for i, char in enumerate(text) if char == "\n"]

    def line_of(pos: int) -> int:
        return bisect.bisect_left(newlines, pos) + 1

    records: list[tuple[int, Any]] = []
    pos = _skip_whitespace(text, text.index("[") + 1)
    while not text.startswith("]", pos):
        try:
            value, end = _DECODER.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            problems.append(Problem(file, exc.lineno, None, f"invalid JSON: {exc.msg} (column {exc.colno})"))
            return records
        records.append((line_of(pos), value))
        pos = _skip_whitespace(text, end)
        if text.startswith(",", pos):
            pos = _skip_whitespace(text, pos + 1)
        elif not text.startswith("]", pos):
            problems.append(Problem(file, line_of(pos), None, "invalid JSON: expected ',' or ']' after an array item"))
            return records
    if text[pos + 1 :].strip():
        problems.append(Problem(file, line_of(pos), None, "invalid JSON: data after the closing ']'"))
    return records


def _doc_id(record: dict[str, Any], ctx: _Record) -> str:
    value = record.get("id")
    if value is None:
        return f"{ctx.name}:{ctx.line}"
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return str(value)
    ctx.problem(f"'id' must be a string or an integer, got {type(value).__name__}")
    return f"{ctx.name}:{ctx.line}"


def _text(record: dict[str, Any], key: str, doc_id: str, ctx: _Record) -> str | None:
    value = record.get(key)
    if isinstance(value, str):
        return value
    what = "missing" if value is None else f"must be a string, got {type(value).__name__}"
    ctx.problem(f"'{key}' {what}", doc_id)
    return None


def _span_triples(value: Any, key: str, doc_id: str, ctx: _Record) -> list[Span]:
    """Spans from a list of ``[start, end, label]``; each malformed item is a problem."""
    if not isinstance(value, list):
        what = "missing" if value is None else f"must be a list of [start, end, label], got {type(value).__name__}"
        ctx.problem(f"'{key}' {what}", doc_id)
        return []
    spans = []
    for index, item in enumerate(value):
        if (
            isinstance(item, (list, tuple))
            and len(item) == 3
            and _is_offset(item[0])
            and _is_offset(item[1])
            and isinstance(item[2], str)
        ):
            spans.append(Span(item[0], item[1], item[2]))
        else:
            ctx.problem(f"'{key}' item {index} is {json.dumps(item)[:80]}, expected [start, end, label]", doc_id)
    return spans


def _is_offset(value: Any) -> bool:
    """An int (not a bool) within 64 bits; a larger one is no offset into any text and may be too long to print."""
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63


def _parse_doccano(record: dict[str, Any], ctx: _Record) -> Document | None:
    doc_id = _doc_id(record, ctx)
    text = _text(record, "text", doc_id, ctx)
    key = "labels" if "labels" in record else "label"
    spans = _span_triples(record.get(key), "labels", doc_id, ctx)
    return None if text is None else Document(doc_id, text, spans, source=ctx.source)


def _parse_spanjson(record: dict[str, Any], ctx: _Record) -> Document | None:
    doc_id = _doc_id(record, ctx)
    text = _text(record, "text", doc_id, ctx)
    spans = _span_triples(record.get("annotations"), "annotations", doc_id, ctx)
    return None if text is None else Document(doc_id, text, spans, source=ctx.source)


def _parse_dataturks(record: dict[str, Any], ctx: _Record) -> Document | None:
    doc_id = _doc_id(record, ctx)
    text = _text(record, "content", doc_id, ctx)
    annotation = record.get("annotation")
    if annotation is None and "annotation" in record:
        annotation = []
    if not isinstance(annotation, list):
        what = "missing" if annotation is None else f"must be a list or null, got {type(annotation).__name__}"
        ctx.problem(f"'annotation' {what}", doc_id)
        annotation = []
    spans = []
    for index, item in enumerate(annotation):
        labels = item.get("label") if isinstance(item, dict) else None
        labels = [labels] if isinstance(labels, str) else labels
        points = item.get("points") if isinstance(item, dict) else None
        if not (
            isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels) and isinstance(points, list)
        ):
            ctx.problem(
                f"'annotation' item {index} needs 'label' (string or list of strings) and 'points' (list)", doc_id
            )
            continue
        for point in points:
            if not (isinstance(point, dict) and _is_offset(point.get("start")) and _is_offset(point.get("end"))):
                ctx.problem(
                    f"'annotation' item {index}: point {json.dumps(point)[:80]} needs integer start and end", doc_id
                )
                continue
            spans += [Span(point["start"], point["end"] + 1, label) for label in labels]  # inclusive end
    return None if text is None else Document(doc_id, text, spans, source=ctx.source)


_RECORD_PARSERS: dict[str, Callable[[dict[str, Any], _Record], Document | None]] = {
    "doccano": _parse_doccano,
    "spanjson": _parse_spanjson,
    "dataturks": _parse_dataturks,
}


@dataclass
class _ConllDocument:
    """A CoNLL document being rebuilt: its text pieces, their length and its spans."""

    first_line: int
    pieces: list[str] = field(default_factory=list)
    length: int = 0
    spans: list[Span] = field(default_factory=list)
    open_span: tuple[int, int, str] | None = None  # (start, end, type) of the entity being read

    def add_token(self, token: str, new_sentence: bool) -> tuple[int, int]:
        """Append ``token`` after a space (or a newline when it starts a sentence); its (start, end)."""
        if self.pieces:
            self.pieces.append("\n" if new_sentence else " ")
            self.length += 1
        start = self.length
        self.pieces.append(token)
        self.length += len(token)
        return start, self.length

    def add_tag(self, tag: str, start: int, end: int) -> None:
        """Extend or start an entity: an ``I-X`` continues only an open ``X``, anything else closes it."""
        prefix, _, etype = tag.partition("-")
        if prefix == "I" and self.open_span is not None and self.open_span[2] == etype:
            self.open_span = (self.open_span[0], end, etype)
            return
        self.close_entity()
        if prefix in ("B", "I"):
            self.open_span = (start, end, etype)

    def close_entity(self) -> None:
        if self.open_span is not None:
            self.spans.append(Span(*self.open_span))
            self.open_span = None

    def to_document(self, file: str, name: str) -> Document:
        self.close_entity()
        return Document(f"{name}:{self.first_line}", "".join(self.pieces), self.spans, f"{file}:{self.first_line}")


def _read_conll(data: bytes, file: str, name: str, problems: list[Problem]) -> list[Document]:
    documents: list[Document] = []
    current: _ConllDocument | None = None
    new_sentence = True
    for number, line in _decoded_lines(data, file, problems):
        if line is None:
            continue
        columns = line.split()
        if columns and columns[0] == _DOCSTART:
            if current is not None:
                documents.append(current.to_document(file, name))
            current, new_sentence = None, True
            continue
        if not columns:
            if current is not None:
                current.close_entity()
            new_sentence = True
            continue
        if len(columns) < 2:
            problems.append(Problem(file, number, None, f"expected 'token ... tag' columns, got {line.strip()!r}"))
            continue
        tag = columns[-1]
        if not _CONLL_TAG.fullmatch(tag):
            problems.append(Problem(file, number, None, f"tag {tag!r} is not O, B-TYPE or I-TYPE; read as O"))
            tag = "O"
        if current is None:
            current = _ConllDocument(first_line=number)
        start, end = current.add_token(columns[0], new_sentence)
        current.add_tag(tag, start, end)
        new_sentence = False
    if current is not None:
        documents.append(current.to_document(file, name))
    return documents

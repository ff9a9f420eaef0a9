"""Reading annotated resume files: every format, auto-detection and named parse problems."""

from __future__ import annotations

import codecs
import json
from pathlib import Path

import pytest

from resume_ner.data.document import Document, Span
from resume_ner.data.readers import detect_format, read_documents
from resume_ner.errors import DataValidationError

TEXT = "Jane Doe\nPython developer at Acme"
SPANS = [Span(0, 8, "Name"), Span(9, 15, "Tech Tools"), Span(29, 33, "Companies worked at")]


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _jsonl(records: list[object]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def _as_tuples(documents: list[Document]) -> list[tuple[str, str, list[Span]]]:
    return [(d.id, d.text, sorted(d.spans)) for d in documents]


def test_doccano_round_trips_and_names_missing_ids(tmp_path: Path) -> None:
    original = Document("7", TEXT, SPANS)
    record = original.to_doccano()
    no_id = {"text": "Bob", "label": [[0, 3, "Name"]]}  # Doccano exports sometimes say "label"
    path = _write(tmp_path / "a.jsonl", _jsonl([{**record, "id": 7}, no_id]))

    result = read_documents(path)

    assert result.format == "doccano" and result.problems == []
    assert _as_tuples(result.documents) == [("7", TEXT, SPANS), ("a.jsonl:2", "Bob", [Span(0, 3, "Name")])]
    assert result.documents[1].source == f"{path}:2"


@pytest.mark.parametrize("as_array", [True, False])
def test_spanjson_reads_array_and_json_lines(tmp_path: Path, as_array: bool) -> None:
    records = [{"id": "r1", "text": TEXT, "annotations": [s.to_list() for s in SPANS]},
               {"id": "r2", "text": "Bob", "annotations": []}]
    content = "[\n" + ",\n".join(json.dumps(r) for r in records) + "\n]\n" if as_array else _jsonl(records)
    path = _write(tmp_path / "spans.json", content)

    result = read_documents(path)

    assert result.format == "spanjson" and result.problems == []
    assert _as_tuples(result.documents) == [("r1", TEXT, SPANS), ("r2", "Bob", [])]
    lines = [2, 3] if as_array else [1, 2]
    assert [d.source for d in result.documents] == [f"{path}:{n}" for n in lines]


def test_dataturks_inclusive_end_becomes_exclusive(tmp_path: Path) -> None:
    records = [
        {"content": TEXT, "annotation": [
            {"label": ["Name"], "points": [{"start": 0, "end": 7, "text": "Jane Doe"}]},
            {"label": "Companies worked at", "points": [{"start": 29, "end": 32, "text": "Acme"}]},
        ]},
        {"content": "No labels here", "annotation": None},
    ]
    path = _write(tmp_path / "dt.json", _jsonl(records))

    result = read_documents(path)

    assert result.format == "dataturks" and result.problems == []
    first, second = result.documents
    assert sorted(first.spans) == [Span(0, 8, "Name"), Span(29, 33, "Companies worked at")]
    assert [first.text[s.start:s.end] for s in sorted(first.spans)] == ["Jane Doe", "Acme"]
    assert second.spans == []


def test_conll_rebuilds_several_documents_and_tolerates_iob1(tmp_path: Path) -> None:
    content = (
        "-DOCSTART- O\n\n"
        "Jane B-NAME\nDoe I-NAME\n\n"
        "Python I-SKILL\nat O\nAcme I-COMPANY\nCorp I-COMPANY\n"
        "-DOCSTART- O\n\n"
        "Bob\tB-NAME\nJava\tI-SKILL\n"
    )
    path = _write(tmp_path / "data.conll", content)

    result = read_documents(path)

    assert result.format == "conll" and result.problems == []
    first, second = result.documents
    assert first.text == "Jane Doe\nPython at Acme Corp"
    assert [(first.text[s.start:s.end], s.label) for s in first.spans] == [
        ("Jane Doe", "NAME"), ("Python", "SKILL"), ("Acme Corp", "COMPANY")]
    assert second.text == "Bob Java"
    assert [(second.text[s.start:s.end], s.label) for s in second.spans] == [("Bob", "NAME"), ("Java", "SKILL")]
    assert first.source == f"{path}:3" and second.source == f"{path}:12"


@pytest.mark.parametrize(("name", "content", "expected"), [
    ("a.jsonl", '{"text": "x", "labels": []}\n', "doccano"),
    ("a.jsonl", '\n{"id": 1, "text": "x", "label": []}\n', "doccano"),
    ("a.json", '[{"text": "x", "annotations": []}]', "spanjson"),
    ("a.jsonl", '{"text": "x", "annotations": []}\n', "spanjson"),
    ("a.json", '{"content": "x", "annotation": null}\n', "dataturks"),
    ("a.txt", "Jane\tB-NAME\nDoe\tI-NAME\n", "conll"),
    ("a.conll", "-DOCSTART- -X- O O\n\nJane NNP B-NAME\n", "conll"),
])
def test_detect_format_from_content(tmp_path: Path, name: str, content: str, expected: str) -> None:
    assert detect_format(_write(tmp_path / name, content)) == expected


def test_forced_format_overrides_detection(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.jsonl", '{"text": "Bob", "annotations": [[0, 3, "Name"]]}\n')
    result = read_documents(path, fmt="doccano")
    assert result.format == "doccano"
    assert any("'labels' missing" in p.message for p in result.problems)


def test_bad_json_line_is_named_and_other_lines_still_read(tmp_path: Path) -> None:
    good = json.dumps({"id": 1, "text": "Bob", "labels": []})
    path = _write(tmp_path / "a.jsonl", f"{good}\n{{\"id\": 2, \"text\": \n{good.replace('1', '3')}\n")

    result = read_documents(path)

    assert [d.id for d in result.documents] == ["1", "3"]
    assert [(p.file, p.line) for p in result.problems] == [(str(path), 2)]
    assert "invalid JSON" in result.problems[0].message


def test_invalid_utf8_line_is_named(tmp_path: Path) -> None:
    good = json.dumps({"text": "Bob", "labels": []}).encode()
    path = tmp_path / "a.jsonl"
    path.write_bytes(good + b"\n" + b'{"text": "caf\xe9", "labels": []}\n')

    result = read_documents(path)

    assert len(result.documents) == 1
    assert [(p.line, "UTF-8" in p.message) for p in result.problems] == [(2, True)]


def test_malformed_fields_and_spans_are_problems(tmp_path: Path) -> None:
    records = [
        {"id": 1, "text": 5, "labels": []},
        {"id": 2, "text": "Bob Smith", "labels": [[0, 3, "Name"], [4, "9", "Name"], [4, 9]]},
        {"id": [3], "text": "Ann", "labels": []},
    ]
    result = read_documents(_write(tmp_path / "a.jsonl", _jsonl(records)))

    assert [(p.line, p.doc_id) for p in result.problems] == [(1, "1"), (2, "2"), (2, "2"), (3, None)]
    assert "'text' must be a string" in result.problems[0].message
    assert "item 1" in result.problems[1].message and "item 2" in result.problems[2].message
    assert [d.id for d in result.documents] == ["2", "a.jsonl:3"]
    assert result.documents[0].spans == [Span(0, 3, "Name")]


@pytest.mark.parametrize(("content", "fmt", "message"), [
    (None, "auto", "file not found"),
    ("", "auto", "file is empty"),
    ("\n  \n", "auto", "file is empty"),
    ("just some prose\n", "auto", "neither JSON nor CoNLL"),
    ('{"foo": 1}\n', "auto", "cannot tell the format"),
    ('{"text": "x", "labels": []}\n', "xml", "unknown format"),
])
def test_file_level_problems_raise_data_validation_error(
    tmp_path: Path, content: str | None, fmt: str, message: str
) -> None:
    path = tmp_path / "a.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataValidationError) as info:
        read_documents(path, fmt=fmt)
    assert message in str(info.value) and str(path) in str(info.value)


def test_bad_item_in_json_array_is_named_by_line(tmp_path: Path) -> None:
    content = '[\n{"id": "a", "text": "Bob", "annotations": []},\n{"id": "b", "text": \n]\n'
    result = read_documents(_write(tmp_path / "a.json", content), fmt="spanjson")
    assert [d.id for d in result.documents] == ["a"]
    assert [(p.line, "invalid JSON" in p.message) for p in result.problems] == [(4, True)]


def test_empty_file_is_an_error_even_with_a_forced_format(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="file is empty"):
        read_documents(_write(tmp_path / "a.conll", "\n\n"), fmt="conll")


@pytest.mark.parametrize(("bom", "codec"), [
    (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"), (codecs.BOM_UTF32_LE, "utf-32-le"),
], ids=["utf-16-le", "utf-16-be", "utf-32-le"])
def test_utf16_and_utf32_files_with_a_byte_order_mark_are_read(tmp_path: Path, bom: bytes, codec: str) -> None:
    records = [{"id": "zoë", "text": "Zoë Doe\r\nPython", "labels": [[0, 7, "Name"]]}]
    path = tmp_path / "a.jsonl"
    path.write_bytes(bom + _jsonl(records).replace("\n", "\r\n").encode(codec))

    result = read_documents(path)

    assert detect_format(path) == "doccano" and result.problems == []
    assert _as_tuples(result.documents) == [("zoë", "Zoë Doe\r\nPython", [Span(0, 7, "Name")])]


@pytest.mark.parametrize(("content", "message"), [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "is not a text file (binary data at byte 9)"),
    (b"PK\x03\x04" + bytes(range(128, 256)) * 4, "is not a text file (binary data at byte 3)"),
    ('{"text": "x", "labels": []}\n'.encode("utf-16-le"), "looks like UTF-16 text without a byte order mark"),
    ('Jane B-Name\n'.encode("utf-16-be"), "looks like UTF-16 text without a byte order mark"),
    (codecs.BOM_UTF16_LE + b"{\x00\x00\xd8", "is UTF-16 text (byte order mark FF FE) but byte 5 is not valid "
                                             "UTF-16; save it as UTF-8"),
], ids=["png", "zip", "utf-16-le-without-bom", "utf-16-be-without-bom", "broken-utf-16"])
@pytest.mark.parametrize("fmt", ["auto", "conll"])
def test_binary_and_bom_less_utf16_files_are_named_as_such(tmp_path: Path, content: bytes, message: str,
                                                            fmt: str) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataValidationError) as info:
        read_documents(path, fmt=fmt)
    assert f"{path}: {message}" in str(info.value)


def test_a_latin1_file_is_text_with_its_lines_named(tmp_path: Path) -> None:
    path = tmp_path / "a.conll"
    path.write_bytes("Zoë B-Name\nDoe I-Name\n\nat O\nCafé B-Company\n".encode("latin-1"))
    result = read_documents(path)
    assert [(p.line, "not valid UTF-8" in p.message) for p in result.problems] == [(1, True), (5, True)]

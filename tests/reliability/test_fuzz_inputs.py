"""Fuzzed input: every reader and the config loader give a result or an error naming the place, nothing else.

Hypothesis writes arbitrary bytes, JSON values, nearly valid records and CoNLL-like lines to a file and loads it
the way every command does (``load_documents``: read, then validate) in each format and with ``auto``; it
writes YAML text and bytes to the config files and passes ``--set`` overrides to ``config.load``. The only
outcomes allowed are a result, a ``DataValidationError`` whose every problem names the file (and a line of
it where there is one), or a ``ConfigError`` naming the file or the key. Any other exception is a bug; a
slow example fails the deadline, a hang the timeout. Derandomized and without a database, so every run
tries the same examples: 560 for each reader and for ``auto``, 613 for the config loader.
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from resume_ner.config import DEFAULT_LABEL_MAP, SECTION_FILES, DataConfig, ResumeNerConfig, load
from resume_ner.data.dataset import load_documents
from resume_ner.data.document import Document
from resume_ner.errors import ConfigError, DataValidationError

pytestmark = pytest.mark.timeout(600)

FORMATS = ("auto", "doccano", "spanjson", "dataturks", "conll")

# Examples share the function-scoped fixtures safely: the counter adds to a global tally, and each example
# overwrites the one file it writes under tmp_path.
_FUZZ = settings(
    database=None,
    derandomize=True,
    deadline=timedelta(seconds=2),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Problems about the whole file, the only ones without a line.
_WHOLE_FILE_PROBLEMS = ("is not a text file", "looks like UTF-16", "is UTF-16 text", "is UTF-32 text", "file is empty",
                        "no documents found")

_EDGE_CHARS = ["\ufeff", "\r", "\n", "\t", "\x00", "\x1c", "\x85", "\u00a0", "\u2028", "\u3000", "\ufffd", "\U0001f600"]
_CHARS = st.characters() | st.characters(categories=["Cs"]) | st.sampled_from(_EDGE_CHARS)
_TEXT = st.text(alphabet=_CHARS, max_size=30)
_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(alphabet=_CHARS, max_size=10)
_JSON = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(alphabet=_CHARS, max_size=8), children,
                                                                      max_size=4),
    max_leaves=12,
)
_HUGE_INTS = st.sampled_from([2**63, -(2**63), 10**4300 - 1, -(10**4300 - 1)])
_LABELS = (st.sampled_from(sorted(DEFAULT_LABEL_MAP) + sorted(set(DEFAULT_LABEL_MAP.values())))
           | st.text(alphabet=_CHARS, max_size=10) | _SCALARS)

_BYTE_PIECES = [
    b"{", b"}", b"[", b"]", b",", b":", b'"', b'"text"', b'"labels"', b'"label"', b'"annotations"', b'"content"',
    b'"annotation"', b'"points"', b'"start"', b'"end"', b'"id"', b'"Name"', b"0", b"-1", b"7", b"1e999", b"NaN",
    b"-Infinity", b"null", b"true", b"9" * 5000, b"\n", b"\r\n", b" ", b"\t", b"\xef\xbb\xbf", b"\xff\xfe", b"\xff",
    b"\xed\xa0\x80", b'"\\ud800"', b"\xc2\xa0", b"\xe3\x80\x80", b"\x1c", b"\x00", b"O", b"B-NAME", b"I-NAME",
    b"-DOCSTART-", b"abc",
]
_BYTES = st.binary(max_size=200) | st.lists(st.sampled_from(_BYTE_PIECES), max_size=40).map(b"".join)


def _nested_labels(depth: int) -> bytes:
    """A doccano record whose one span item is ``depth`` nested lists."""
    return b'{"text": "Jane Doe", "labels": [' + b"[" * depth + b"]" * depth + b"]}\n"


_RECURSION_LIMIT = sys.getrecursionlimit()


@st.composite
def _records(draw: st.DrawFn, kind: str, clean: bool) -> Any:
    """A record of ``kind`` (``junk``: any JSON value): clean (a text, spans of known labels inside it, maybe
    overlapping), or with the right keys and values right, wrong or absurd."""
    text = draw(_TEXT.filter(str.strip) if clean else _TEXT)
    if clean:
        labels = st.sampled_from(sorted(DEFAULT_LABEL_MAP))
        bounds = st.integers(0, len(text) - 1).flatmap(lambda start: st.tuples(st.just(start),
                                                                              st.integers(start + 1, len(text))))
        triple = st.tuples(bounds, labels).map(lambda t: [*t[0], t[1]])
        point = triple.map(lambda t: {"start": t[0], "end": t[1] - 1})  # inclusive end
        text_value, ids = st.just(text), {}
        triples = st.lists(triple, max_size=3)
        item = st.fixed_dictionaries({"label": labels, "points": st.lists(point, min_size=1, max_size=2)})
        annotation = st.lists(item, max_size=3)
    else:
        offset = st.integers(-2, len(text) + 2) | st.integers() | _HUGE_INTS | _SCALARS
        point = st.fixed_dictionaries({"start": offset, "end": offset}) | _JSON
        text_value, ids = st.just(text) | st.just(text) | _JSON, {"id": st.integers() | _TEXT | _JSON}
        triples = st.lists(st.tuples(offset, offset, _LABELS).map(list) | _JSON, max_size=4) | _JSON
        item = st.fixed_dictionaries({"label": _LABELS | st.lists(_LABELS, max_size=2),
                                      "points": st.lists(point, max_size=3) | _JSON}) | _JSON
        annotation = st.lists(item, max_size=3) | st.none() | _JSON
    if kind == "doccano":
        key = draw(st.sampled_from(["labels", "label"]))
        return draw(st.fixed_dictionaries({"text": text_value, key: triples}, optional=ids))
    if kind == "spanjson":
        return draw(st.fixed_dictionaries({"text": text_value, "annotations": triples}, optional=ids))
    if kind == "dataturks":
        return draw(st.fixed_dictionaries({"content": text_value, "annotation": annotation}, optional=ids))
    return draw(_JSON)


@st.composite
def _json_files(draw: st.DrawFn) -> bytes:
    """Clean records of one format, or records of any format and junk, some repeated, as JSON lines or one JSON
    array, ASCII-escaped or raw, with CRLF, BOM and blank lines."""
    kinds = ["doccano", "spanjson", "dataturks"]
    if draw(st.booleans()):
        kind = draw(st.sampled_from(kinds))
        records = draw(st.lists(_records(kind, clean=True), min_size=1, max_size=4))
    else:
        kind_records = st.sampled_from([*kinds, "junk"]).flatmap(lambda kind: _records(kind, clean=False))
        records = draw(st.lists(kind_records, min_size=1, max_size=4))
    records += records[:draw(st.integers(0, 2))]
    ensure_ascii = draw(st.booleans())
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    if draw(st.booleans()):
        text = json.dumps(records, ensure_ascii=ensure_ascii, indent=draw(st.sampled_from([None, 1])))
        text = text.replace("\n", newline)
    else:
        lines = [json.dumps(r, ensure_ascii=ensure_ascii) for r in records]
        lines += [""] * draw(st.integers(0, 2))
        text = newline.join(draw(st.permutations(lines)))
    bom = "\ufeff" if draw(st.booleans()) else ""
    return (bom + text).encode("utf-8", "surrogatepass")


_TOKEN = st.text(alphabet=_CHARS, min_size=1, max_size=8)
_TAG = st.sampled_from(["O", "B-NAME", "I-NAME", "B-Name", "I-SKILL", "B-", "I-", "B", "X-NAME", "o"]) | _TOKEN
_CONLL_LINE = (
    st.tuples(_TOKEN, st.lists(_TOKEN, max_size=2), _TAG, st.sampled_from([" ", "\t"]))
    .map(lambda t: t[3].join([t[0], *t[1], t[2]]))
    | st.sampled_from(["", "-DOCSTART- -X- O O", "-DOCSTART-", "   "])
    | _TOKEN
)


@st.composite
def _conll_files(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(_CONLL_LINE, min_size=1, max_size=12))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    bom = "\ufeff" if draw(st.booleans()) else ""
    return (bom + newline.join(lines)).encode("utf-8", "surrogatepass")


_DATA_CONFIGS = st.builds(
    DataConfig,
    label_map=st.sampled_from([DEFAULT_LABEL_MAP, {}]),
    on_overlap=st.sampled_from(["error", "keep-longest"]),
    on_duplicate=st.sampled_from(["warn", "error"]),
)


def _check_load(path: Path, data: bytes, fmt: str, data_config: DataConfig) -> None:
    """Loading ``data`` gives valid documents or a ``DataValidationError`` whose every problem names the place."""
    path.write_bytes(data)
    try:
        documents = load_documents(path, data_config.model_copy(update={"format": fmt}))
    except DataValidationError as exc:
        _check_problems(exc, path, data)
    else:
        _check_documents(documents, data_config.label_map)


def _check_problems(exc: DataValidationError, path: Path, data: bytes) -> None:
    message = str(exc)
    assert exc.problems
    lines = data.count(b"\n") + 1
    for problem in exc.problems:
        assert problem.file == str(path), problem
        if problem.line is None:
            assert problem.doc_id is None and problem.message.startswith(_WHOLE_FILE_PROBLEMS), problem
        else:
            assert 1 <= problem.line <= lines, problem
    for problem in exc.problems[:exc.max_shown]:
        assert str(problem) in message


def _check_documents(documents: list[Document], label_map: dict[str, str]) -> None:
    assert documents
    for document in documents:
        assert isinstance(document.text, str) and document.text.strip()
        for span in document.spans:
            assert 0 <= span.start < span.end <= len(document.text) and isinstance(span.label, str)
            assert not label_map or span.label in label_map.values()


@pytest.mark.parametrize("fmt", FORMATS)
@settings(_FUZZ, max_examples=200)
@given(data=_BYTES, data_config=_DATA_CONFIGS)
@example(data=b"\xc2\xa0\n", data_config=DataConfig())
@example(data=b"\x1c", data_config=DataConfig())
@example(data=b"[" * 100_000, data_config=DataConfig())
@example(data=b'{"text": ' * 50_000, data_config=DataConfig())
@example(data=b'{"text": "a", "labels": [[0, ' + b"9" * 5000 + b', "Name"]]}', data_config=DataConfig())
@example(data=b'[{"text": "a", "labels": [[0, ' + b"9" * 5000 + b', "Name"]]}]', data_config=DataConfig())
@example(data=_nested_labels(_RECURSION_LIMIT - 50), data_config=DataConfig())
@example(data=_nested_labels(_RECURSION_LIMIT - 10), data_config=DataConfig())
@example(data=b'{"content": "Jane", "annotation": [{"label": "Name", "points": [{"start": 0, "end": '
         + b"9" * 4300 + b"}]}]}", data_config=DataConfig())
def test_any_bytes_load_or_raise_a_named_problem(tmp_path: Path, reliability_counter, fmt: str, data: bytes,
                                                  data_config: DataConfig) -> None:
    reliability_counter("fuzz examples", 1)
    _check_load(tmp_path / "résumés: fuzz.jsonl", data, fmt, data_config)


@pytest.mark.parametrize("fmt", FORMATS)
@settings(_FUZZ, max_examples=250)
@given(data=_json_files(), data_config=_DATA_CONFIGS)
def test_nearly_valid_json_records_load_or_raise_a_named_problem(tmp_path: Path, reliability_counter, fmt: str,
                                                                 data: bytes, data_config: DataConfig) -> None:
    reliability_counter("fuzz examples", 1)
    _check_load(tmp_path / "résumés: fuzz.json", data, fmt, data_config)


@pytest.mark.parametrize("fmt", FORMATS)
@settings(_FUZZ, max_examples=100)
@given(data=_conll_files(), data_config=_DATA_CONFIGS)
def test_conll_like_lines_load_or_raise_a_named_problem(tmp_path: Path, reliability_counter, fmt: str, data: bytes,
                                                        data_config: DataConfig) -> None:
    reliability_counter("fuzz examples", 1)
    _check_load(tmp_path / "résumés: fuzz.conll", data, fmt, data_config)


_FIELDS = {section: list(ResumeNerConfig.model_fields[section].annotation.model_fields) for section in SECTION_FILES}
_KEYS = sorted(f"{section}.{name}" for section, names in _FIELDS.items() for name in names)
_YAML_PIECES = [
    "a: ", "- ", "&a ", "*a", "!!int ", "!!float ", "!!binary ", "!!python/object:os.system ", "2001-02-30",
    "2001-02-03", "{", "}", "[", "]", "? ", "<<: ", ":", ",", "\n", "\n  ", "'", '"', "0x", "1e999", ".nan", "~",
    "%YAML 1.1\n", "---\n", "...\n", "9" * 5000, "\t", "\ufeff", "\x85", "epochs: ", "learning_rate: ", "format: ",
]
_YAML_TEXT = st.lists(st.sampled_from(_YAML_PIECES) | _TEXT, max_size=25).map("".join)
_YAML_VALUES = _JSON | st.dates() | st.datetimes() | _HUGE_INTS
# Past the recursion limit of PyYAML's composer; deeper costs seconds (its scanner is quadratic in flow depth).
_YAML_DEPTH = 1_000
# Nine anchors, each a list of ten aliases of the one before: 10**9 leaves if anything expanded it.
_BILLION_LAUGHS = "[" + ", ".join(
    ["&a [" + ", ".join(["x"] * 10) + "]"]
    + [f"&{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]" for i in range(8)]
) + "]"


@st.composite
def _config_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """A section file name and its bytes: arbitrary, YAML-ish text, or settings of the right names and wrong values."""
    section = draw(st.sampled_from(sorted(SECTION_FILES)))
    kind = draw(st.sampled_from(["bytes", "text", "settings"]))
    if kind == "bytes":
        content = draw(_BYTES)
    elif kind == "text":
        content = draw(_YAML_TEXT).encode("utf-8", "surrogatepass")
    else:
        keys = st.sampled_from(_FIELDS[section]) | st.text(alphabet=_CHARS, max_size=8)
        settings_ = draw(st.dictionaries(keys, _YAML_VALUES, max_size=4))
        text = yaml.safe_dump(settings_, allow_unicode=draw(st.booleans()))
        content = text.encode("utf-8", "surrogatepass")
    return SECTION_FILES[section], content


@settings(_FUZZ, max_examples=300)
@given(file=_config_files())
@example(file=("train.yaml", b"epochs: 2001-02-30\n"))
@example(file=("train.yaml", b"epochs: " + b"9" * 5000 + b"\n"))
@example(file=("train.yaml", b"epochs: !!int abc\n"))
@example(file=("train.yaml", b"learning_rate: !!float x\n"))
@example(file=("hpo.yaml", b"[" * _YAML_DEPTH))
@example(file=("hpo.yaml", b"search_space: {x: {values: " + b"[" * _YAML_DEPTH + b"}}"))
@example(file=("train.yaml", f"laughs: {_BILLION_LAUGHS}\n".encode()))
@example(file=("hpo.yaml", f"search_space: {{x: {{values: {_BILLION_LAUGHS}}}}}\n".encode()))
def test_any_config_file_loads_or_raises_a_config_error_naming_it(tmp_path: Path, reliability_counter,
                                                                  file: tuple[str, bytes]) -> None:
    reliability_counter("fuzz examples", 1)
    name, content = file
    config_dir = tmp_path / "config"
    config_dir.mkdir(exist_ok=True)
    for old in config_dir.iterdir():
        old.unlink()
    (config_dir / name).write_bytes(content)
    section = next(s for s, n in SECTION_FILES.items() if n == name)
    try:
        config = load(config_dir)
    except ConfigError as exc:
        message = str(exc)
        assert f"{config_dir / name}: " in message or f"{config_dir}: {section}" in message, message
    else:
        assert isinstance(config, ResumeNerConfig)


_OVERRIDE_KEYS = (st.sampled_from(_KEYS + ["data", "hpo.search_space.x.type", "pipeline.resources.load_data.cpu_limit",
                                           "nope", "training.nope.deeper", "..", ".", "a..b", " training.epochs "])
                  | st.text(alphabet=_CHARS, max_size=12))
_OVERRIDE_VALUES = _TEXT | _YAML_TEXT | _YAML_VALUES.map(lambda v: json.dumps(v, default=str))
_OVERRIDES = st.tuples(_OVERRIDE_KEYS, _OVERRIDE_VALUES).map("=".join) | _TEXT


@settings(_FUZZ, max_examples=300)
@given(overrides=st.lists(_OVERRIDES, min_size=1, max_size=3))
@example(overrides=["training.epochs=2001-02-30"])
@example(overrides=["training.epochs=" + "9" * 5000])
@example(overrides=["hpo.search_space=" + "[" * _YAML_DEPTH])
@example(overrides=["training.epochs=!!int abc"])
@example(overrides=["data.validation_fraction=0.6", "data.test_fraction=0.6"])
def test_any_override_loads_or_raises_a_config_error_naming_it(reliability_counter, overrides: list[str]) -> None:
    reliability_counter("fuzz examples", 1)
    try:
        config = load(None, overrides)
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith("invalid configuration:\n  --set "), message
        assert "defaults" not in message or any("defaults" in item for item in overrides), message
        for problem in message[len("invalid configuration:\n  "):].split("\n  --set ")[1:]:
            assert any(problem.startswith(item) for item in overrides), (problem, overrides)
        assert any(message[len("invalid configuration:\n  "):].startswith(f"--set {item}") for item in overrides)
    else:
        assert isinstance(config, ResumeNerConfig)

"""The synthetic generator's vocabularies are packaged data files that ship in the wheel and keep its output stable."""

from __future__ import annotations

import ast
import fnmatch
import hashlib
import json
import tomllib
from importlib import resources
from pathlib import Path

import pytest

from resume_ner.data import synth
from resume_ner.data.synth import generate_resumes

REPO = Path(__file__).resolve().parents[3]
VOCAB = resources.files("resume_ner.data") / "vocab"

# sha256 of json.dumps([d.to_doccano() for d in generate_resumes(n, seed)]), computed before the word lists moved
# out of synth.py (Faker 40.63.0, as in requirements.lock; another Faker version may change the documents).
DIGESTS = {
    (300, 11): "89a564067af0f49be6f48f536e6a5ecdf2169db33732566f90b1536ae028e994",
    (40, 0): "f2141821c0ffddef9b03724735e92bd9f9056bf3b65061604999df293877f80f",
}


def _loaded_names() -> set[str]:
    """The file names that synth.py passes to its loaders, ``_lines("x.txt")`` and ``_json("x.json")``."""
    tree = ast.parse(Path(synth.__file__).read_text(encoding="utf-8"))
    return {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("_lines", "_json")
        and node.args
        and isinstance(node.args[0], ast.Constant)
    }


NAMES = sorted(_loaded_names())


def test_the_loader_names_every_file_of_the_directory_and_no_other() -> None:
    assert len(NAMES) >= 20
    assert all(name.endswith((".txt", ".json")) for name in NAMES)
    assert sorted(entry.name for entry in VOCAB.iterdir() if not entry.name.startswith(".")) == NAMES


def test_the_files_are_package_data_of_the_wheel() -> None:
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"][
        "package-data"
    ]["resume_ner"]
    for name in NAMES:
        assert any(fnmatch.fnmatch(f"data/vocab/{name}", p) for p in patterns), (name, patterns)


@pytest.mark.parametrize("name", NAMES)
def test_vocabulary_file_is_clean_utf8(name: str) -> None:
    path = VOCAB / name
    assert path.is_file(), name
    text = path.read_bytes().decode("utf-8")  # strict: raises on anything else
    assert not text.startswith("\ufeff") and "\r" not in text and text.endswith("\n") and not text.endswith("\n\n")
    lines = text[:-1].split("\n")
    assert text.splitlines() == lines  # no other line separators inside an item
    if name.endswith(".txt"):
        assert lines and all(line and line == line.strip() for line in lines), name
    else:
        assert all(line.strip() and line == line.rstrip() for line in lines), name
        strings: list[str] = []

        def walk(value: object) -> None:
            if isinstance(value, str):
                strings.append(value)
            elif isinstance(value, dict):
                for key, item in value.items():
                    walk(key)
                    walk(item)
            elif isinstance(value, list):
                for item in value:
                    walk(item)

        walk(json.loads(text))
        assert strings and all(s and s == s.strip() for s in strings), name


def test_tracks_file_holds_the_weighted_tracks_in_order() -> None:
    tracks = json.loads((VOCAB / "tracks.json").read_text(encoding="utf-8"))
    assert list(tracks) == list(synth._TRACK_SHARES)
    assert all(set(track) == {"designations", "skills", "tools"} for track in tracks.values())


def test_public_vocabularies_are_tuples_of_strings() -> None:
    for name in ("COLLEGE_PATTERNS", "COMPANY_SUFFIXES", "DEGREES", "DESIGNATIONS", "JOB_SKILLS", "SOFT_SKILLS"):
        value = getattr(synth, name)
        assert isinstance(value, tuple) and value and all(isinstance(v, str) for v in value), name
    assert isinstance(synth.TECH_TOOLS, tuple) and synth.TECH_TOOLS


@pytest.mark.parametrize(("n", "seed"), sorted(DIGESTS))
def test_output_matches_the_stored_digest(n: int, seed: int) -> None:
    text = json.dumps([doc.to_doccano() for doc in generate_resumes(n, seed)])
    assert hashlib.sha256(text.encode("utf-8")).hexdigest() == DIGESTS[(n, seed)]

"""Packaged backbones: a split archive joined from installed wheel parts, its pinned hash, atomic assembly, clear
errors; the real MPNet when `make backbone-mpnet` has installed it; the layer cut of model.num_layers."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest

from resume_ner.config import ModelConfig
from resume_ner.data.labels import LabelScheme
from resume_ner.errors import ModelLoadError
from resume_ner.training import backbones
from resume_ner.training.backbones import (
    ASSEMBLY_RECORD,
    MPNET,
    SplitArchiveBackbone,
    assemble_backbone,
    packaged_backbone_path,
)
from resume_ner.training.model import create_model_and_tokenizer, resolve_backbone

MODEL_FILES = {"config.json": b'{"model_type": "bert"}', "model.safetensors": b"\x00" * 5000, "tokenizer.json": b"{}"}


def _archive() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        for name, data in MODEL_FILES.items():
            zipped.writestr(f"fake/{name}", data)
        zipped.writestr("fake/pytorch_model.bin", b"pickle")  # in the archive, never extracted
        zipped.writestr("fake/desktop.ini", b"noise")
    return buffer.getvalue()


@pytest.fixture
def fake_parts(tmp_path, monkeypatch):
    """Three installed distributions (dist-info on sys.path) that hold one zip archive cut in three, and a spec."""
    site = tmp_path / "site"
    data = _archive()
    cut = [data[:2000], data[2000:4000], data[4000:]]
    parts = []
    for i, chunk in enumerate(cut, start=1):
        distribution, part = f"fake-backbone-part-{i}", f"fake_backbone_part_{i}/input/fake.zip.{i:03d}"
        info = site / f"fake_backbone_part_{i}-0.0.1.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 0.0.1\n")
        (site / part).parent.mkdir(parents=True)
        (site / part).write_bytes(chunk)
        parts.append((distribution, part))
    spec = SplitArchiveBackbone(
        name="fake-backbone",
        parts=tuple(parts),
        archive_sha256=hashlib.sha256(data).hexdigest(),
        directory_in_archive="fake",
        files=tuple(MODEL_FILES),
        install_command="make backbone-fake",
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setitem(backbones.SPLIT_ARCHIVE_BACKBONES, spec.name, spec)
    monkeypatch.setenv(backbones.BACKBONES_DIR_ENV, str(tmp_path / "backbones"))
    return site, spec


def test_assembly_joins_the_parts_and_extracts_only_the_model_files(fake_parts, tmp_path):
    directory = assemble_backbone("fake-backbone")
    assert directory == tmp_path / "backbones" / "fake-backbone"
    assert {p.name for p in directory.iterdir()} == {*MODEL_FILES, ASSEMBLY_RECORD}
    for name, data in MODEL_FILES.items():
        assert (directory / name).read_bytes() == data
    assert json.loads((directory / ASSEMBLY_RECORD).read_text())["archive_sha256"] == fake_parts[1].archive_sha256
    assert packaged_backbone_path("packaged:fake-backbone") == directory
    assert resolve_backbone("packaged:fake-backbone") == str(directory)
    assert [p.name for p in directory.parent.iterdir()] == ["fake-backbone"]  # no scratch left behind


def test_an_assembled_backbone_is_kept_as_it_is(fake_parts):
    directory = assemble_backbone("fake-backbone")
    weights = directory / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert assemble_backbone("fake-backbone") == directory
    assert weights.stat().st_mtime_ns == before


def test_a_damaged_part_is_refused_and_nothing_is_written(fake_parts, tmp_path):
    site, spec = fake_parts
    part = site / spec.parts[1][1]
    part.write_bytes(part.read_bytes()[:-1] + b"?")
    with pytest.raises(ModelLoadError, match="not the pinned.*make backbone-fake"):
        assemble_backbone("fake-backbone")
    assert list((tmp_path / "backbones").iterdir()) == []


def test_a_missing_part_names_the_package_and_the_install_command(fake_parts):
    site, spec = fake_parts
    for info in site.glob("fake_backbone_part_3-*.dist-info"):
        (info / "METADATA").unlink()
        info.rmdir()
    with pytest.raises(ModelLoadError, match="fake-backbone-part-3, which is not installed: run `make backbone-fake`"):
        assemble_backbone("fake-backbone")


def test_an_unassembled_backbone_says_how_to_install_it(fake_parts):
    with pytest.raises(ModelLoadError, match="not assembled.*make backbone-fake"):
        resolve_backbone("packaged:fake-backbone")


def test_a_partly_deleted_assembly_counts_as_missing(fake_parts):
    directory = assemble_backbone("fake-backbone")
    (directory / "tokenizer.json").unlink()
    with pytest.raises(ModelLoadError, match="not assembled"):
        packaged_backbone_path("packaged:fake-backbone")
    assert (assemble_backbone("fake-backbone") / "tokenizer.json").is_file()


def test_an_unknown_packaged_name_lists_the_known_ones():
    with pytest.raises(ModelLoadError, match="packaged:all-MiniLM-L6-v2, packaged:all-mpnet-base-v2"):
        resolve_backbone("packaged:bert-large")


def test_the_mpnet_parts_are_pinned_in_the_lock_file():
    lock = (Path(__file__).parents[3] / "requirements-mpnet.lock").read_text()
    pinned = [line for line in lock.splitlines() if line and not line.startswith("#")]
    assert [line.split("==")[0] for line in pinned] == [distribution for distribution, _ in MPNET.parts]
    assert all("--hash=sha256:" in line for line in pinned)


def _mpnet_installed() -> bool:
    try:
        packaged_backbone_path("packaged:all-mpnet-base-v2")
    except ModelLoadError:
        return False
    return True


@pytest.mark.skipif(not _mpnet_installed(), reason="MPNet is not assembled here: make backbone-mpnet")
def test_the_real_mpnet_loads_cut_to_two_layers_from_safetensors():
    """`make backbone-mpnet` (run by .ci/run) installs the real parts; the assembled model loads offline."""
    scheme = LabelScheme.from_types(["SKILL"])
    model, tokenizer = create_model_and_tokenizer(
        ModelConfig(backbone="packaged:all-mpnet-base-v2", num_layers=2), scheme
    )
    assert model.config.model_type == "mpnet" and model.config.hidden_size == 768
    assert len(model.mpnet.encoder.layer) == 2
    encoded = tokenizer("Python and SQL", return_offsets_mapping=True)
    assert encoded["offset_mapping"][1] == (0, 6)
    assert not any(
        p.suffix in {".bin", ".pt", ".pth"} for p in Path(resolve_backbone("packaged:all-mpnet-base-v2")).iterdir()
    )


def test_num_layers_keeps_the_first_layers(tiny_backbone):
    scheme = LabelScheme.from_types(["NAME"])
    full, _ = create_model_and_tokenizer(ModelConfig(backbone=str(tiny_backbone)), scheme)
    cut, _ = create_model_and_tokenizer(ModelConfig(backbone=str(tiny_backbone), num_layers=1), scheme)
    assert len(cut.bert.encoder.layer) == 1 < len(full.bert.encoder.layer)
    first_full, first_cut = full.bert.encoder.layer[0].state_dict(), cut.bert.encoder.layer[0].state_dict()
    assert all((first_full[k] == first_cut[k]).all() for k in first_full)


def test_num_layers_beyond_the_backbone_is_refused(tiny_backbone):
    with pytest.raises(ModelLoadError, match="model.num_layers is 99, but backbone .* has only"):
        create_model_and_tokenizer(
            ModelConfig(backbone=str(tiny_backbone), num_layers=99), LabelScheme.from_types(["NAME"])
        )


def test_the_cli_assembles_and_lists_the_packaged_backbones(fake_parts, tmp_path, capsys):
    from resume_ner.cli.main import main

    assert main(["backbone", "assemble", "fake-backbone"]) == 0
    assert (tmp_path / "backbones" / "fake-backbone" / "model.safetensors").is_file()
    capsys.readouterr()
    assert main(["backbone", "list", "--json"]) == 0
    rows = {row["backbone"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["packaged:all-MiniLM-L6-v2"]["path"].endswith("model")
    assert rows["packaged:all-mpnet-base-v2"]["path"] is None  # not in this test's backbones directory
    assert "make backbone-mpnet" in rows["packaged:all-mpnet-base-v2"]["missing"]

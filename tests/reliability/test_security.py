"""Security: weights load from safetensors only (pickle on explicit opt-in, and then never beyond tensors), no
remote code, no credential in any MLflow record or written file, non-root containers, no path traversal.

Covered elsewhere and not repeated here: the committed manifests, Dockerfiles and compiled pipeline hold no
literal credential and the pipeline compiled with secrets in the environment holds none of them
(tests/unit/k8s/test_manifests.py), the PyTorchJob takes the MLflow credentials as Secret references
(tests/unit/k8s/test_pytorchjob.py::test_secrets_are_references_never_values), and the Deployments,
StatefulSets and PyTorchJobs are locked down (test_manifests.py::test_container_is_locked_down). The catch-all
tests below extend the non-root checks to every pod template and every Dockerfile, whatever their kind or name.
"""

from __future__ import annotations

import logging
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from resume_ner.cli.main import main
from resume_ner.config import ModelConfig, config_from_dict, load
from resume_ner.errors import CheckpointError, ConfigError, ModelLoadError
from resume_ner.layout import WEIGHTS_FILE
from resume_ner.training.checkpoint import ALLOW_PICKLE_ENV, PICKLE_WEIGHTS_FILE

REPO = Path(__file__).resolve().parents[2]
SCANNED = [REPO / name for name in ("src", "bench", "images", "components", "pipelines")]
SECRET_ENV = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "AZURE_CLIENT_SECRET", "KFP_TOKEN",
              "AWS_SECRET_ACCESS_KEY")


# --- static scan ------------------------------------------------------------------------------------------------


def _scanned_files() -> list[Path]:
    files = []
    for root in SCANNED:
        for path in sorted(root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".png", ".jpg"):
                files.append(path)
    return files


def _texts() -> Iterator[tuple[str, str]]:
    for path in _scanned_files():
        try:
            yield str(path.relative_to(REPO)), path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue


def _call_arguments(text: str, start: int) -> str:
    """The text between the parenthesis opening at ``start`` and its match."""
    depth = 0
    for index in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[index], 0)
        if depth == 0:
            return text[start + 1 : index]
    return text[start + 1 :]


UNSAFE_PATTERNS = {
    "trust_remote_code other than False": re.compile(r"trust_remote_code[\"']?\s*[=:]\s*(?!False\b)"),
    "weights_only=False": re.compile(r"weights_only\s*=\s*False"),
    "use_safetensors=False": re.compile(r"use_safetensors\s*=\s*False"),
    "pickle load": re.compile(r"\b(?:c?pickle|joblib|dill|cloudpickle)\.loads?\(|\bread_pickle\("),
    "numpy allow_pickle": re.compile(r"allow_pickle\s*=\s*True"),
    "torch.load imported bare": re.compile(r"from\s+torch\s+import\s+[^\n]*\bload\b"),
    "unsafe YAML load": re.compile(r"\byaml\.(?:load|unsafe_load|full_load)\("),
}


def test_the_code_never_trusts_remote_code_nor_unpickles_beyond_tensors():
    files = list(_texts())
    assert any(name.startswith("src/") for name, _ in files) and any(name.startswith("pipelines/") for name, _ in files)
    found = []
    for name, text in files:
        for what, pattern in UNSAFE_PATTERNS.items():
            found += [f"{name}: {what}: {match.group(0)!r}" for match in pattern.finditer(text)]
        for match in re.finditer(r"\btorch\.load\s*\(", text):
            arguments = _call_arguments(text, match.end() - 1)
            if not re.search(r"weights_only\s*=\s*True", arguments):
                found.append(f"{name}: torch.load({arguments}) without weights_only=True")
    assert not found, "\n".join(found)


def test_the_scan_catches_what_it_looks_for():
    samples = ["from_pretrained(x, trust_remote_code=True)", "{'trust_remote_code': True}", "trust_remote_code=flag",
               "torch.load(p, weights_only=False)", "pickle.load(f)", "joblib.load(p)", "np.load(p, allow_pickle=True)",
               "yaml.load(text)", "use_safetensors=False"]
    for sample in samples:
        assert any(p.search(sample) for p in UNSAFE_PATTERNS.values()), sample
    assert not any(p.search("from_pretrained(x, trust_remote_code=False)") for p in UNSAFE_PATTERNS.values())
    assert _call_arguments("torch.load(a, f(b), weights_only=True) + 1", 10) == "a, f(b), weights_only=True"


def test_archive_extraction_writes_only_the_pinned_names():
    """The one extraction (the packaged MPNet, ``training.backbones``) reads members named by its pinned spec and
    writes them under those plain file names, never under a name taken from the archive, so an absolute or ``..``
    member cannot escape; a new extraction anywhere else must reject such members and be tested here."""
    from resume_ner.training.backbones import SPLIT_ARCHIVE_BACKBONES

    pattern = re.compile(r"\b(?:tarfile|zipfile|unpack_archive|extractall|ZipFile|TarFile)\b")
    found = [name for name, text in _texts() if name.endswith(".py") and pattern.search(text)]
    assert found == ["src/resume_ner/training/backbones.py"], f"archive extraction in {found}: check member paths"
    backbones = dict(_texts())["src/resume_ner/training/backbones.py"]
    assert "extractall" not in backbones and "namelist" not in backbones and "infolist" not in backbones
    for spec in SPLIT_ARCHIVE_BACKBONES.values():
        assert all("/" not in name and ".." not in name for name in spec.files)


# --- pickle weights ---------------------------------------------------------------------------------------------


def _to_pickle_only(directory: Path) -> Path:
    """Replace ``model.safetensors`` of a model directory by the same weights as ``pytorch_model.bin``."""
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(directory / WEIGHTS_FILE), directory / PICKLE_WEIGHTS_FILE)
    (directory / WEIGHTS_FILE).unlink()
    return directory


@pytest.fixture(scope="module")
def safe_model_dir(tiny_backbone: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A resume-ner model directory (untrained head on the tiny backbone) with safetensors weights."""
    from resume_ner.config import DataConfig
    from resume_ner.data.labels import scheme_for
    from resume_ner.training.checkpoint import save_model_checkpoint
    from resume_ner.training.model import create_model_and_tokenizer

    scheme = scheme_for(DataConfig().label_map)
    model, tokenizer = create_model_and_tokenizer(ModelConfig(backbone=str(tiny_backbone), max_length=64, stride=16),
                                                  scheme)
    windows = {"max_length": 64, "stride": 16, "label_all_tokens": False}
    metadata = {"label_scheme": scheme.to_dict(), "windows": windows}
    return save_model_checkpoint(tmp_path_factory.mktemp("safe") / "model", model, tokenizer, metadata)


@pytest.fixture
def pickle_model_dir(safe_model_dir: Path, tmp_path: Path) -> Path:
    return _to_pickle_only(Path(shutil.copytree(safe_model_dir, tmp_path / "pickled-model")))


@pytest.fixture
def texts(tmp_path: Path) -> Path:
    path = tmp_path / "resume.txt"
    path.write_text("Jane Doe\nSenior Data Engineer at Contoso, Seattle\nSkills: Python, SQL, Spark\n",
                    encoding="utf-8")
    return path


def _assert_refusal(message: str, directory: Path) -> None:
    assert str(directory) in message and PICKLE_WEIGHTS_FILE in message
    assert "safetensors" in message and f"{ALLOW_PICKLE_ENV}=1" in message


def test_pickle_only_checkpoints_are_refused_by_every_loader(pickle_model_dir: Path, texts: Path, capsys,
                                                             monkeypatch: pytest.MonkeyPatch):
    from resume_ner.inference import Predictor
    from resume_ner.training.checkpoint import load_model_checkpoint

    monkeypatch.delenv(ALLOW_PICKLE_ENV, raising=False)
    for load_it in (lambda: load_model_checkpoint(pickle_model_dir), lambda: Predictor(pickle_model_dir, device="cpu")):
        with pytest.raises(CheckpointError) as caught:
            load_it()
        _assert_refusal(str(caught.value), pickle_model_dir)
    data = _synthetic_file(texts.parent)
    for argv in (["predict", "--model", str(pickle_model_dir), "--device", "cpu", str(texts)],
                 ["evaluate", "--model", str(pickle_model_dir), "--data", str(data)]):
        assert main([*argv, "--quiet"]) == 1, argv
        captured = capsys.readouterr()
        assert captured.err.startswith("error: ") and "Traceback" not in captured.err
        _assert_refusal(captured.err, pickle_model_dir)


def _synthetic_file(directory: Path) -> Path:
    from resume_ner.data.synth import write_synthetic_resumes

    return write_synthetic_resumes(directory / "data", 6, seed=3)


def test_pickle_weights_load_on_opt_in_and_only_as_tensors(pickle_model_dir: Path, safe_model_dir: Path, texts: Path,
                                                           capsys, monkeypatch: pytest.MonkeyPatch):
    import torch

    from resume_ner.inference import Predictor
    from resume_ner.training.checkpoint import load_model_checkpoint

    monkeypatch.setenv(ALLOW_PICKLE_ENV, "1")
    real_load, calls = torch.load, []

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    pickled, _, _ = load_model_checkpoint(pickle_model_dir)
    reference, _, _ = load_model_checkpoint(safe_model_dir)
    assert calls and all(flag is True for flag in calls)
    for (name, value), (_, expected) in zip(pickled.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(value, expected), name
    expected_entities = Predictor(safe_model_dir, device="cpu").predict([texts.read_text(encoding="utf-8")])
    assert Predictor(pickle_model_dir, device="cpu").predict([texts.read_text(encoding="utf-8")]) == expected_entities
    assert main(["predict", "--model", str(pickle_model_dir), "--device", "cpu", "--quiet", str(texts)]) == 0
    assert capsys.readouterr().out.strip()


class _RunsCodeWhenUnpickled:
    """Unpickling this creates ``marker``: what a hostile ``pytorch_model.bin`` could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def test_a_hostile_pickle_never_runs_even_when_opted_in(pickle_model_dir: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch):
    import torch

    from resume_ner.training.checkpoint import load_model_checkpoint

    marker = tmp_path / "pwned"
    torch.save({"weight": _RunsCodeWhenUnpickled(marker)}, pickle_model_dir / PICKLE_WEIGHTS_FILE)
    monkeypatch.delenv(ALLOW_PICKLE_ENV, raising=False)
    with pytest.raises(CheckpointError, match=ALLOW_PICKLE_ENV):
        load_model_checkpoint(pickle_model_dir)
    monkeypatch.setenv(ALLOW_PICKLE_ENV, "1")
    with pytest.raises(CheckpointError, match=f"{PICKLE_WEIGHTS_FILE} is truncated or corrupt"):
        load_model_checkpoint(pickle_model_dir)
    assert not marker.exists()


def test_a_pickle_only_backbone_follows_the_same_rule(tiny_backbone: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch):
    from resume_ner.config import DataConfig
    from resume_ner.data.labels import scheme_for
    from resume_ner.training.model import create_model_and_tokenizer

    backbone = _to_pickle_only(Path(shutil.copytree(tiny_backbone, tmp_path / "pickled-backbone")))
    model_config, scheme = ModelConfig(backbone=str(backbone)), scheme_for(DataConfig().label_map)
    monkeypatch.delenv(ALLOW_PICKLE_ENV, raising=False)
    with pytest.raises(ModelLoadError) as caught:
        create_model_and_tokenizer(model_config, scheme)
    _assert_refusal(str(caught.value), backbone)
    monkeypatch.setenv(ALLOW_PICKLE_ENV, "1")
    model, _ = create_model_and_tokenizer(model_config, scheme)
    assert model.config.num_labels == len(scheme.labels)


# --- planted secrets --------------------------------------------------------------------------------------------


@pytest.fixture
def planted(monkeypatch: pytest.MonkeyPatch) -> str:
    """A random secret, set as every credential variable of the environment."""
    value = f"planted-{secrets.token_hex(12)}"
    for name in SECRET_ENV:
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "planted-user")
    return value


def _files_holding(root: Path, secret: str) -> list[str]:
    return [str(p) for p in sorted(root.rglob("*")) if p.is_file() and secret.encode() in p.read_bytes()]


def test_no_secret_reaches_mlflow_or_the_output_directory(planted: str, tiny_config: dict, tmp_path: Path, caplog,
                                                         capsys):
    from mlflow import MlflowClient

    from resume_ner.data.synth import write_synthetic_resumes
    from resume_ner.workflows.training import run_training_workflow

    store_dir = tmp_path / "store"
    store_dir.mkdir()
    store = f"sqlite:///{(store_dir / 'mlflow.db').as_posix()}"
    credential_uri = f"http://planted-user:{planted}@127.0.0.1:1/"
    raw = {**tiny_config, "training": {**tiny_config["training"], "epochs": 1},
           "tracking": {"enabled": True, "experiment_name": "secrets", "tracking_uri": credential_uri,
                        "tags": {"source": f"https://ci:{planted}@git.example.com/resume-ner.git"}},
           "hpo": {"storage": f"postgresql://optuna:{planted}@db.example.com:5432/optuna?password={planted}"}}
    data = write_synthetic_resumes(tmp_path / "data", 12, seed=5)
    caplog.set_level(logging.INFO)
    outcome = run_training_workflow(config_from_dict(raw), data, tmp_path / "out", tracking_uri=store, quiet=True)
    assert outcome.tracking_lost == [] and outcome.run_id

    client = MlflowClient(store)
    run = client.get_run(outcome.run_id)
    assert run.data.params["tracking.tracking_uri"] == "http://***@127.0.0.1:1/"  # redacted, not dropped
    assert run.data.params["hpo.storage"] == "postgresql://***@db.example.com:5432/optuna?password=***"
    records = [*run.data.params.items(), *run.data.tags.items(), *((k, "") for k in run.data.metrics)]
    assert not [key for key, value in records if planted in key or planted in value]
    downloaded = Path(client.download_artifacts(outcome.run_id, "", str(tmp_path / "artifacts")))
    assert {"config.yaml", "train_result.json", "model"} <= {p.name for p in downloaded.iterdir()}
    assert _files_holding(downloaded, planted) == []
    assert _files_holding(store_dir, planted) == []  # the database and the artifact store
    output = tmp_path / "out"
    assert (output / "model" / "resume_ner.json").is_file() and (output / "config.yaml").is_file()
    assert _files_holding(output, planted) == []
    assert yaml.safe_load((output / "config.yaml").read_text(encoding="utf-8"))["tracking"]["tracking_uri"] == (
        "http://***@127.0.0.1:1/")
    captured = capsys.readouterr()
    assert planted not in caplog.text + captured.out + captured.err


def test_compiled_pipeline_holds_no_secret_of_the_environment_or_the_config(planted: str, tmp_path: Path):
    from resume_ner.kfp.pipelines import compile_all

    config = load(None, [f"tracking.tracking_uri=http://u:{planted}@mlflow:5000",
                         f"hpo.storage=postgresql://optuna:{planted}@db:5432/optuna"])
    written = compile_all(tmp_path / "compiled", config)
    assert len(written) == 6 and _files_holding(tmp_path / "compiled", planted) == []

    with pytest.raises(ConfigError, match=r"pipeline\.mlflow_uri=http://\*\*\*@mlflow:5000") as caught:
        compile_all(tmp_path / "refused", load(None, [f"pipeline.mlflow_uri=http://u:{planted}@mlflow:5000"]))
    assert planted not in str(caught.value) and not (tmp_path / "refused").exists()


def test_rendered_pytorchjob_holds_no_secret_and_refuses_plain_text_credentials(planted: str, tmp_path: Path, capsys):
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "hpo.yaml").write_text(f"storage: postgresql://optuna:{planted}@db:5432/optuna\n", encoding="utf-8")
    render = ["k8s", "pytorchjob", "render", "--config-dir", str(config_dir)]
    assert main(render) == 0
    captured = capsys.readouterr()
    job = yaml.safe_load(captured.out)
    assert job["kind"] == "PyTorchJob" and planted not in captured.out + captured.err

    refused = [[*render, "--set", f"tracking.tracking_uri=http://u:{planted}@mlflow:5000"],  # env MLFLOW_TRACKING_URI
               [*render, "--set", f"data.path=https://u:{planted}@storage.example.com/resumes"]]  # a pod argument
    for argv in refused:
        assert main(argv) == 1
        captured = capsys.readouterr()
        assert captured.out == "" and "holds a credential" in captured.err and "***@" in captured.err
        assert planted not in captured.err


def test_redaction_of_urls_and_settings():
    from resume_ner.redaction import has_credentials, redact_credentials, redact_settings

    assert redact_credentials("https://user:pw@host:5000/api") == "https://***@host:5000/api"
    assert redact_credentials("https://token@host/x") == "https://***@host/x"
    assert redact_credentials("postgresql://u:p@ss@db/x") == "postgresql://***@db/x"
    assert redact_credentials("https://a.blob.core.windows.net/c?sv=1&sig=abc%3D&se=2") == (
        "https://a.blob.core.windows.net/c?sv=1&sig=***&se=2")
    assert redact_credentials("Endpoint=x;AccountName=a;AccountKey=abc==") == "Endpoint=x;AccountName=a;AccountKey=***"
    for clean in ("sqlite:////tmp/mlflow.db", "http://mlflow:5000/a?q=a@b", "file:///mnt/data", "x@y.com"):
        assert redact_credentials(clean) == clean and not has_credentials(clean)
    assert redact_settings({"a": ["http://u:p@h", 1, None], "b": ("s3://k:s@b",)}) == {
        "a": ["http://***@h", 1, None], "b": ("s3://***@b",)}


# --- non-root everywhere (catch-all beyond the kinds and files test_manifests.py lists) --------------------------


def _pod_specs(value: Any) -> Iterator[dict[str, Any]]:
    """Every pod spec (a mapping with ``containers``) anywhere in a manifest, whatever the object's kind."""
    if isinstance(value, dict):
        if isinstance(value.get("containers"), list):
            yield value
        for item in value.values():
            yield from _pod_specs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _pod_specs(item)


def test_every_pod_template_of_the_manifests_runs_as_non_root():
    from resume_ner.k8s.pytorchjob import build_pytorchjob

    documents = [(str(p.relative_to(REPO)), d) for p in sorted((REPO / "manifests").rglob("*.y*ml"))
                 for d in yaml.safe_load_all(p.read_text(encoding="utf-8")) if d]
    documents.append(("build_pytorchjob", build_pytorchjob(load(), name="job", namespace="ns", replicas=2,
                                                           nproc_per_node=1, gpus_per_replica=0, args=[])))
    pods = [(name, pod) for name, doc in documents for pod in _pod_specs(doc)]
    assert len(pods) >= 4
    for name, pod in pods:
        for container in pod.get("initContainers", []) + pod["containers"]:
            own = container.get("securityContext", {})
            non_root = own.get("runAsNonRoot", pod.get("securityContext", {}).get("runAsNonRoot"))
            user = own.get("runAsUser", pod.get("securityContext", {}).get("runAsUser"))
            assert non_root is True and user != 0, f"{name}: container {container['name']} may run as root"
            assert own.get("allowPrivilegeEscalation") is False and not own.get("privileged"), name


def test_every_dockerfile_ends_as_a_non_root_user():
    dockerfiles = sorted(p for p in (REPO / "images").rglob("*") if p.is_file() and p.name.startswith("Dockerfile"))
    assert dockerfiles
    for path in dockerfiles:
        final_stage = path.read_text(encoding="utf-8").rsplit("\nFROM ", 1)[-1]
        users = re.findall(r"^USER\s+(\S+)", final_stage, flags=re.MULTILINE)
        assert users, f"{path.name}: the final stage sets no USER (runs as root)"
        assert users[-1].split(":")[0] not in ("root", "0"), f"{path.name}: USER {users[-1]}"


# --- path traversal in data URIs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("template", ["{base}/../{name}", "file://{base}/../{name}", "file://{base}/%2e%2e/{name}",
                                      "{base}/sub/../../{name}"])
def test_data_uris_with_dot_dot_segments_are_refused(template: str, tmp_path: Path):
    from resume_ner.workflows.steps import local_path, prepare_data

    data = _synthetic_file(tmp_path / "outside")
    base = tmp_path / "volume"
    (base / "sub").mkdir(parents=True)
    uri = template.format(base=base.as_posix(), name="outside/data/resumes.jsonl")
    assert Path(str(base / ".." / "outside" / "data" / "resumes.jsonl")).resolve() == data.resolve()  # it would escape
    with pytest.raises(ConfigError, match=r"'\.\.' segments are not allowed"):
        local_path(uri)
    with pytest.raises(ConfigError, match=r"'\.\.' segments"):
        prepare_data(uri, load(), outputs={s: tmp_path / s for s in ("train", "validation", "test")})
    assert not (tmp_path / "train").exists()


@pytest.mark.parametrize("uri", ["http://example.com/resumes.jsonl", "ftp://example.com/resumes.jsonl",
                                 "hdfs://namenode/resumes", "s3://bucket/resumes.jsonl", "javascript:alert(1)",
                                 "file://otherhost/mnt/resumes.jsonl", "", "   "])
def test_unsupported_or_foreign_data_uris_are_refused(uri: str):
    from resume_ner.workflows.steps import local_path

    with pytest.raises(ConfigError, match="data URI"):
        local_path(uri)


def test_local_data_uris_still_work(tmp_path: Path):
    from resume_ner.workflows.steps import local_path

    data = _synthetic_file(tmp_path)
    assert local_path(str(data)) == data
    assert local_path(data.as_uri()) == data
    assert local_path(f"file://localhost{data.as_posix()}") == data

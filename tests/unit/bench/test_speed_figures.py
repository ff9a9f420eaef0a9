"""The figures behind the speed comparisons: GEMM FLOPs and peaks, model FLOPs, ratios to the best peer setting,
and the baselines' best settings as the installed transformers spells them."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench"
MINILM = {"layers": 6, "hidden": 384, "intermediate": 1536, "labels": 25, "seq_len": 256}


def _load(name: str) -> ModuleType:
    """A bench script as a module (its own directory on sys.path, as when it runs)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


gemm_peak, common, hf_baseline, predict_speed = (_load(name) for name in
                                                  ("gemm_peak", "common", "hf_baseline", "predict_speed"))


def test_a_matrix_multiply_costs_two_flops_per_term() -> None:
    assert gemm_peak.matmul_flops(4096, 384, 1536) == 2 * 4096 * 384 * 1536 == 4_831_838_208
    assert gemm_peak.matmul_flops(1, 1, 1) == 2


def test_the_shapes_are_minilm_layers_over_the_tokens_of_a_batch() -> None:
    assert gemm_peak.shapes(16 * 256) == [(4096, 384, 384), (4096, 384, 1536), (4096, 1536, 384)]


def test_the_bf16_peak_is_the_best_of_both_bf16_modes() -> None:
    measured = [{"mode": "fp32", "gflops": 90.0}, {"mode": "fp32", "gflops": 110.0},
                {"mode": "bf16 autocast", "gflops": 300.0}, {"mode": "bf16 tensors", "gflops": 280.0}]
    assert gemm_peak.peaks(measured) == {"fp32": 110.0, "bf16": 300.0}


def test_a_measured_multiply_reports_its_gflops() -> None:
    result = gemm_peak.measure("bf16 tensors", 64, 32, 16, warmup=1, repeats=3)
    assert result["shape"] == [64, 32, 16] and result["mode"] == "bf16 tensors"
    assert result["gflops"] == pytest.approx(2 * 64 * 32 * 16 / result["median_s"] / 1e9)


def test_model_flops_per_token_of_minilm() -> None:
    # 6 layers x (4 x 384^2 + 2 x 384 x 1536) + 384 x 25 head weights
    assert common.matmul_weights(MINILM) == 6 * (4 * 384 ** 2 + 2 * 384 * 1536) + 384 * 25 == 10_626_432
    forward = common.flops_per_token(MINILM, training=False)
    assert forward == 2 * 10_626_432 + 4 * 6 * 256 * 384 and round(forward / 1e6, 1) == 23.6
    assert common.flops_per_token(MINILM, training=True) == 3 * forward and round(3 * forward / 1e6, 1) == 70.8


def test_the_model_shape_is_read_from_the_backbone_config(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text('{"num_hidden_layers": 6, "hidden_size": 384, "intermediate_size": 1536, "vocab_size": 9}')
    assert common.model_shape(config, labels=25, seq_len=256) == MINILM


def test_ratios_are_against_the_fastest_peer_and_the_fp32_one() -> None:
    peers = {"hf-trainer": 1000.0, "hf-trainer bf16": 1600.0, "hf-trainer bf16 grouped": 1500.0}
    assert common.best_setting(peers) == ("hf-trainer bf16", 1600.0)
    assert common.peer_ratios(2000.0, peers, "hf-trainer") == {"best_peer": "hf-trainer bf16", "ratio": 1.25,
                                                              "ratio_fp32": 2.0}


@pytest.mark.parametrize(("best", "extra"), [(8, None), (16, "hf-pipeline bf16 batch 16"),
                                             (1, "hf-pipeline bf16 batch 1")])
def test_the_pipeline_runs_at_its_fastest_bf16_batch_size_too(best: int, extra: str | None) -> None:
    commands = predict_speed.system_commands(best, {"max_length": 256, "stride": 32})
    pipelines = [name for name in commands if name.startswith("hf-pipeline")]
    assert pipelines == ["hf-pipeline", "hf-pipeline bf16", *([extra] if extra else [])]
    for name in pipelines:  # the pipeline runs over the model's own windows
        assert commands[name][2:6] == ["--max-length", "256", "--stride", "32"]
    assert commands["hf-pipeline"][-4:] == ["--dtype", "fp32", "--batch-size", "1"]
    assert commands["hf-pipeline bf16"][-4:] == ["--dtype", "bf16", "--batch-size", "8"]
    assert list(commands)[0] == "resume-ner" and list(commands)[-1] == predict_speed.ONNX_VARIANT


def test_pipeline_batch_sizes_are_positive_integers() -> None:
    assert predict_speed.batch_sizes("1,8,16") == [1, 8, 16]
    for bad in ("1,x", "0,8", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            predict_speed.batch_sizes(bad)


@pytest.mark.parametrize(("flags", "bf16", "sampling"), [([], False, "random"), (["--bf16"], True, "random"),
                                                         (["--bf16", "--group-by-length"], True, "group_by_length")])
def test_trainer_speed_settings_are_training_arguments(tmp_path: Path, flags: list[str], bf16: bool,
                                                      sampling: str) -> None:
    parser = argparse.ArgumentParser()
    hf_baseline.add_training_options(parser, epochs=1)
    args = parser.parse_args(["--splits", str(tmp_path), "--backbone", str(tmp_path), *flags])
    assert hf_baseline.speed_settings(args) == {"bf16": bf16, "train_sampling_strategy": sampling}
    training_args = hf_baseline.training_arguments(args, str(tmp_path / "out"), evaluate=False)
    assert training_args.bf16 is bf16 and training_args.train_sampling_strategy == sampling and training_args.use_cpu


def test_pipeline_chunk_tokens_count_the_overlap() -> None:
    from resume_ner.config import PACKAGED_BACKBONE
    from resume_ner.training.model import load_fast_tokenizer, resolve_backbone

    tokenizer = load_fast_tokenizer(resolve_backbone(PACKAGED_BACKBONE))
    tokenizer.model_max_length = 32
    short, long = "Jane Doe, data engineer", " ".join(f"skill{i}" for i in range(60))
    assert hf_baseline.chunk_tokens(tokenizer, [short], stride=8) == len(tokenizer(short)["input_ids"])
    whole = len(tokenizer(long)["input_ids"])
    chunks = tokenizer(long, truncation=True, stride=8, return_overflowing_tokens=True)["input_ids"]
    assert len(chunks) > 1 and all(len(chunk) <= 32 for chunk in chunks)
    assert hf_baseline.chunk_tokens(tokenizer, [short, long], stride=8) == (
        len(tokenizer(short)["input_ids"]) + sum(map(len, chunks))) > whole

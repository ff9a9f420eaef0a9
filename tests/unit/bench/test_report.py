"""``bench/report.py``: the benchmarks page and plots regenerated from result files, notes kept verbatim."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

REPORT_PY = Path(__file__).resolve().parents[3] / "bench" / "report.py"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PLOTS = ("quality_learning_curves.png", "quality_per_type.png", "hpo_history.png")
NOTES = "<!-- notes:start -->\n## Speed work\n\n* kept `as is` | with *markup* and 1.23× figures\n<!-- notes:end -->"
MINILM = {"layers": 6, "hidden": 384, "intermediate": 1536, "labels": 25, "seq_len": 256}
SECTIONS = (("quality", "Quality"), ("train_speed", "Training speed"), ("predict_speed", "Prediction speed"),
            ("gemm_peak", "Hardware"), ("hpo_pruning", "Hyperparameter search pruning"),
            ("pipeline_overhead", "Pipeline overhead"), ("serving_speed", "Serving speed"))


def _load_report() -> Any:
    spec = importlib.util.spec_from_file_location("bench_report", REPORT_PY)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


report = _load_report()


def _system(name: str, label: str, micro: float, curve: bool = True) -> dict[str, Any]:
    per_type = {"NAME": {"precision": 0.9, "recall": 0.8, "f1": micro + 0.01, "support": 24, "predicted": 22,
                         "correct": 19},
                "SKILL": {"precision": 0.6, "recall": 0.5, "f1": micro - 0.02, "support": 311, "predicted": 280,
                          "correct": 160}}
    return {"name": name, "label": label, "command": f"python bench/train_{name}.py --epochs 5",
            "train_wall_s": 600.0, "peak_rss_mb": 2048.0,
            "test": {"span_f1_micro": micro, "span_f1_macro": micro - 0.1, "span_precision_micro": 0.711,
                     "span_recall_micro": 0.622, "span_precision_macro": 0.6, "span_recall_macro": 0.5,
                     "span_per_type": per_type},
            "learning_curve": [{"epoch": 1, "val_f1": 0.4}, {"epoch": 2, "val_f1": micro}] if curve else []}


def _trainer(median: float, bf16: bool, sampling: str = "random") -> dict[str, Any]:
    return {"median_tokens_per_s": median, "max_peak_rss_mb": 2650.0, "bf16": bf16,
            "settings": {"bf16": bf16, "train_sampling_strategy": sampling}}


def _pipeline(median: float, dtype: str, batch_size: int) -> dict[str, Any]:
    return {"median_resumes_per_s": median, "runs_resumes_per_s": [median], "load_s": 2.4, "peak_rss_mb": 1210.0,
            "span_f1_micro": 0.25, "bf16": dtype == "bf16", "settings": {"dtype": dtype, "batch_size": batch_size},
            "window_tokens": 2600}


def _before_best_settings(payloads: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``payloads`` with the speed results as written before the baselines' best settings and the FLOP estimate."""
    train, predict = payloads["train_speed"], payloads["predict_speed"]
    train["summary"] = {name: {key: s[key] for key in ("median_tokens_per_s", "max_peak_rss_mb")}
                        for name, s in train["summary"].items() if name in ("resume-ner", "hf-trainer")}
    for key in ("best_peer", "ratio_fp32", "model_shape"):
        del train[key]
    for s in predict["sets"]:
        s["results"] = {name: {key: value for key, value in r.items() if key not in ("settings", "window_tokens")}
                        for name, r in s["results"].items() if name in ("resume-ner", "hf-pipeline")}
    for key in ("pipeline_batch_sweep", "model_shape"):
        del predict[key]
    return payloads


def _payloads(train_ratio: float = 1.45, before_best_settings: bool = False) -> dict[str, dict[str, Any]]:
    """One small but complete payload per benchmark (train_ratio: resume-ner over the best Trainer setting;
    before_best_settings: the speed results in their earlier form)."""
    payloads = {
        "quality": {"settings": {"backbone": "packaged:all-MiniLM-L6-v2", "epochs": 5, "learning_rate": 5e-5,
                                 "train_docs": 199, "validation_docs": 22, "test_docs": 24},
                    "systems": [_system("resume-ner", "resume-ner", 0.812), _system("hf-trainer", "HF Trainer", 0.743),
                                _system("spacy", "spaCy", 0.695, curve=False)]},
        "train_speed": {"settings": {"docs": 199, "batch_size": 16, "max_length": 256, "repeats": 2},
                        "runs": [{"system": "resume-ner", "repeat": 0, "wall_s": 61.5, "tokens_per_s": 3456.7,
                                  "peak_rss_mb": 1987.0},
                                 {"system": "hf-trainer", "repeat": 0, "wall_s": 88.2, "tokens_per_s": 2384.0,
                                  "peak_rss_mb": 2650.0}],
                        "summary": {"resume-ner": {"median_tokens_per_s": 3456.7, "max_peak_rss_mb": 1987.0,
                                                   "bf16": True, "settings": {"training.precision": "auto"}},
                                    "hf-trainer": _trainer(1500.0, False), "hf-trainer bf16": _trainer(2000.0, True),
                                    "hf-trainer bf16 grouped": _trainer(3456.7 / train_ratio, True, "group_by_length")},
                        "ratio": train_ratio, "best_peer": "hf-trainer bf16 grouped", "ratio_fp32": 3456.7 / 1500.0,
                        "model_shape": MINILM,
                        "variants": [{"name": "bf16-autocast", "median_tokens_per_s": 3900.0, "ratio_to_default": 1.13,
                                      "f1_delta": -0.004, "kept": False, "note": "F1 drop"}]},
        "predict_speed": {"settings": {"threads": 16},
                          "sets": [{"name": "test", "docs": 24, "repeat": 3, "ratio": 2.61,
                                    "results": {"resume-ner": {"median_resumes_per_s": 31.3,
                                                               "runs_resumes_per_s": [30.9, 31.3, 31.8],
                                                               "load_s": 1.7, "peak_rss_mb": 911.0,
                                                               "span_f1_micro": 0.634, "bf16": True,
                                                               "settings": {"precision": "auto", "batch_size": 32},
                                                               "window_tokens": 2400},
                                                "hf-pipeline": _pipeline(8.0, "fp32", 1),
                                                "hf-pipeline bf16": _pipeline(12.0, "bf16", 8)},
                                    "variants": {"resume-ner fp32": {"median_resumes_per_s": 20.0,
                                                                     "runs_resumes_per_s": [20.0], "load_s": 1.7,
                                                                     "peak_rss_mb": 950.0, "span_f1_micro": 0.633,
                                                                     "bf16": False, "window_tokens": 2400}}}],
                          "pipeline_batch_sweep": {"dtype": "bf16", "set": "test set", "runs": 1,
                                                   "median_resumes_per_s": {"1": 9.0, "8": 12.0, "16": 11.5},
                                                   "best_batch_size": 8},
                          "model_shape": MINILM},
        "gemm_peak": {"settings": {"threads": 16, "tokens": 4096},
                      "measurements": [{"mode": "fp32", "shape": [4096, 384, 1536], "median_s": 0.0322,
                                        "gflops": 150.0},
                                       {"mode": "bf16 autocast", "shape": [4096, 384, 1536], "median_s": 0.0127,
                                        "gflops": 380.0},
                                       {"mode": "bf16 tensors", "shape": [4096, 384, 1536], "median_s": 0.0121,
                                        "gflops": 400.0}],
                      "peak_gflops": {"fp32": 150.0, "bf16": 400.0}},
        "hpo_pruning": {"settings": {"n_trials": 4, "seed": 0},
                        "sweeps": {"median": {"command": "-m resume_ner.cli.main hpo run --set hpo.pruner=median",
                                              "wall_s": 420.0, "n_complete": 2, "n_pruned": 2, "n_failed": 0,
                                              "best_value": 0.781,
                                              "history": [{"number": 0, "state": "COMPLETE", "value": 0.7,
                                                           "duration_s": 100.0},
                                                          {"number": 1, "state": "PRUNED", "value": None,
                                                           "duration_s": 20.0},
                                                          {"number": 2, "state": "COMPLETE", "value": 0.781,
                                                           "duration_s": 100.0},
                                                          {"number": 3, "state": "PRUNED", "value": None,
                                                           "duration_s": 20.0},
                                                          {"number": 4, "state": "FAIL", "value": None,
                                                           "duration_s": 1.0}]},
                                   "none": {"command": "-m resume_ner.cli.main hpo run --set hpo.pruner=none",
                                            "wall_s": 780.0, "n_complete": 4, "n_pruned": 0, "n_failed": 0,
                                            "best_value": 0.785,
                                            "history": [{"number": i, "state": "COMPLETE", "value": 0.7 + i / 100,
                                                         "duration_s": 195.0} for i in range(4)]}},
                        "wall_reduction": 0.4615, "best_delta": -0.004},
        "pipeline_overhead": {"settings": {"epochs": 1}, "pipeline_wall_s": 130.4, "direct_wall_s": 120.0,
                              "ratio": 1.087},
        "serving_speed": {"settings": {"threads": 2, "passes": 4},
                          "cli": {"median_resumes_per_s": 10.0, "runs_resumes_per_s": [9.9, 10.0, 10.1],
                                  "peak_rss_mb": 700.0},
                          "served": {"workers": 1, "same_entities": True, "rss_before_mib": 820.0,
                                     "rss_after_mib": 826.0,
                                     "loads": {"1": {"texts_per_s": 8.5, "p50_ms": 110.0, "p95_ms": 180.0},
                                               "8": {"texts_per_s": 9.2, "p50_ms": 800.0, "p95_ms": 1100.0}}},
                          "ratio": 0.92,
                          "variants": [{"name": "2 server workers", "median_resumes_per_s": 8.0,
                                        "ratio_to_default": 0.87, "f1_delta": 0.0, "kept": False, "note": ""}]},
    }
    return _before_best_settings(payloads) if before_best_settings else payloads


def _write_results(directory: Path, quick: bool = False, only: tuple[str, ...] | None = None,
                   **overrides: Any) -> None:
    """Write result files as ``common.write_result`` does (command ``bench/<name>.py[ --quick]``)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, payload in _payloads(**overrides).items():
        if only is not None and name not in only:
            continue
        record = {"benchmark": name, "quick": quick, "finished": "2025-03-04T05:06:07+00:00",
                  "command": f"python bench/{name}.py" + (" --quick" if quick else ""),
                  "machine": {"nproc": 16, "cpu_model": "Test CPU 9000", "torch_threads": 8, "python": "3.11.9",
                              "torch": "2.13.0", "transformers": "4.99.0", "platform": "Linux"},
                  **payload}
        suffix = "-quick" if quick else ""
        (directory / f"{name}{suffix}.json").write_text(json.dumps(record), encoding="utf-8")


def _run(tmp_path: Path, *extra: str) -> str:
    out = tmp_path / "docs" / "benchmarks.md"
    assert report.main(["--results", str(tmp_path / "results"), "--out", str(out),
                        "--plots", str(tmp_path / "docs" / "benchmarks"), *extra]) == 0
    return out.read_text(encoding="utf-8")


def _section(page: str, title: str) -> str:
    """The text of ``## title`` up to the next second-level heading."""
    return page.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_every_section_shows_command_machine_date_figures_and_targets(tmp_path: Path) -> None:
    _write_results(tmp_path / "results")
    page = _run(tmp_path)

    assert page.startswith("# Benchmarks")
    assert "../shared/data/resume-cvs" in page and "24 test resumes" in page
    for name, title in SECTIONS:
        section = _section(page, title)
        assert f"`python bench/{name}.py`" in section
        assert "16 CPUs (Test CPU 9000), 8 torch threads" in section
        assert "2025-03-04T05:06:07+00:00" in section
        assert "not run yet" not in section
    quality = _section(page, "Quality")
    assert "| resume-ner | 0.711 | 0.622 | 0.812 | 0.712 | 10.0 min | 2,048 MiB |" in quality
    assert "| SKILL | 311 | 0.792 | 0.723 | 0.675 |" in quality
    assert "`python bench/train_spacy.py --epochs 5`" in quality
    assert "resume-ner / hf-trainer micro-F1: 1.09× (+0.069)" in quality
    assert "0.812 vs 0.743 (+0.069) — met" in quality
    train = _section(page, "Training speed")
    assert "3,456.7" in train and "1.45×" in train and "bf16-autocast" in train and "-0.004" in train
    predict = _section(page, "Prediction speed")
    assert "30.9, 31.3, 31.8" in predict and "2.61×" in predict and "911 MiB — met" in predict
    hpo = _section(page, "Hyperparameter search pruning")
    assert "| median pruner | 7.0 min | 2 | 2 | 0 | 0.781 |" in hpo
    assert "`resume-ner hpo run --set hpo.pruner=median`" in hpo
    assert "46.2% — met" in hpo and "-0.004 — met" in hpo
    assert "1.09× — met" in _section(page, "Pipeline overhead")
    summary = _section(page, "Summary of targets")
    serving = _section(page, "Serving speed")
    assert "| served, 1 worker(s), one resume per request | 8 | 9.2 | 800 ms | 1100 ms | 820 MiB → 826 MiB |" in serving
    assert "0.92× — met" in serving and "180 ms — met" in serving and "same — met" in serving
    assert summary.count("| met |") == 13 and "missed" not in summary and "not run yet" not in summary


@pytest.mark.parametrize(("recorded", "shown"), [
    ("-m resume_ner.cli.main train --data {root}/runs/bench/splits --overwrite",
     "resume-ner train --data runs/bench/splits --overwrite"),
    ("bench/quality.py --systems spacy", "python bench/quality.py --systems spacy"),
    ("{root}/bench/pipeline_overhead.py", "python bench/pipeline_overhead.py"),
    ("-m pytest tests", "python -m pytest tests"),
    ("bench/hf_baseline.py predict --model /elsewhere/m", "python bench/hf_baseline.py predict --model /elsewhere/m"),
])
def test_commands_are_shown_as_typed_in_the_repository_root(recorded: str, shown: str) -> None:
    assert report.command(recorded.format(root=report.ROOT)) == shown


def test_settings_show_paths_relative_to_the_repository_root() -> None:
    line = report.settings_line({"model": f"{report.ROOT}/runs/m/model", "other": "/elsewhere/m", "runs": 5})
    assert line == "Settings: `model` = runs/m/model, `other` = /elsewhere/m, `runs` = 5."


def test_a_missed_target_is_shown_as_missed(tmp_path: Path) -> None:
    _write_results(tmp_path / "results", train_ratio=1.1)
    page = _run(tmp_path)

    train = _section(page, "Training speed")
    goal = "resume-ner / best hf-trainer setting training throughput ≥ 1.30×"
    assert f"{goal}: 1.10× against hf-trainer bf16 grouped — **missed**" in train
    assert f"| train_speed | {goal} | 1.10× against hf-trainer bf16 grouped | **missed** |" in page


@pytest.mark.parametrize(("delta", "met"), [(0.02, True), (-0.01, True), (-0.0101, False)])
def test_best_value_may_drop_by_at_most_0_01(tmp_path: Path, delta: float, met: bool) -> None:
    result = _payloads()["hpo_pruning"] | {"best_delta": delta}
    plots = report.Plots(tmp_path, "plots")
    _, targets = report.hpo_pruning(result, plots)
    assert targets[1].met is met


def test_a_missing_result_says_not_run_yet_and_shows_no_numbers(tmp_path: Path) -> None:
    _write_results(tmp_path / "results", only=("quality",))
    page = _run(tmp_path)

    for title in ("Training speed", "Prediction speed", "Hardware", "Hyperparameter search pruning",
                  "Pipeline overhead", "Serving speed"):
        section = _section(page, title)
        assert "not run yet (`make bench`)" in section
        assert not re.search(r"\d", section), section
    summary = _section(page, "Summary of targets")
    assert summary.count("| met |") == 2 and summary.count("| – | not run yet |") == 11
    assert "0.812" in _section(page, "Quality")


def test_no_results_at_all(tmp_path: Path) -> None:
    page = _run(tmp_path)

    assert page.count("not run yet (`make bench`)") == 7
    assert not list((tmp_path / "docs" / "benchmarks").glob("*.png"))


def test_notes_block_survives_regeneration_verbatim(tmp_path: Path) -> None:
    _write_results(tmp_path / "results")
    out = tmp_path / "docs" / "benchmarks.md"
    out.parent.mkdir(parents=True)
    out.write_text(f"# Old page\n\nold figures 0.5\n\n{NOTES}\n\ntrailing text\n", encoding="utf-8")

    first = _run(tmp_path)
    second = _run(tmp_path)

    assert NOTES in first and first == second
    assert "old figures" not in first and "trailing text" not in first
    assert first.index("## Notes and speed work") < first.index(NOTES)


def test_notes_markers_are_written_when_the_page_has_none(tmp_path: Path) -> None:
    page = _run(tmp_path)
    assert page.endswith("## Notes and speed work\n\n<!-- notes:start -->\n<!-- notes:end -->\n")


def test_a_page_with_one_notes_marker_is_not_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "docs" / "benchmarks.md"
    out.parent.mkdir(parents=True)
    out.write_text("<!-- notes:start -->\nhand-written\n", encoding="utf-8")
    with pytest.raises(SystemExit):
        _run(tmp_path)
    assert out.read_text(encoding="utf-8") == "<!-- notes:start -->\nhand-written\n"


def test_plots_are_png_files_linked_relative_to_the_page(tmp_path: Path) -> None:
    _write_results(tmp_path / "results")
    page = _run(tmp_path)

    for name in PLOTS:
        data = (tmp_path / "docs" / "benchmarks" / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 1000
        assert f"(benchmarks/{name})" in page


def test_plots_of_results_that_are_gone_are_removed(tmp_path: Path) -> None:
    _write_results(tmp_path / "results")
    _run(tmp_path)
    (tmp_path / "results" / "hpo_pruning.json").unlink()
    page = _run(tmp_path)

    assert not (tmp_path / "docs" / "benchmarks" / "hpo_history.png").exists()
    assert (tmp_path / "docs" / "benchmarks" / "quality_per_type.png").exists()
    assert "hpo_history.png" not in page


def test_quick_reads_the_quick_results(tmp_path: Path) -> None:
    _write_results(tmp_path / "results", quick=True)
    _write_results(tmp_path / "results", only=("quality",))

    (tmp_path / "results" / "hpo_pruning-quick.json").unlink()
    quick = _run(tmp_path, "--quick")
    assert "`python bench/pipeline_overhead.py --quick`" in quick and "quick runs" in quick
    assert "`python bench/quality.py`" not in quick and "`python bench/hpo_pruning.py --quick`" not in quick
    assert "not run yet (`make bench-quick`)" in _section(quick, "Hyperparameter search pruning")

    full = _run(tmp_path)
    assert "`python bench/quality.py`" in full and "--quick" not in full
    assert full.count("not run yet (`make bench`)") == 6


def test_results_from_before_the_best_baseline_settings_show_them_as_not_measured(tmp_path: Path) -> None:
    _write_results(tmp_path / "results", before_best_settings=True)
    page = _run(tmp_path)

    train = _section(page, "Training speed")
    assert "| hf-trainer | – | – | 1,500.0 | 2.30× | 2,650 MiB |" in train
    assert "| hf-trainer bf16 | not measured | – | – | – | – |" in train
    assert "hf-trainer bf16, hf-trainer bf16 grouped not measured (2.30× against hf-trainer) — not run yet" in train
    predict = _section(page, "Prediction speed")
    assert "| test | 24 | 3 | hf-pipeline bf16 | not measured |" in predict
    assert "| test | 24 | 3 | hf-pipeline | – | fp32 | 8.0 | 8.0 | 2.4 s | 1,210 MiB | 0.250 |" in predict
    assert "hf-pipeline bf16 not measured (3.91× against hf-pipeline) — not run yet" in predict
    hardware = _section(page, "Hardware")
    assert "Peaks: fp32 150.0 GFLOP/s, bf16 400.0 GFLOP/s." in hardware
    assert "- train_speed: not measured (its result predates the FLOP estimate" in hardware
    assert "- predict_speed: not measured" in hardware and "MFU (bf16 peak)" not in hardware
    assert "≥ 50%: train_speed not measured — not run yet" in hardware
    summary = _section(page, "Summary of targets")
    assert summary.count("| not run yet |") == 3 and summary.count("| met |") == 10


def test_ratios_are_taken_against_the_best_peer_setting(tmp_path: Path) -> None:
    plots = report.Plots(tmp_path, "plots")
    train = _payloads()["train_speed"]
    train["summary"]["hf-trainer bf16"]["median_tokens_per_s"] = 3000.0  # faster than grouped (2,383.9)
    lines, targets = report.train_speed(train, plots)
    assert targets[0].measured == "1.15× against hf-trainer bf16" and targets[0].met is False
    assert "1.15× against the best, hf-trainer bf16; 2.30× against hf-trainer (fp32" in "\n".join(lines)

    predict = _payloads()["predict_speed"]
    predict["sets"][0]["results"]["hf-pipeline bf16 batch 16"] = _pipeline(15.0, "bf16", 16)
    lines, targets = report.predict_speed(predict, plots)
    assert targets[0].measured == "2.09× against hf-pipeline bf16 batch 16" and targets[0].met is True
    assert "| hf-pipeline bf16 batch 16 | dtype=bf16, batch_size=16 | bf16 | 15.0 |" in "\n".join(lines)


def test_mfu_is_the_model_flop_rate_over_the_peak_of_the_precision() -> None:
    peaks = {"fp32": 150.0, "bf16": 400.0}
    assert report.mfu(1000.0, 70e6, 100.0) == pytest.approx(0.7)
    assert report.flops_per_token(MINILM, training=False) == 2 * 10_626_432 + 4 * 6 * 256 * 384 == 23_612_160
    assert report.flops_per_token(MINILM, training=True) == 3 * 23_612_160

    train = _payloads()["train_speed"]
    target = report.training_mfu_target(train, peaks)  # 3,456.7 tokens/s x 70.84 MFLOP / 400 GFLOP/s
    assert target.measured == "61.2% (bf16)" and target.met is True
    fp32 = report.training_mfu_rows(train, peaks)[1]
    assert fp32 == ["train_speed", "hf-trainer", "fp32", "1,500.0", "106.3 GFLOP/s", "26.6%", "70.8%"]
    # prediction: 31.3 resumes/s x 2,400 window tokens / 24 resumes = 3,130 tokens/s x 23.6 MFLOP
    ours = report.prediction_mfu_rows(_payloads()["predict_speed"], peaks)[0]
    assert ours == ["predict_speed (test)", "resume-ner", "bf16", "3,130.0", "73.9 GFLOP/s", "18.5%", "–"]


def test_utilisation_above_the_measured_peak_is_flagged(tmp_path: Path) -> None:
    _write_results(tmp_path / "results")
    gemm = tmp_path / "results" / "gemm_peak.json"
    record = json.loads(gemm.read_text(encoding="utf-8"))
    record["peak_gflops"] = {"fp32": 50.0, "bf16": 200.0}  # below resume-ner's 244.9 GFLOP/s of training
    gemm.write_text(json.dumps(record), encoding="utf-8")
    hardware = _section(_run(tmp_path), "Hardware")

    assert "| train_speed | resume-ner | bf16 | 3,456.7 | 244.9 GFLOP/s | 122.4% * | – |" in hardware
    assert "| train_speed | hf-trainer bf16 | bf16 | 2,000.0 | 141.7 GFLOP/s | 70.8% | – |" in hardware
    assert "\\* Above the measured peak" in hardware


def test_the_committed_results_render(tmp_path: Path) -> None:
    shutil.copytree(REPORT_PY.parent / "results", tmp_path / "results")
    page = _run(tmp_path)

    for _, title in SECTIONS:
        assert f"## {title}\n" in page

"""``resume-ner predict`` under load: flat memory over 2,000 resumes; a killed run keeps its finished lines on
stdout, and leaves an --output file as it was (the new one is renamed into place only when complete).

Real processes: the CLI runs as a subprocess over synthetic resumes with a tiny trained model; peak resident
memory comes from ``wait4``; the kill is a real SIGKILL sent by the process to itself after a given line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from resume_ner.data.synth import generate_resumes

pytestmark = pytest.mark.slow

# Run the CLI, but SIGKILL the process when it asks for the prediction after line KILL_AFTER (written, flushed).
KILLING_PREDICT = """
import os, signal, sys
from resume_ner.inference import Predictor
from resume_ner.cli.main import main

stream, kill_after = Predictor.predict_stream, int(os.environ["KILL_AFTER"])

def predict_stream(self, texts, chunk_size=64):
    for done, entities in enumerate(stream(self, texts, chunk_size)):
        if done == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        yield entities

Predictor.predict_stream = predict_stream
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def resumes(tmp_path_factory) -> dict[int, Path]:
    """JSONL files of the first 200 and of 2,000 synthetic resumes."""
    docs = generate_resumes(2000, seed=21)
    folder = tmp_path_factory.mktemp("resumes")
    files = {}
    for n in (200, 2000):
        files[n] = folder / f"resumes-{n}.jsonl"
        files[n].write_text("".join(json.dumps({"text": d.text}) + "\n" for d in docs[:n]), encoding="utf-8")
    return files


def _predict(argv: list[str], env: dict[str, str] | None = None, stdout: Path | None = None) -> tuple[int, float]:
    """Exit status and peak RSS (MiB) of ``python -m resume_ner.cli.main predict ...`` (or a wrapper); its
    standard output goes to ``stdout`` (a file), else nowhere."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    with open(stdout or os.devnull, "w", encoding="utf-8") as out:
        process = subprocess.Popen(argv, env=full_env, stdout=out, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(process.pid, 0)
    process.stderr.close()
    return os.waitstatus_to_exitcode(status), usage.ru_maxrss / 1024


def test_memory_stays_flat_from_200_to_2000_resumes(tiny_model_dir, resumes, tmp_path, reliability_figure):
    peaks = {}
    for n, path in resumes.items():
        out = tmp_path / f"entities-{n}.jsonl"
        code, peaks[n] = _predict([sys.executable, "-m", "resume_ner.cli.main", "predict", "-q", "--model",
                                   str(tiny_model_dir), "--output", str(out), str(path)])
        assert code == 0
        assert len(out.read_text(encoding="utf-8").splitlines()) == n
    growth = peaks[2000] / peaks[200] - 1
    reliability_figure("predict peak RSS", f"{peaks[200]:.0f} MiB (200 resumes) -> {peaks[2000]:.0f} MiB "
                                           f"(2,000), {growth:+.1%}")
    assert growth < 0.2, f"peak RSS grew from {peaks[200]:.0f} to {peaks[2000]:.0f} MiB"


def test_a_run_killed_at_resume_1501_leaves_1500_complete_lines(tiny_model_dir, resumes, tmp_path, reliability_counter):
    out = tmp_path / "entities.jsonl"
    code, _ = _predict([sys.executable, "-c", KILLING_PREDICT, "predict", "-q", "--model", str(tiny_model_dir),
                        str(resumes[2000])], env={"KILL_AFTER": "1500"}, stdout=out)
    assert code == -signal.SIGKILL
    reliability_counter("kills", 1)
    lines = out.read_text(encoding="utf-8").splitlines(keepends=True)
    assert len(lines) == 1500 and all(line.endswith("\n") for line in lines)
    records = [json.loads(line) for line in lines]
    assert [r["source"] for r in records] == [f"{resumes[2000]}:{i}" for i in range(1, 1501)]


def test_a_killed_run_leaves_its_output_file_as_it_was(tiny_model_dir, resumes, tmp_path, reliability_counter):
    out = tmp_path / "entities.jsonl"
    out.write_text('{"source": "an earlier run", "entities": []}\n', encoding="utf-8")
    before = out.read_bytes()
    code, _ = _predict([sys.executable, "-c", KILLING_PREDICT, "predict", "-q", "--model", str(tiny_model_dir),
                        "--output", str(out), "--overwrite", str(resumes[200])], env={"KILL_AFTER": "150"})
    assert code == -signal.SIGKILL
    reliability_counter("kills", 1)
    assert out.read_bytes() == before  # not half of a new file: the old one, whole

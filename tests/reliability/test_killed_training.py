"""A training SIGKILLed again and again, at seeded random points, resumes and ends exactly where an uninterrupted
one does.

Real processes and signals: ``resume-ner train`` runs in a wrapper that sends SIGKILL to itself at the N-th
event of one kind (an optimizer step, after backward; a ``torch.save`` of a checkpoint being written; an
``os.replace`` of an atomic write or directory swap; a validation pass), then ``--resume`` continues. After
every kill, each checkpoint the trainer would consider must validate (a half-written one is never listed),
and the finished run's validation history and best metric must equal the uninterrupted run's (tiny model,
deterministic CPU).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from resume_ner.training.checkpoint import list_training_states, validate_checkpoint

pytestmark = pytest.mark.slow

KILLS = 10
SEED = 20261129
# Kill kinds: the range of N (the N-th such event of the process) and how often the plan picks the kind.
# Every killed process has written at least one complete checkpoint first (one every 2 optimizer steps), so
# the runs always progress; a kill in validation lets a whole epoch pass first, so it is picked rarely.
KINDS = {"step": ((3, 9), 3), "save": ((4, 10), 3), "replace": ((6, 16), 3), "eval": ((1, 1), 1)}

KILLING_TRAIN = """
import os, signal, sys
import torch
import resume_ner.training.evaluator as evaluator
from resume_ner.cli.main import main

kind, nth = os.environ["KILL_AT"].split(":")
nth, seen = int(nth), [0]

def counted(function):
    def wrapper(*args, **kwargs):
        seen[0] += 1
        if seen[0] == nth:
            os.kill(os.getpid(), signal.SIGKILL)
        return function(*args, **kwargs)
    return wrapper

if kind == "step":
    torch.nn.utils.clip_grad_norm_ = counted(torch.nn.utils.clip_grad_norm_)  # after backward, before the step
elif kind == "save":
    torch.save = counted(torch.save)  # a training state half written in its staging directory
elif kind == "replace":
    os.replace = counted(os.replace)  # between the writes and renames of atomic files and directories
elif kind == "eval":
    evaluator.predict_windows = counted(evaluator.predict_windows)  # the validation pass of an epoch
sys.exit(main(sys.argv[1:]))
"""


def _train(script: list[str], dataset: Path, out: Path, backbone: Path, extra: list[str],
           env: dict[str, str] | None = None) -> int:
    command = [sys.executable, *script, "train", "--data", str(dataset), "--output-dir", str(out), "--no-tracking",
               "-q", *extra]
    for setting in (f"model.backbone={backbone}", "model.max_length=64", "model.stride=16", "training.epochs=3",
                    "training.batch_size=8", "training.learning_rate=5e-3", "training.num_threads=1",
                    "training.save_every_steps=2", "training.keep_checkpoints=2", "training.random_seed=5"):
        command += ["--set", setting]
    done = subprocess.run(command, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, -signal.SIGKILL), done.stderr[-3000:]
    return done.returncode


def _outcome(out: Path) -> dict:
    result = json.loads((out / "train_result.json").read_text())
    history = [{k: v for k, v in h.items() if k != "step"} for h in result["history"]]
    return {"best_metric": result["best_metric"], "best_epoch": result["best_epoch"], "history": history,
            "global_step": result["global_step"]}


def test_resume_after_seeded_random_kills_ends_like_an_uninterrupted_run(
    dataset, tiny_backbone, tmp_path, reliability_counter
):
    assert _train(["-m", "resume_ner.cli.main"], dataset, tmp_path / "reference", tiny_backbone, []) == 0
    reference = _outcome(tmp_path / "reference")

    rng = random.Random(SEED)
    out, kills, restarts = tmp_path / "killed", 0, 0
    kinds = sorted(KINDS)
    plan = [(kind, rng.randint(*KINDS[kind][0]))
            for kind in rng.choices(kinds, weights=[KINDS[k][1] for k in kinds], k=3 * KILLS)]
    for kind, nth in plan:
        code = _train(["-c", KILLING_TRAIN], dataset, out, tiny_backbone, ["--resume"],
                      env={"KILL_AT": f"{kind}:{nth}"})
        restarts += 1
        if code == 0:
            break
        kills += 1
        for state in list_training_states(out / "checkpoints"):  # what --resume may pick: all complete
            validate_checkpoint(state, training_state=True)
    else:
        code = _train(["-m", "resume_ner.cli.main"], dataset, out, tiny_backbone, ["--resume"])
        restarts += 1
    if code != 0 or kills < KILLS:
        pytest.fail(f"{kills} kills in {restarts} runs; the plan should kill at least {KILLS} times and then finish")
    reliability_counter("kills", kills)
    reliability_counter("restarts", restarts)
    assert _outcome(out) == reference

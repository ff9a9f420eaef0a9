"""Full and read-only disks: a clear error naming the path, the earlier checkpoint intact, and --resume after.

Real file systems where the machine allows it: a size-limited tmpfs that fills up while a training writes its
second checkpoint, and a read-only tmpfs as the output directory (mounting needs root; where it is refused,
the full disk is an injected ``OSError(ENOSPC)`` at ``torch.save`` and the read-only case uses file
permissions, or is skipped for root).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from resume_ner.training.checkpoint import latest_training_state, list_training_states, validate_checkpoint

pytestmark = pytest.mark.slow

# One training state of the tiny model is about 13 MB: a 22 MB disk holds the first, not the second.
SMALL_DISK_MB = 22

INJECTED_ENOSPC = """
import errno, sys, torch
from resume_ner.cli.main import main

save, calls = torch.save, [0]

def full_disk_save(obj, path, *args, **kwargs):
    calls[0] += 1
    if calls[0] > 3:  # the second training state: its optimizer state no longer fits
        raise OSError(errno.ENOSPC, "No space left on device")
    return save(obj, path, *args, **kwargs)

torch.save = full_disk_save
sys.exit(main(sys.argv[1:]))
"""


def _mount_tmpfs(where: Path, options: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                          capture_output=True).returncode == 0


@pytest.fixture
def mounts() -> Iterator[list[Path]]:
    mounted: list[Path] = []
    yield mounted
    for where in reversed(mounted):
        subprocess.run(["umount", str(where)], capture_output=True)


def _train(launcher: list[str], dataset: Path, out: Path, backbone: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, *launcher, "train", "--data", str(dataset), "--output-dir", str(out), "--no-tracking",
               "-q", *extra]
    for setting in (f"model.backbone={backbone}", "model.max_length=64", "model.stride=16", "training.epochs=1",
                    "training.learning_rate=5e-3", "training.num_threads=1", "training.save_every_steps=2",
                    "training.keep_checkpoints=2"):
        command += ["--set", setting]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def test_a_full_disk_fails_clearly_keeps_the_earlier_checkpoint_and_resumes(dataset, tiny_backbone, tmp_path,
                                                                             mounts):
    disk = tmp_path / "disk"
    if _mount_tmpfs(disk, f"size={SMALL_DISK_MB}m"):
        mounts.append(disk)
        launcher = ["-m", "resume_ner.cli.main"]
    else:
        launcher = ["-c", INJECTED_ENOSPC]
    out = disk / "run"
    done = _train(launcher, dataset, out, tiny_backbone)
    assert done.returncode == 1, done.stderr[-2000:]
    message = done.stderr.strip().splitlines()[-1]
    assert message.startswith("error: cannot write the training state") and "No space left on device" in message
    assert "the earlier checkpoints are intact" in message and "Traceback" not in done.stderr
    states = list_training_states(out / "checkpoints")
    assert [s.name for s in states] == ["checkpoint-00000002"] and latest_training_state(out / "checkpoints")
    validate_checkpoint(states[0], training_state=True)
    assert not list((out / "checkpoints").glob(".*"))  # the half-written staging directory was removed

    roomy = tmp_path / "roomy"  # free space: the same output directory on a disk with room
    shutil.copytree(out, roomy)
    resumed = _train(["-m", "resume_ner.cli.main"], dataset, roomy, tiny_backbone, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    result = json.loads((roomy / "train_result.json").read_text())
    assert result["epochs_completed"] == 1 and result["global_step"] > 2


def test_a_read_only_output_directory_is_named_with_the_reason(dataset, tiny_backbone, tmp_path, mounts):
    read_only = tmp_path / "read-only"
    if _mount_tmpfs(read_only, "ro,size=1m"):
        mounts.append(read_only)
        reason = "Read-only file system"
    elif os.geteuid() != 0:
        read_only.mkdir()
        read_only.chmod(0o500)
        reason = "Permission denied"
    else:
        pytest.skip("root without mount: no way to make a directory unwritable here")
    out = read_only / "run"
    done = _train(["-m", "resume_ner.cli.main"], dataset, out, tiny_backbone)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    message = done.stderr.strip().splitlines()[-1]
    assert message == f"error: cannot create the output directory {out}: {out}: {reason}" + (
        " (the file system is read-only)" if reason.startswith("Read-only") else "") + (
        "; make it writable or choose another --output-dir")

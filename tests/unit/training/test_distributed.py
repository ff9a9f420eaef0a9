"""The data-parallel plumbing that needs no second process: the environment torchrun sets, each rank's share
of an epoch, and the relaunch of a command under torchrun."""

from __future__ import annotations

import argparse

import pytest

from resume_ner.cli import model_commands
from resume_ner.errors import ConfigError
from resume_ner.training.distributed import DistributedContext, context_from_env, shard_indices


def test_without_torchrun_a_process_is_rank_0_of_1(monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    context = context_from_env()
    assert (context.rank, context.world_size, context.enabled, context.is_main) == (0, 1, False, True)


def test_the_torchrun_environment_is_read_and_checked(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert context_from_env() == DistributedContext(rank=3, local_rank=1, world_size=4)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ConfigError, match="RANK=4, WORLD_SIZE=4"):
        context_from_env()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ConfigError, match=r"\$RANK='x' is not an integer"):
        context_from_env()


@pytest.mark.parametrize("n", [1, 5, 8, 9])
def test_every_rank_gets_the_same_number_of_windows_and_together_all_of_them(n):
    order = list(range(100, 100 + n))
    shards = [shard_indices(order, DistributedContext(rank=r, world_size=3)) for r in range(3)]
    assert len({len(shard) for shard in shards}) == 1  # the same number of batches: no rank waits forever
    assert set().union(*shards) == set(order)
    assert sum(len(shard) for shard in shards) - n < 3  # at most world_size - 1 windows repeated
    assert shard_indices(order, DistributedContext()) == order


def test_nproc_per_node_relaunches_the_same_command_under_torchrun(monkeypatch):
    calls = []
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(model_commands, "launch_torchrun",
                        lambda n, argv: calls.append((n, argv)) or 0)
    args = argparse.Namespace(nproc_per_node=2, argv=["train", "--data", "d", "--nproc-per-node", "2",
                                                       "--output-dir", "o", "--nproc-per-node=2"])
    assert model_commands.relaunch_under_torchrun(args) == 0
    assert calls == [(2, ["train", "--data", "d", "--output-dir", "o"])]
    monkeypatch.setenv("WORLD_SIZE", "2")  # already a torchrun worker: run here
    assert model_commands.relaunch_under_torchrun(args) is None

"""The local run's console: kfp.local's lines (as kfp 2.17 prints them) reduced to task starts and ends, progress
and problems; every line in the log; the failed task's last lines shown; the print patch of parallel tasks undone."""

from __future__ import annotations

import builtins
import io
import sys

from resume_ner.kfp.local_console import FAILURE_TAIL_LINES, ConsoleFilter, local_console

KFP_LINES = [
    "20:47:42.534 - INFO - Executing task \x1b[96m'hpo-trial'\x1b[0m",
    "20:47:42.534 - INFO - Streamed logs:",
    "    [KFP Executor 2026-12-06 20:47:42,589 INFO]: Got executor_input:",
    '        "inputs": {',
    "    [KFP Executor 2026-12-06 20:48:35,281 INFO]: epoch 1: train loss 0.7310, val f1_micro 0.7650 (best 0.7650 "
    "at epoch 1)",
    "    [KFP Executor 2026-12-06 20:48:56,063 INFO]: epoch 2/2, batch 23/40, step 63/80: loss 0.1211, 1043 tokens/s",
    "    [I 2026-12-06 20:49:11,563] Trial 1 finished with value: 0.8867346938775511 and parameters: {'model.dropout':"
    " 0.02}",
    "    [I 2026-12-06 20:49:50,889] Trial 3 pruned. pruned after epoch 1: validation loss 0.2912",
    "    [KFP Executor 2026-12-06 20:49:51,000 WARNING]: MLflow is unreachable; retrying",
    "20:50:23.733 - INFO - Task \x1b[96m'hpo-trial'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m",
    "20:50:23.734 - INFO - Task 'hpo-trial' outputs:",
]


def _filtered(lines: list[str]) -> tuple[list[str], str]:
    console, log = io.StringIO(), io.StringIO()
    stream = ConsoleFilter(console, log)
    for line in lines:
        stream.write(line + "\n")
    return console.getvalue().splitlines(), log.getvalue()


def test_the_console_shows_tasks_progress_and_problems_and_the_log_keeps_every_line():
    shown, log = _filtered(KFP_LINES)
    assert shown[0].endswith("  hpo-trial started")
    assert [line.strip() for line in shown[1:-1]] == [
        "epoch 1: train loss 0.7310, val f1_micro 0.7650 (best 0.7650 at epoch 1)",
        "Trial 1 finished with value: 0.8867346938775511",
        "Trial 3 pruned. pruned after epoch 1: validation loss 0.2912",
        "[KFP Executor 2026-12-06 20:49:51,000 WARNING]: MLflow is unreachable; retrying",
    ]
    assert " hpo-trial SUCCESS in " in shown[-1] and shown[-1].endswith("s")
    assert log.splitlines() == [line.replace("\x1b[96m", "").replace("\x1b[92m", "").replace("\x1b[0m", "")
                                for line in KFP_LINES]


def test_a_failed_task_shows_the_end_of_its_output():
    output = [f"    line {i}" for i in range(100)]
    shown, _ = _filtered(["Executing task 'load-data'", *output, "Task 'load-data' finished with status FAILURE"])
    failure = shown.index(next(line for line in shown if "load-data FAILURE" in line))
    assert shown[failure + 1].strip() == "the end of its output:"
    tail = [line.strip() for line in shown[failure + 2:]]
    assert tail[-1] == "line 99" and len(tail) == FAILURE_TAIL_LINES


def test_parallel_tasks_share_a_name_and_a_line_may_come_in_pieces():
    console, log = io.StringIO(), io.StringIO()
    stream = ConsoleFilter(console, log)
    for piece in ("Executing task 'hpo-trial'\nExecuting task 'hpo-", "trial'\n", "Task 'hpo-trial' finished with ",
                  "status SUCCESS\nTask 'hpo-trial' finished with status SUCCESS\nno newline"):
        stream.write(piece)
    stream.close_line()
    shown = console.getvalue().splitlines()
    assert sum("hpo-trial started" in line for line in shown) == 2
    assert sum("hpo-trial SUCCESS in " in line for line in shown) == 2
    assert log.getvalue().endswith("no newline\n")


def test_the_block_restores_the_streams_and_print(tmp_path, capsys):
    before = sys.stdout, sys.stderr, builtins.print
    with local_console(tmp_path / "logs" / "run.log") as path:
        print("Executing task 'plan-run'")
        print("noise")
        builtins.print = lambda *a, **k: None  # what kfp.local's racing indentation patch can leave behind
    assert (sys.stdout, sys.stderr, builtins.print) == before
    out = capsys.readouterr().out
    assert "plan-run started" in out and "noise" not in out
    assert path.read_text() == "Executing task 'plan-run'\nnoise\n"
    with local_console(tmp_path / "verbose.log", verbose=True):
        print("noise")
    assert "noise" in capsys.readouterr().out

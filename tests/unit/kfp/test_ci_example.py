"""The example CI workflow (docs/ci/github-actions.yaml) runs commands that exist, with flags that exist: each
``resume-ner`` line is parsed by the real CLI parser, and each ``make`` target is in the Makefile."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from resume_ner.cli.main import build_parser

REPO = Path(__file__).resolve().parents[3]
WORKFLOW = REPO / "docs" / "ci" / "github-actions.yaml"
# A GitHub expression that adds a flag when a variable is set: it is the flag with an example value.
OPTIONAL_FLAG = re.compile(r"\$\{\{\s*vars\.\w+\s*&&\s*format\('(?P<flag>[^']*)\{0\}',\s*vars\.\w+\)\s*\}\}")


def _commands() -> list[list[str]]:
    """Every command of every `run:` step, continuation lines joined, GitHub expressions and shell variables
    given example values."""
    workflow = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    commands = []
    for job in workflow["jobs"].values():
        for step in job["steps"]:
            script = step.get("run", "").replace("\\\n", " ")
            script = OPTIONAL_FLAG.sub(lambda m: m["flag"] + "team-a", script)
            script = re.sub(r"\$\{GITHUB_SHA::\d+\}", "0123456789ab", script)
            assert "${{" not in script, f"an expression this test does not know: {script}"
            commands += [shlex.split(line) for line in script.splitlines() if line.strip()]
    return commands


def _cli_commands() -> list[list[str]]:
    return [argv[1:] for argv in _commands() if Path(argv[0]).name == "resume-ner"]


def test_the_workflow_tests_compiles_checks_drift_uploads_and_waits_for_a_run():
    subcommands = [argv[:2] for argv in _cli_commands()]
    assert subcommands == [["pipeline", "compile"], ["pipeline", "upload"], ["pipeline", "submit"]]
    flat = [" ".join(argv) for argv in _commands()]
    assert "make test" in flat and any("make compile" in c for c in flat)
    assert "git diff --exit-code -- components pipelines" in flat
    compile_, upload, submit = _cli_commands()
    assert "--cluster" in compile_ and "--wait" in submit and "--version" in upload
    [package] = {argv[argv.index("--package") + 1] for argv in (upload, submit)}
    out_root = compile_[compile_.index("--out-root") + 1]
    assert package == f"{out_root}/pipelines/resume_ner_training.yaml"  # the file compile writes


@pytest.mark.parametrize("argv", _cli_commands(), ids=lambda argv: " ".join(argv[:2]))
def test_every_resume_ner_command_parses(argv: list[str]):
    args = build_parser().parse_args(argv)
    assert callable(args.func)


def test_every_make_target_exists():
    targets = set(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(encoding="utf-8"), re.MULTILINE))
    for argv in _commands():
        if "make" in argv:
            assert argv[argv.index("make") + 1] in targets, argv

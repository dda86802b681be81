"""`moltbuild init`: adopt moltbuild in an existing repository.

Finds the Dockerfiles (what git tracks or would track), the kustomization's `images:` and the
workloads that run them, matches each Dockerfile to an image, and writes the `[tool.moltbuild]`
table into pyproject.toml, a tasks.py and `build/` in .gitignore. It says what it found, what it
wrote and what it could not decide; it guesses nothing the files do not show (no build args,
platforms, targets or smoke checks). A second run changes nothing."""

from __future__ import annotations

from pathlib import Path

from moltbuild.adopt.changes import apply, plan_changes
from moltbuild.adopt.pyproject import Change
from moltbuild.adopt.survey import findings, survey_repository
from moltbuild.system.processes import Runner


def adopt(runner: Runner, path: Path | None = None, *, dry_run: bool = False) -> list[Change]:
    """Survey the repository at `path` (default: the git top level of the working directory),
    say what was found, then write (or, `dry_run`, show as diffs) what moltbuild needs."""
    survey = survey_repository(runner, path)
    for line in findings(survey):
        runner.say(line)
    changes, lines = plan_changes(survey)
    for line in lines:
        runner.say(line)
    apply(changes, survey.root, dry_run=dry_run, say=runner.say)
    return changes

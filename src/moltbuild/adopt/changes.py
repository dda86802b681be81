"""The other files init writes (tasks.py, build/ in .gitignore), and how the planned changes are
shown (a unified diff for --dry-run) or written (atomically)."""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from pathlib import Path

from moltbuild.adopt.pyproject import Change, plan_pyproject
from moltbuild.adopt.survey import Survey
from moltbuild.files import read_text, write_atomic

IGNORES_BUILD = frozenset({"build", "build/", "/build", "/build/", "**/build", "**/build/"})

# The repository's own tasks.py without the line that puts src/ on sys.path (a checkout of
# moltbuild itself needs it; a repository using the installed package does not).
# tests/unit/test_adopt.py keeps the two in step.
TASKS_PY = '''\
"""moltbuild tasks: `invoke --list`. The logic lives in the moltbuild package; this file composes."""

from invoke import Collection

from moltbuild.cli import build, core, env, gh, hints, k8s, kaniko, registry

ns = Collection()
for module in (core, build, registry):
    for task in module.ns.tasks.values():
        ns.add_task(task)
ns.add_collection(env.ns)
ns.add_collection(k8s.ns)
ns.add_collection(kaniko.ns)
ns.add_collection(gh.ns)
hints.install(ns)  # a "did you mean" after invoke's own parse errors
'''


def plan_tasks(root: Path) -> tuple[Change | None, list[str]]:
    path = root / "tasks.py"
    if not path.exists():
        return Change(path, None, TASKS_PY, "the invoke tasks (invoke --list)"), []
    if "moltbuild" in read_text(path, "tasks.py"):
        return None, ["tasks.py exists and loads moltbuild; unchanged"]
    return None, ["tasks.py exists without moltbuild's tasks; unchanged: add moltbuild.cli's collections"]


def plan_gitignore(root: Path) -> tuple[Change | None, list[str]]:
    path = root / ".gitignore"
    old = read_text(path, ".gitignore") if path.is_file() else None
    if old is not None and IGNORES_BUILD.intersection(line.strip() for line in old.splitlines()):
        return None, [".gitignore already ignores build/; unchanged"]
    new = (old or "") + ("\n" if old and not old.endswith("\n") else "") + "build/\n"
    return Change(path, old, new, "added build/ (reports and logs)"), []


def plan_changes(survey: Survey) -> tuple[list[Change], list[str]]:
    """Every file to write, and a line for each one left as it is."""
    changes, lines = [], []
    for change, said in (plan_pyproject(survey), plan_tasks(survey.root), plan_gitignore(survey.root)):
        lines += said
        changes += [change] if change else []
    return changes, lines


def _rel(root: Path, path: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def diff(change: Change, root: Path) -> str:
    rel = _rel(root, change.path)
    old = (change.old or "").splitlines()
    before = "/dev/null" if change.old is None else f"a/{rel}"
    return "\n".join(difflib.unified_diff(old, change.new.splitlines(), before, f"b/{rel}", lineterm=""))


def apply(changes: list[Change], root: Path, *, dry_run: bool, say: Callable[[str], None]) -> None:
    if not changes:
        say("nothing to change: the repository already has everything init writes")
        return
    for change in changes:
        if dry_run:
            say(diff(change, root))
        else:
            write_atomic(change.path, change.new)
            say(f"wrote {_rel(root, change.path)}: {change.what}")
    if dry_run:
        say(f"dry run: nothing written ({len(changes)} file(s) would change)")
    else:
        say("next: invoke --list, then invoke build --dry-run")

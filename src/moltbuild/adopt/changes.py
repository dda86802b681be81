"""The other files init writes (tasks.py, build/ in .gitignore), and how the planned changes are
shown (a unified diff for --dry-run) or written (atomically)."""

from __future__ import annotations

import ast
import difflib
import os
from collections.abc import Callable
from pathlib import Path

from moltbuild.adopt.pyproject import Change, line_ending, plan_pyproject
from moltbuild.adopt.survey import Survey
from moltbuild.files import read_text, write_atomic

IGNORES_BUILD = frozenset({"build", "build/", "/build", "/build/", "**/build", "**/build/"})

# The repository's own tasks.py without the line that puts src/ on sys.path (a checkout of
# moltbuild itself needs it; a repository using the installed package does not).
# tests/unit/test_adopt.py keeps the two in step.
TASKS_PY = '''\
"""moltbuild tasks: `invoke --list`. The logic lives in the moltbuild package; this file composes."""

from invoke import Collection

from moltbuild.cli import build, core, dev, env, gh, hints, k8s, kaniko, registry

ns = Collection()
for module in (core, build, registry, dev):
    for task in module.ns.tasks.values():
        ns.add_task(task)
ns.add_collection(env.ns)
ns.add_collection(k8s.ns)
ns.add_collection(kaniko.ns)
ns.add_collection(gh.ns)
hints.install(ns)  # a "did you mean" after invoke's own parse errors
'''


def _imports_moltbuild(tree: ast.Module) -> bool:
    """An `import moltbuild...` or `from moltbuild... import` anywhere (a comment does not count)."""
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level]
    return any(name == "moltbuild" or name.startswith("moltbuild.") for name in names)


def plan_tasks(root: Path) -> tuple[Change | None, list[str]]:
    path = root / "tasks.py"
    if not path.exists():
        return Change(path, None, TASKS_PY, "the invoke tasks (invoke --list)"), []
    try:
        tree = ast.parse(read_text(path, "tasks.py"), filename=str(path))
    except SyntaxError as exc:
        return None, [f"tasks.py:{exc.lineno}: not valid Python ({exc.msg}); unchanged: fix it first"]
    if _imports_moltbuild(tree):
        return None, ["tasks.py exists and loads moltbuild; unchanged"]
    return None, ["tasks.py exists without moltbuild's tasks; unchanged: add moltbuild.cli's collections"]


def plan_gitignore(root: Path) -> tuple[Change | None, list[str]]:
    path = root / ".gitignore"
    old = read_text(path, ".gitignore", keep_newlines=True) if path.is_file() else None
    if old is not None and IGNORES_BUILD.intersection(line.strip() for line in old.splitlines()):
        return None, [".gitignore already ignores build/; unchanged"]
    nl = line_ending(old or "")
    new = (old or "") + (nl if old and not old.endswith("\n") else "") + "build/" + nl
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
            # Through a symlink to the file it names: the link stays a link.
            write_atomic(change.path.resolve() if change.path.is_symlink() else change.path, change.new)
            say(f"wrote {_rel(root, change.path)}: {change.what}")
    if dry_run:
        say(f"dry run: nothing written ({len(changes)} file(s) would change)")
    else:
        say("next: invoke --list, then invoke build --dry-run")

"""The README and the handbook say what to type: every `invoke` command line in them names a task
that exists and only flags that task has, and the safe ones (--dry-run builds, doctor, env.show,
--list, --help) run as written on a fresh checkout."""

from __future__ import annotations

import re
import shlex
from functools import cache
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.integration.conftest import clean_env, invoke

pytestmark = pytest.mark.integration

DOCS = (ROOT / "README.md", ROOT / "docs" / "handbook.md")
_SPAN = re.compile(r"`(invoke [^`]+)`")
_BLOCK = re.compile(r"^ {4}(invoke .+)$", re.M)


def documented_commands() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        text = doc.read_text()
        for match in [*_SPAN.finditer(text), *_BLOCK.finditer(text)]:
            line = match.group(1).strip()
            line_no = text[: match.start()].count("\n") + 1
            # A synopsis may continue on the next indented lines: `invoke build [--push] ...`
            if match.re is _BLOCK:
                rest = text[match.end() :].splitlines()[1:]
                for more in rest:
                    if not more.startswith("     ") or more.strip().startswith("invoke "):
                        break
                    line += " " + more.strip()
            found.append((f"{doc.name}:{line_no}", line))
    return found


COMMANDS = documented_commands()


def task_and_flags(line: str) -> tuple[str | None, list[str]]:
    words = line.split()[1:]
    task = next((w for w in words if not w.startswith(("-", "[", "<")) and "=" not in w), None)
    flags = sorted({m for m in re.findall(r"(?<![\w-])--[a-z][a-z-]*", line)})
    return task, flags


@cache
def help_of(project: Path, task: str) -> str:
    out = invoke(project, "--help", task, env=clean_env(), timeout=60)
    return out.stdout if out.returncode == 0 else ""


CORE = {"--list", "--help", "--version", "--complete", "--debug"}


@pytest.mark.parametrize("where, line", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_every_documented_command_names_a_real_task_and_real_flags(where, line, project):
    task, flags = task_and_flags(line)
    if task is None:  # `invoke --list`
        assert set(flags) <= CORE, f"{where}: {line}"
        return
    helptext = help_of(project, task)
    assert helptext, f"{where}: `{line}` names no task {task!r}"
    known = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", helptext))  # whole flags: --only is not --api-only
    unknown = [f for f in flags if f not in CORE and f not in known]
    assert not unknown, f"{where}: `{line}` uses {unknown}, which `invoke {task}` does not have"


def safe(line: str) -> bool:
    if any(ch in line for ch in "[]|<>") or "..." in line:
        return False  # a synopsis, not a command to type
    return "--dry-run" in line or line in ("invoke doctor", "invoke env.show", "invoke --list")


RUNNABLE = [(w, line) for w, line in COMMANDS if safe(line)]


@pytest.mark.parametrize("where, line", RUNNABLE, ids=[w for w, _ in RUNNABLE])
def test_the_safe_documented_commands_run_as_written(where, line, git_project, tmp_path):
    env = clean_env(
        MOLTBUILD_REGISTRY="127.0.0.1:1/docs",
        MOLTBUILD_BASE_MIRROR="127.0.0.1:1/mirror",
        MOLTBUILD_BACKEND="buildah",
        MOLTBUILD_STORAGE_ROOT=str(tmp_path / "storage"),
    )
    out = invoke(git_project, *shlex.split(line)[1:], env=env, timeout=120)
    assert out.returncode == 0, f"{where}: `{line}` failed:\n{out.stdout[-1500:]}\n{out.stderr[-1500:]}"
    assert "Traceback" not in out.stderr


def test_the_docs_hold_commands_at_all():
    assert len(COMMANDS) > 30 and len(RUNNABLE) >= 3, (len(COMMANDS), RUNNABLE)

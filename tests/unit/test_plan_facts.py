"""plan/ computes from facts the flow gathers once: no process runs in plan/, each Dockerfile is
parsed once per run, and the per-command caches start empty with each command."""

from __future__ import annotations

import ast
import os
import subprocess
from pathlib import Path

from moltbuild import project as project_module
from moltbuild.dockerfile import Dockerfile
from moltbuild.flows import facts as gather
from moltbuild.flows.context import Session
from moltbuild.plan.changes import changed_images
from moltbuild.plan.facts import ChangeFacts, GitState
from moltbuild.plan.request import BuildRequest
from moltbuild.project import load_images
from moltbuild.system import state

PLAN = Path(__file__).resolve().parents[2] / "src" / "moltbuild" / "plan"


def test_no_module_of_plan_runs_a_process():
    for path in sorted(PLAN.glob("*.py")):
        tree = ast.parse(path.read_text())
        imported = {
            node.module if isinstance(node, ast.ImportFrom) else alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
        }
        assert not imported & {"subprocess", "moltbuild.system.processes", "moltbuild.k8s.manifests"}, path
        assert "Runner" not in path.read_text(), path


def test_changes_are_computed_from_facts_without_a_repository(project):
    images = load_images(project)
    facts = ChangeFacts("main", "b" * 40, ("api/moltbook_api/app.py", "api/tests/test_x.py"))
    sha, changes = changed_images(project, images, facts)
    assert sha == "b" * 40
    assert {c.image: c.changed for c in changes} == {"api": True, "frontend": False}
    _, unknown = changed_images(project, images, ChangeFacts("gone"))
    assert all(c.changed and "not a known commit" in c.reason for c in unknown)


def _git(root: Path, *args: str) -> None:
    ident = ["-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run(["git", "-C", str(root), *ident, *args], check=True, env={"PATH": os.environ["PATH"]})


def test_plan_facts_parse_each_dockerfile_once(project, monkeypatch):
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "first"]):
        _git(project, *args)
    reads: list[Path] = []
    real = Dockerfile.read.__func__

    def counted(cls, path, build_args=None):
        reads.append(path)
        return real(cls, path, build_args)

    monkeypatch.setattr(Dockerfile, "read", classmethod(counted))
    session = Session.create(environ={"PATH": os.environ["PATH"]}, project_root=project)
    found = gather.plan_facts(session, BuildRequest())
    assert sorted(reads) == sorted(i.config.dockerfile for i in found.images)  # smoke plans included
    assert all(i.smoke is not None for i in found.images)
    assert isinstance(found.git, GitState) and found.git.branch == "main" and not found.git.dirty
    assert {i.git for i in found.images} == {found.git}


def test_begin_command_empties_the_caches(project):
    calls: list[int] = []

    @state.command_cache(maxsize=2)
    def square(n: int) -> int:
        calls.append(n)
        return n * n

    assert square(3) == square(3) == 9 and calls == [3]
    load_images(project)
    assert project_module._parsed.cache_info().currsize >= 1
    state.begin_command()
    assert project_module._parsed.cache_info().currsize == 0
    assert square(3) == 9 and calls == [3, 3]

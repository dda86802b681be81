"""Masking is for what people see: data read back from git or a tool stays exact even when a
secret's text occurs in it (a branch named like a password, a sha that holds a token's letters);
the console line, the log and the error shown mask it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from moltbuild.errors import CommandError
from moltbuild.flows import facts as gather
from moltbuild.flows.context import Session
from moltbuild.plan.planner import PlanInputs, make_plan
from moltbuild.plan.request import BuildRequest
from moltbuild.plan.shown import render_plan
from moltbuild.settings import MASK
from moltbuild.system.processes import Runner

REVISION = "org.opencontainers.image.revision"
SOURCE = "org.opencontainers.image.source"


def _git(root: Path, *args: str) -> str:
    ident = ["-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    argv = ["git", "-C", str(root), *ident, *args]
    env = {"PATH": os.environ["PATH"]}
    return subprocess.run(argv, check=True, capture_output=True, text=True, env=env).stdout


@pytest.fixture()
def repo(project: Path) -> tuple[Path, str]:
    for args in (
        ["init", "-q", "-b", "main"],
        ["remote", "add", "origin", "https://github.com/acme/webshop.git"],
        ["add", "-A"],
        ["commit", "-qm", "first"],
    ):
        _git(project, *args)
    return project, _git(project, "rev-parse", "HEAD").strip()


def test_git_facts_stay_exact_when_a_secret_occurs_in_them(repo, capsys):
    root, sha = repo
    token = sha[7:15]  # a secret whose text happens to occur inside the commit sha
    environ = {
        "PATH": os.environ["PATH"],
        "REGISTRY_USERNAME": "u",
        "REGISTRY_PASSWORD": "main",  # and one that reads like the branch
        "MOLTBUILD_SIGNING_PASSWORD": "webshop",  # and one in the origin's URL
        "GITHUB_TOKEN": token,
    }
    session = Session.create(environ=environ, project_root=root)
    request = BuildRequest()
    facts = gather.plan_facts(session, request)
    assert (facts.git.sha, facts.git.branch) == (sha, "main")
    plan = make_plan(request, PlanInputs(session.settings, facts, "buildah", "test"))
    for image in plan.images:
        assert {"main", "latest", f"sha-{sha[:7]}"} <= set(image.tags)
        assert image.revision == image.labels[REVISION] == image.build_args.get("REVISION", sha) == sha
        assert image.labels[SOURCE] == "https://github.com/acme/webshop"
    capsys.readouterr()
    session.runner.say(f"revision {sha} of branch main")
    session.runner.say(render_plan(plan))
    shown = capsys.readouterr().out
    assert token not in shown and "webshop" not in shown and "main" not in shown
    assert f"revision {sha[:7]}{MASK}{sha[15:]} of branch {MASK}" in shown


def test_a_command_s_output_comes_back_exact_and_is_masked_where_shown(tmp_path):
    shown: list[str] = []
    run = Runner(secrets=["s3cr3t-token"], out=shown.append, environ={"PATH": os.environ["PATH"]})
    script = "echo out-s3cr3t-token; echo err-s3cr3t-token >&2"
    res = run.run(["sh", "-c", script], echo=True)
    assert (res.stdout, res.stderr) == ("out-s3cr3t-token\n", "err-s3cr3t-token\n")
    log = tmp_path / "job.log"
    streamed = run.stream(["sh", "-c", script], prefix="[x] ", log_path=log)
    assert streamed.stdout.splitlines() == ["out-s3cr3t-token", "err-s3cr3t-token"]
    assert "s3cr3t-token" not in log.read_text() + "\n".join(shown)
    assert f"[x] out-{MASK}" in shown
    with pytest.raises(CommandError) as failed:
        run.run(["sh", "-c", "echo no-s3cr3t-token >&2; exit 3"])
    assert "s3cr3t-token" not in str(failed.value) + failed.value.tail
    with pytest.raises(CommandError) as streamed_failure:
        run.stream(["sh", "-c", "echo no-s3cr3t-token; exit 3"])
    assert "s3cr3t-token" not in str(streamed_failure.value) + streamed_failure.value.tail

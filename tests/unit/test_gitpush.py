"""moltbuild.ci.pins against a real bare repository in tmp_path: commit the pin, push, rebase, retry."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from moltbuild.ci import pins as gitpush
from moltbuild.ci.pins import BOT_EMAIL, BOT_NAME, commit_and_push
from moltbuild.errors import CommandError, ConfigError, MoltbuildError
from moltbuild.system.processes import Runner

MESSAGE = "Pin images built by moltbuild"
KUSTOMIZATION = """\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: moltbook
resources:
  - api.yml
images:
  - name: ghcr.io/ardenone/moltbook-api
    newName: ghcr.io/ardenone/moltbook-api
    newTag: latest
"""
PINNED = KUSTOMIZATION.replace("newTag: latest", "newTag: sha-abc1234\n    digest: sha256:" + "1" * 64)


@dataclass
class Repos:
    bare: Path  # origin
    work: Path  # the clone the pipeline pins in
    other: Path  # another clone: a run that pins or a person who pushes first
    runner: Runner
    lines: list[str]

    @property
    def kust(self) -> Path:
        return self.work / "k8s" / "kustomization.yml"

    def git(self, where: Path, *args: str) -> str:
        return self.runner.run(["git", "-C", str(where), *args], what=f"git {args[0]}").stdout.strip()

    def origin(self, *args: str) -> str:
        return self.runner.run(["git", "--git-dir", str(self.bare), *args]).stdout.strip()

    def push_from_other(self, relpath: str, text: str, subject: str) -> None:
        self.git(self.other, "pull", "-q", "--rebase", "origin", "main")
        path = self.other / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        self.git(self.other, "add", relpath)
        self.git(self.other, "commit", "-q", "-m", subject)
        self.git(self.other, "push", "-q", "origin", "HEAD:main")

    def push(self, **kw) -> bool:
        return commit_and_push(
            self.work, [self.kust], runner=self.runner, message=MESSAGE, **({"environ": {}} | kw)
        )


@pytest.fixture()
def repos(tmp_path, monkeypatch) -> Repos:
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text("")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / ".gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    for key in (
        "GIT_AUTHOR_NAME",
        "GIT_AUTHOR_EMAIL",
        "GIT_COMMITTER_NAME",
        "GIT_COMMITTER_EMAIL",
        "GIT_DIR",
    ):
        monkeypatch.delenv(key, raising=False)
    lines: list[str] = []
    r = Repos(tmp_path / "origin.git", tmp_path / "work", tmp_path / "other", Runner(out=lines.append), lines)
    r.runner.run(["git", "init", "-q", "--bare", "-b", "main", str(r.bare)])
    r.runner.run(["git", "init", "-q", "-b", "main", str(r.work)])
    r.git(r.work, "config", "user.name", "Developer")
    r.git(r.work, "config", "user.email", "dev@example.org")
    r.kust.parent.mkdir()
    r.kust.write_text(KUSTOMIZATION)
    (r.work / "README.md").write_text("moltbook\n")
    r.git(r.work, "add", ".")
    r.git(r.work, "commit", "-q", "-m", "Initial")
    r.git(r.work, "remote", "add", "origin", str(r.bare))
    r.git(r.work, "push", "-q", "-u", "origin", "main")
    r.runner.run(["git", "clone", "-q", str(r.bare), str(r.other)])
    r.git(r.other, "config", "user.name", "Someone Else")
    r.git(r.other, "config", "user.email", "else@example.org")
    lines.clear()
    return r


@pytest.fixture()
def naps(monkeypatch) -> list[float]:
    """gitpush's pause between attempts, recorded instead of slept (only gitpush's `time`)."""
    slept: list[float] = []
    monkeypatch.setattr(gitpush, "time", SimpleNamespace(sleep=slept.append))
    return slept


def subjects(r: Repos, ref: str = "main") -> list[str]:
    return r.origin("log", "--format=%s", ref).splitlines()


def test_the_pin_is_committed_as_the_bot_and_pushed(repos, naps):
    repos.kust.write_text(PINNED)
    (repos.work / "README.md").write_text("a local edit that is not the pin\n")
    (repos.work / "notes.txt").write_text("staged by someone, not the pin\n")
    repos.git(repos.work, "add", "notes.txt")

    assert repos.push() is True

    assert subjects(repos) == [MESSAGE, "Initial"]
    assert repos.origin("log", "-1", "--format=%an|%ae|%cn|%ce", "main") == "|".join(
        [BOT_NAME, BOT_EMAIL, BOT_NAME, BOT_EMAIL]
    )
    assert repos.origin("show", "main:k8s/kustomization.yml") + "\n" == PINNED
    assert repos.origin("show", "--name-only", "--format=", "main") == "k8s/kustomization.yml"
    status = repos.runner.run(["git", "-C", str(repos.work), "status", "--porcelain"]).stdout.splitlines()
    assert status == [" M README.md", "A  notes.txt"], "other edits, staged or not, stay uncommitted"
    assert repos.lines == [f"pushed {MESSAGE!r} to origin/main"]
    assert naps == []


def test_the_identity_comes_from_the_environment_when_given(repos):
    repos.kust.write_text(PINNED)
    environ = {"GIT_AUTHOR_NAME": "Release Bot", "GIT_AUTHOR_EMAIL": "release@example.org"}
    assert repos.push(environ=environ) is True
    assert repos.origin("log", "-1", "--format=%an <%ae>", "main") == "Release Bot <release@example.org>"


def test_a_new_untracked_pin_file_is_committed(repos):
    pins = repos.work / "k8s" / "pins.yml"
    pins.write_text("api: sha-abc1234\n")
    assert commit_and_push(repos.work, [pins], runner=repos.runner, environ={}, message=MESSAGE) is True
    assert repos.origin("show", "main:k8s/pins.yml") == "api: sha-abc1234"


def test_nothing_to_commit(repos):
    (repos.work / "README.md").write_text("dirty, but not the pin\n")
    head = repos.origin("rev-parse", "main")
    local = repos.git(repos.work, "rev-parse", "HEAD")

    assert repos.push() is False

    assert repos.lines == ["k8s/kustomization.yml: nothing to commit"]
    assert repos.origin("rev-parse", "main") == head
    assert repos.git(repos.work, "rev-parse", "HEAD") == local


def test_a_moved_remote_tip_is_rebased_on_and_pushed_again(repos, naps):
    repos.push_from_other("k8s/api.yml", "kind: Deployment\n", "Someone else's change")
    repos.kust.write_text(PINNED)

    assert repos.push() is True

    assert subjects(repos) == [MESSAGE, "Someone else's change", "Initial"]
    assert repos.origin("rev-list", "--merges", "main") == "", "rebased, not merged"
    assert repos.origin("show", "main:k8s/kustomization.yml") + "\n" == PINNED
    assert repos.origin("show", "main:k8s/api.yml") == "kind: Deployment"
    assert repos.lines == [
        "origin/main moved on; rebasing and trying again (2/3)",
        f"pushed {MESSAGE!r} to origin/main",
    ]
    assert naps == [1]


def test_a_conflicting_pin_is_a_clear_error_and_the_rebase_is_undone(repos, naps):
    repos.push_from_other(
        "k8s/kustomization.yml", KUSTOMIZATION.replace("latest", "sha-9999999"), "Pinned by another run"
    )
    theirs = repos.origin("rev-parse", "main")
    repos.kust.write_text(PINNED)

    with pytest.raises(MoltbuildError) as err:
        repos.push()

    message = err.value.message
    assert message.startswith("rebasing the pin onto origin/main failed (")
    assert message.endswith("someone changed the same lines: pin again on the new head")
    assert repos.origin("rev-parse", "main") == theirs, "nothing of ours reached the remote"
    git_dir = repos.work / ".git"
    assert not (git_dir / "rebase-merge").exists() and not (git_dir / "rebase-apply").exists()
    assert repos.git(repos.work, "symbolic-ref", "--short", "HEAD") == "main"
    assert repos.git(repos.work, "log", "-1", "--format=%s") == MESSAGE
    assert repos.kust.read_text() == PINNED
    assert naps == []


def test_a_conflict_error_is_one_line_naming_the_conflicting_file(repos, naps):
    repos.push_from_other(
        "k8s/kustomization.yml", KUSTOMIZATION.replace("latest", "sha-9999999"), "Pinned by another run"
    )
    repos.kust.write_text(PINNED)
    with pytest.raises(MoltbuildError) as err:
        repos.push()
    assert "\n" not in err.value.message
    assert "k8s/kustomization.yml" in err.value.message


def test_a_remote_that_keeps_moving_exhausts_the_attempts(repos, monkeypatch):
    slept: list[float] = []

    def meanwhile(seconds: float) -> None:  # during each pause another run pins first
        slept.append(seconds)
        repos.push_from_other(f"k8s/other-{seconds}.yml", "x: 1\n", f"Other pin {seconds}")

    monkeypatch.setattr(gitpush, "time", SimpleNamespace(sleep=meanwhile))
    repos.push_from_other("k8s/other-0.yml", "x: 0\n", "Other pin 0")
    repos.kust.write_text(PINNED)

    with pytest.raises(MoltbuildError) as err:
        repos.push(attempts=3)

    assert err.value.message.startswith("git push to origin/main failed after 3 attempt(s): error: ")
    assert "failed to push some refs" in err.value.message
    assert slept == [1, 2]
    assert subjects(repos)[0] == "Other pin 2"
    assert MESSAGE not in subjects(repos)
    assert [line for line in repos.lines if "moved on" in line] == [
        "origin/main moved on; rebasing and trying again (2/3)",
        "origin/main moved on; rebasing and trying again (3/3)",
    ]


def test_one_attempt_means_no_rebase(repos, naps):
    repos.push_from_other("k8s/api.yml", "kind: Deployment\n", "Someone else's change")
    before = repos.git(repos.work, "log", "--format=%s")
    repos.kust.write_text(PINNED)

    with pytest.raises(MoltbuildError) as err:
        repos.push(attempts=1)

    assert err.value.message.startswith("git push to origin/main failed after 1 attempt(s): error: ")
    assert naps == []
    assert repos.git(repos.work, "log", "--format=%s") == f"{MESSAGE}\n{before}", "the pin stays committed"
    assert not any("moved on" in line for line in repos.lines)


def test_a_push_refused_for_another_reason_is_not_retried(repos, naps):
    hook = repos.bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'error: pins need a review' >&2\nexit 1\n")
    hook.chmod(0o755)
    repos.kust.write_text(PINNED)

    with pytest.raises(MoltbuildError) as err:
        repos.push(attempts=3)

    assert err.value.message == (
        "git push to origin/main failed after 1 attempt(s): remote: error: pins need a review"
    )
    assert naps == []
    assert subjects(repos) == ["Initial"]


def test_a_remote_that_does_not_exist(repos, naps):
    repos.kust.write_text(PINNED)
    with pytest.raises(MoltbuildError) as err:
        repos.push(remote="upstream")
    assert err.value.message.startswith("git push to upstream/main failed after 1 attempt(s): fatal: ")
    assert "'upstream' does not appear to be a git repository" in err.value.message


def test_an_explicit_branch_is_pushed_to(repos):
    repos.kust.write_text(PINNED)
    assert repos.push(branch="pins/auto", environ={"GITHUB_REF_NAME": "main"}) is True
    assert subjects(repos, "pins/auto") == [MESSAGE, "Initial"]
    assert subjects(repos) == ["Initial"]
    assert repos.lines == [f"pushed {MESSAGE!r} to origin/pins/auto"]


@pytest.mark.parametrize(
    ("environ", "branch"),
    [
        ({"GITHUB_REF_NAME": "main"}, "main"),
        ({"GITHUB_HEAD_REF": "feature/pins", "GITHUB_REF_NAME": "12/merge"}, "feature/pins"),
    ],
    ids=["push", "pull_request"],
)
def test_a_detached_head_pushes_to_the_branch_actions_names(repos, environ, branch):
    repos.git(repos.work, "checkout", "-q", "--detach")
    repos.kust.write_text(PINNED)
    assert repos.push(environ=environ) is True
    assert subjects(repos, branch) == [MESSAGE, "Initial"]


def test_a_detached_head_without_a_branch_is_a_config_error(repos):
    repos.git(repos.work, "checkout", "-q", "--detach")
    head = repos.git(repos.work, "rev-parse", "HEAD")
    repos.kust.write_text(PINNED)

    with pytest.raises(ConfigError) as err:
        repos.push(environ={"GITHUB_SHA": head})

    assert "pass --branch" in err.value.message and "GITHUB_REF_NAME" in err.value.message
    assert repos.git(repos.work, "rev-parse", "HEAD") == head, "nothing was committed"


def test_branch_prefers_the_checked_out_branch_over_the_environment(repos):
    repos.git(repos.work, "checkout", "-q", "-b", "work-branch")

    def git(*args, check=True):
        return repos.runner.run(["git", "-C", str(repos.work), *args], check=check, mutates=False)

    environ = {"GITHUB_HEAD_REF": "feature/pins", "GITHUB_REF_NAME": "main"}
    assert gitpush._branch(git, environ) == "work-branch"
    repos.git(repos.work, "checkout", "-q", "--detach")
    assert gitpush._branch(git, environ) == "feature/pins"
    assert gitpush._branch(git, {"GITHUB_HEAD_REF": "", "GITHUB_REF_NAME": "main"}) == "main"


def test_a_dry_run_changes_nothing(repos):
    lines: list[str] = []
    runner = Runner(dry_run=True, out=lines.append)
    head = repos.git(repos.work, "rev-parse", "HEAD")
    repos.kust.write_text(PINNED)

    commit_and_push(repos.work, [repos.kust], runner=runner, environ={}, message=MESSAGE)

    assert repos.origin("rev-parse", "main") == head
    assert repos.git(repos.work, "rev-parse", "HEAD") == head
    assert repos.git(repos.work, "status", "--porcelain") == "M k8s/kustomization.yml"
    assert any(line.endswith("push origin HEAD:refs/heads/main") for line in lines)


def test_zero_attempts_is_refused_instead_of_reporting_a_push(repos):
    repos.kust.write_text(PINNED)
    with pytest.raises(ConfigError, match="attempts"):
        repos.push(attempts=0)


def test_a_file_outside_the_repository_is_a_config_error(repos, tmp_path):
    outside = tmp_path / "kustomization.yml"
    outside.write_text(PINNED)
    with pytest.raises(ConfigError, match=r"kustomization\.yml"):
        commit_and_push(repos.work, [outside], runner=repos.runner, environ={}, message=MESSAGE)


@pytest.mark.parametrize(
    ("tail", "reason"),
    [
        (
            "To /srv/origin.git\nhint: a hint\nerror: failed to push some refs\n",
            "error: failed to push some refs",
        ),
        ("remote: error: GH006: Protected branch\nerror: failed\n", "remote: error: GH006: Protected branch"),
        ("fatal: unable to access 'https://x/'\n", "fatal: unable to access 'https://x/'"),
        ("Everything up-to-date\n  the last line  \n\n", "the last line"),
        ("", "git push failed with exit code 1"),
    ],
)
def test_reason_is_gits_own_error_line(tail, reason):
    assert gitpush._reason(CommandError(["git", "push"], 1, tail, what="git push")) == reason

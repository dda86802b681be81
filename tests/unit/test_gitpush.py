"""moltbuild.ci.pins against a real bare repository in tmp_path: the pin alone on the remote tip,
retried when the tip moves, a pull request (against the fake GitHub API) when the branch is
protected, the default branch or nothing for a run on a tag."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from moltbuild.ci import pins as gitpush
from moltbuild.ci.backoff import GITHUB_RETRY
from moltbuild.ci.github import GitHub
from moltbuild.ci.pins import BOT_EMAIL, BOT_NAME, PIN_RETRY, commit_and_push
from moltbuild.errors import CommandError, ConfigError, MoltbuildError
from moltbuild.settings import Secret
from moltbuild.system.processes import Runner
from moltbuild.system.retry import Clock

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
FRONTEND = """\
  - name: ghcr.io/ardenone/moltbook-frontend
    newName: ghcr.io/ardenone/moltbook-frontend
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
    naps: list[float] = field(default_factory=list)  # the pauses between tries, recorded not slept

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
        retry = PIN_RETRY.but(clock=Clock(sleep=self.naps.append))
        return commit_and_push(
            self.work,
            [self.kust],
            runner=self.runner,
            message=MESSAGE,
            **({"environ": {}, "retry": retry} | kw),
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
    r = Repos(
        tmp_path / "origin.git",
        tmp_path / "work",
        tmp_path / "other",
        Runner(environ=os.environ, out=lines.append),
        lines,
    )
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
def naps(repos) -> list[float]:
    """The pin push's pauses between attempts, recorded instead of slept (its policy's clock)."""
    return repos.naps


def subjects(r: Repos, ref: str = "main") -> list[str]:
    return r.origin("log", "--format=%s", ref).splitlines()


def test_the_pin_is_committed_as_the_bot_and_pushed_alone(repos, naps):
    repos.kust.write_text(PINNED)
    (repos.work / "README.md").write_text("a local edit that is not the pin\n")
    (repos.work / "notes.txt").write_text("staged by someone, not the pin\n")
    repos.git(repos.work, "add", "notes.txt")
    local = repos.git(repos.work, "rev-parse", "HEAD")

    assert repos.push() is True

    assert subjects(repos) == [MESSAGE, "Initial"]
    assert repos.origin("log", "-1", "--format=%an|%ae|%cn|%ce", "main") == "|".join(
        [BOT_NAME, BOT_EMAIL, BOT_NAME, BOT_EMAIL]
    )
    assert repos.origin("show", "main:k8s/kustomization.yml") + "\n" == PINNED
    assert repos.origin("show", "--name-only", "--format=", "main") == "k8s/kustomization.yml"
    status = repos.runner.run(["git", "-C", str(repos.work), "status", "--porcelain"]).stdout.splitlines()
    assert status == [" M README.md", " M k8s/kustomization.yml", "A  notes.txt"], "the checkout is untouched"
    assert repos.git(repos.work, "rev-parse", "HEAD") == local
    pin = repos.origin("rev-parse", "--short=7", "main")
    assert repos.lines == [f"pushed {MESSAGE!r} to origin/main ({pin}, the pin alone)"]
    assert naps == []


def test_an_unpushed_local_commit_stays_local(repos, naps):
    (repos.work / "secret-plan.md").write_text("not ready\n")
    repos.git(repos.work, "add", "secret-plan.md")
    repos.git(repos.work, "commit", "-q", "-m", "Local work, not pushed")
    repos.kust.write_text(PINNED)

    assert repos.push() is True

    assert subjects(repos) == [MESSAGE, "Initial"]
    assert repos.origin("ls-tree", "-r", "--name-only", "main").split() == [
        "README.md",
        "k8s/kustomization.yml",
    ]
    assert repos.git(repos.work, "log", "--format=%s") == "Local work, not pushed\nInitial"


def test_a_remote_that_moved_before_the_pin_gets_it_on_its_tip(repos, naps):
    repos.push_from_other("k8s/api.yml", "kind: Deployment\n", "Someone else's change")
    (repos.work / "README.md").write_text("dirty tracked file\n")
    repos.kust.write_text(PINNED)

    assert repos.push() is True

    assert subjects(repos) == [MESSAGE, "Someone else's change", "Initial"]
    assert repos.origin("show", "main:k8s/api.yml") == "kind: Deployment"
    assert repos.origin("show", "main:README.md") == "moltbook", "the dirty file was not carried"
    assert naps == []


def test_a_tip_that_moves_during_the_push_is_pinned_on_again(repos, naps, monkeypatch):
    real_tip = gitpush.Pins.tip
    calls: list[str] = []

    def tip_then_someone_pushes(self, branch):
        found = real_tip(self, branch)
        if not calls:  # between our fetch and our push, another run pins first
            repos.push_from_other("k8s/api.yml", "kind: Deployment\n", "Another run's pin")
        calls.append(found)
        return found

    monkeypatch.setattr(gitpush.Pins, "tip", tip_then_someone_pushes)
    repos.kust.write_text(PINNED)

    assert repos.push() is True

    assert subjects(repos) == [MESSAGE, "Another run's pin", "Initial"]
    assert repos.origin("rev-list", "--merges", "main") == ""
    assert len(set(calls)) == 2
    assert repos.lines[0] == "origin/main moved on; pinning on its new tip (2/3)"
    assert naps == [1]


def test_another_runs_pin_of_another_image_survives(repos, naps):
    two = KUSTOMIZATION + FRONTEND
    repos.kust.write_text(two)
    repos.git(repos.work, "commit", "-q", "-am", "Two images")
    repos.git(repos.work, "push", "-q", "origin", "main")
    theirs = two.replace(
        "moltbook-frontend\n    newTag: latest", "moltbook-frontend\n    newTag: sha-fff0000"
    )
    repos.push_from_other("k8s/kustomization.yml", theirs, "Pinned the frontend")
    repos.kust.write_text(two.replace("newTag: latest", "newTag: sha-abc1234", 1))

    assert repos.push() is True

    pinned = repos.origin("show", "main:k8s/kustomization.yml")
    assert "newTag: sha-abc1234" in pinned and "newTag: sha-fff0000" in pinned and "latest" not in pinned


def test_a_conflicting_pin_is_a_clear_error_and_nothing_is_pushed(repos, naps):
    repos.push_from_other(
        "k8s/kustomization.yml", KUSTOMIZATION.replace("latest", "sha-9999999"), "Pinned by another run"
    )
    theirs = repos.origin("rev-parse", "main")
    repos.kust.write_text(PINNED)

    with pytest.raises(MoltbuildError) as err:
        repos.push()

    assert err.value.message == (
        "pinning on origin/main failed (conflict in k8s/kustomization.yml): someone changed the same "
        "lines: pin again on the new head"
    )
    assert repos.origin("rev-parse", "main") == theirs
    assert repos.kust.read_text() == PINNED
    assert repos.git(repos.work, "status", "--porcelain") == "M k8s/kustomization.yml"


def test_nothing_to_commit_when_the_remote_has_the_pin(repos):
    (repos.work / "README.md").write_text("dirty, but not the pin\n")
    head = repos.origin("rev-parse", "main")
    assert repos.push() is False
    assert repos.lines == ["k8s/kustomization.yml: nothing to commit (origin/main has it already)"]
    assert repos.origin("rev-parse", "main") == head


def test_a_remote_that_keeps_moving_exhausts_the_attempts(repos, monkeypatch):
    real_tip = gitpush.Pins.tip

    def tip_then_someone_pushes(self, branch):
        found = real_tip(self, branch)
        n = len(subjects(repos))
        repos.push_from_other(f"k8s/other-{n}.yml", "x: 1\n", f"Other pin {n}")
        return found

    monkeypatch.setattr(gitpush.Pins, "tip", tip_then_someone_pushes)
    repos.kust.write_text(PINNED)

    with pytest.raises(MoltbuildError) as err:
        repos.push(attempts=3)

    assert err.value.message.startswith("git push to origin/main failed after 3 attempt(s): error: ")
    assert repos.naps == [1, 2]
    assert MESSAGE not in subjects(repos)


def protect(bare: Path, *, everything: bool = False) -> None:
    """A pre-receive hook that refuses main like GitHub refuses a protected branch."""
    refuse = "true" if everything else '[ "$ref" = refs/heads/main ]'
    hook = bare / "hooks" / "pre-receive"
    hook.write_text(
        "#!/bin/sh\nwhile read old new ref; do\n"
        f"  if {refuse}; then\n"
        '    echo "error: GH006: Protected branch update failed for $ref." >&2\n'
        '    echo "error: Changes must be made through a pull request." >&2\n'
        "    exit 1\n  fi\ndone\n"
    )
    hook.chmod(0o755)


def test_a_protected_branch_gets_a_pull_request(repos, naps, fake_github):
    protect(repos.bare)
    repos.kust.write_text(PINNED)
    head7 = repos.git(repos.work, "rev-parse", "--short=7", "HEAD")
    gh = GitHub(fake_github.url, fake_github.repo, Secret(fake_github.token))

    assert repos.push(open_pull=gh.pull_request) is True

    assert subjects(repos) == ["Initial"], "main untouched"
    assert subjects(repos, f"moltbuild/pins-{head7}") == [MESSAGE, "Initial"]
    [pull] = fake_github.pulls
    assert (pull["head"]["ref"], pull["base"]["ref"], pull["title"]) == (
        f"moltbuild/pins-{head7}",
        "main",
        MESSAGE,
    )
    assert repos.lines[0].startswith(
        "origin/main refused the push (remote: error: GH006: Protected branch update failed"
    )
    assert repos.lines[-1] == f"pull request: {pull['html_url']}"
    assert naps == [], "a refusal is not retried"


def test_the_pull_request_of_a_second_run_is_the_open_one(repos, fake_github):
    protect(repos.bare)
    repos.kust.write_text(PINNED)
    quiet = GITHUB_RETRY.but(clock=Clock(sleep=lambda s: None))
    gh = GitHub(
        fake_github.url, fake_github.repo, Secret(fake_github.token), retry=quiet, say=repos.lines.append
    )
    repos.push(open_pull=gh.pull_request)
    repos.lines.clear()
    repos.push(open_pull=gh.pull_request)
    assert len(fake_github.pulls) == 1
    head = fake_github.pulls[0]["head"]["ref"]
    assert repos.lines[-2:] == [
        f"pull request {head} -> main: one is open already (the branch now holds this pin)",
        f"pull request: {fake_github.pulls[0]['html_url']}",
    ]


def test_a_token_that_may_not_open_pull_requests_says_what_it_needs(repos, fake_github):
    protect(repos.bare)
    repos.kust.write_text(PINNED)
    fake_github.fail(
        "POST", "/pulls$", 403, message="GitHub Actions is not permitted to create pull requests"
    )
    gh = GitHub(fake_github.url, fake_github.repo, Secret(fake_github.token))
    with pytest.raises(MoltbuildError) as err:
        repos.push(open_pull=gh.pull_request)
    head7 = repos.git(repos.work, "rev-parse", "--short=7", "HEAD")
    message = err.value.message
    assert f"the pin is on origin/moltbuild/pins-{head7} but no pull request was opened: " in message
    assert (
        "GITHUB_TOKEN lacks permission (GitHub Actions is not permitted to create pull requests)" in message
    )
    assert "pull-requests: write" in message and "\n" not in message


def test_pull_request_flag_opens_one_without_trying_the_branch(repos, fake_github):
    repos.kust.write_text(PINNED)
    gh = GitHub(fake_github.url, fake_github.repo, Secret(fake_github.token))
    assert repos.push(pull_request=True, open_pull=gh.pull_request) is True
    assert subjects(repos) == ["Initial"] and len(fake_github.pulls) == 1
    assert repos.lines[0].startswith("--pull-request: pushed the pin to origin/moltbuild/pins-")


def test_a_protected_branch_without_github_says_where_the_pin_is(repos):
    protect(repos.bare)
    repos.kust.write_text(PINNED)
    with pytest.raises(MoltbuildError) as err:
        repos.push()
    assert "refused the push (remote: error: GH006" in err.value.message
    assert err.value.message.endswith("open a pull request from it")


def test_a_remote_that_refuses_everything(repos, naps):
    protect(repos.bare, everything=True)
    repos.kust.write_text(PINNED)
    with pytest.raises(MoltbuildError) as err:
        repos.push(attempts=3)
    assert "pushing the pin to origin/moltbuild/pins-" in err.value.message
    assert err.value.message.endswith(
        "for a pull request failed too: remote: error: GH006: Protected "
        "branch update failed for refs/heads/moltbuild/pins-"
        + repos.git(repos.work, "rev-parse", "--short=7", "HEAD")
        + "."
    )
    assert naps == [] and subjects(repos) == ["Initial"]


def test_a_remote_that_does_not_exist(repos, naps):
    repos.kust.write_text(PINNED)
    with pytest.raises(MoltbuildError) as err:
        repos.push(remote="upstream")
    assert err.value.message.startswith("reading the branches of upstream failed: fatal: ")


def test_an_explicit_new_branch_starts_from_the_remote_head(repos):
    repos.kust.write_text(PINNED)
    assert repos.push(branch="pins/auto", environ={"GITHUB_REF_NAME": "main"}) is True
    assert subjects(repos, "pins/auto") == [MESSAGE, "Initial"]
    assert subjects(repos) == ["Initial"]


@pytest.mark.parametrize(
    "environ",
    [
        {"GITHUB_REF_TYPE": "tag", "GITHUB_REF_NAME": "v1.2.3", "GITHUB_REF": "refs/tags/v1.2.3"},
        {"GITHUB_REF_NAME": "v1.2.3", "GITHUB_REF": "refs/tags/v1.2.3"},
        {"GITHUB_REF_NAME": "v1.2.3"},  # a dispatch on a tag: the remote knows it is one
    ],
    ids=["push-tag", "ref-only", "remote-tag"],
)
def test_a_run_on_a_tag_pins_the_default_branch_when_the_tag_is_its_tip(repos, environ):
    repos.git(repos.work, "tag", "v1.2.3")
    repos.git(repos.work, "push", "-q", "origin", "v1.2.3")
    repos.git(repos.work, "checkout", "-q", "--detach", "v1.2.3")
    repos.kust.write_text(PINNED)

    assert repos.push(environ=environ) is True

    assert subjects(repos) == [MESSAGE, "Initial"]
    assert repos.origin("branch", "--list") == "* main", "no branch named after the tag"
    assert repos.lines[0] == "a run on tag v1.2.3: pinning on origin/main, whose tip it is"


def test_a_run_on_an_older_tag_pins_nothing(repos):
    repos.git(repos.work, "tag", "v1.2.3")
    repos.git(repos.work, "push", "-q", "origin", "v1.2.3")
    repos.push_from_other("k8s/api.yml", "kind: Deployment\n", "Later work")
    repos.git(repos.work, "checkout", "-q", "--detach", "v1.2.3")
    head = repos.origin("rev-parse", "main")
    repos.kust.write_text(PINNED)

    assert repos.push(environ={"GITHUB_REF_TYPE": "tag", "GITHUB_REF_NAME": "v1.2.3"}) is False

    assert repos.origin("rev-parse", "main") == head and repos.origin("branch", "--list") == "* main"
    assert repos.lines == [
        "a run on tag v1.2.3, whose commit is not the tip of origin/main: not pinning (pins go to the "
        "default branch or nowhere, never to a branch named after a tag)"
    ]


@pytest.mark.parametrize(
    ("environ", "branch"),
    [
        ({"GITHUB_REF_NAME": "main"}, "main"),
        ({"GITHUB_HEAD_REF": "main", "GITHUB_REF_NAME": "12/merge"}, "main"),
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


def test_crlf_and_a_byte_order_mark_are_pushed_byte_for_byte(repos):
    data = ("\ufeff" + PINNED).replace("\n", "\r\n").encode()
    repos.kust.write_bytes(data)
    assert repos.push() is True
    blob = repos.runner.run(["git", "--git-dir", str(repos.bare), "rev-parse", "main:k8s/kustomization.yml"])
    sha = blob.stdout.strip()
    local = repos.runner.run(["git", "hash-object", "--no-filters", str(repos.kust)]).stdout.strip()
    assert sha == local


def test_a_dry_run_changes_nothing(repos):
    lines: list[str] = []
    runner = Runner(environ=os.environ, dry_run=True, out=lines.append)
    head = repos.git(repos.work, "rev-parse", "HEAD")
    repos.kust.write_text(PINNED)

    commit_and_push(repos.work, [repos.kust], runner=runner, environ={}, message=MESSAGE)

    assert repos.origin("rev-parse", "main") == head
    assert repos.git(repos.work, "rev-parse", "HEAD") == head
    assert repos.git(repos.work, "status", "--porcelain") == "M k8s/kustomization.yml"
    assert any(re.search(r"push -q origin [0-9a-f]{40}:refs/heads/main$", line) for line in lines)
    assert not any(line.startswith("pushed") for line in lines)


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

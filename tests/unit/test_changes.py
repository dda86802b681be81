"""Which images changed between a base revision and HEAD, on a real git history in tmp_path."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from moltbuild.errors import ConfigError, MoltbuildError
from moltbuild.flows.changed import show_changed
from moltbuild.flows.context import Session
from moltbuild.flows.facts import change_facts, changes_since
from moltbuild.plan.changes import (
    Change,
    changed_images,
    check_explicit_base,
    render,
    resolve_base,
    select_changed,
)
from moltbuild.project import load_images
from moltbuild.system.processes import Runner

ZERO = "0" * 40


def git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(root), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def commit(root: Path, message: str = "change") -> str:
    git(root, "add", "-A")
    git(root, "commit", "-qm", message)
    return git(root, "rev-parse", "HEAD")


def edit(root: Path, rel: str, text: str = "# edited\n") -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text((path.read_text() if path.exists() else "") + text)


@pytest.fixture()
def git_env(tmp_path, monkeypatch):
    """No user or system git config; no GitHub event from the machine running the tests."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.delenv("GITHUB_EVENT_PATH", raising=False)


def init_repo(root: Path) -> Path:
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.name", "t")
    git(root, "config", "user.email", "t@example.org")
    commit(root, "first")
    return root


@pytest.fixture()
def repo(project, git_env) -> Path:
    """The project copy (api, frontend, k8s) as a git checkout with one commit."""
    return init_repo(project.resolve())


@pytest.fixture()
def runner() -> Runner:
    return Runner(environ=os.environ, out=lambda _: None)


def reasons(changes: list[Change]) -> dict[str, tuple[bool, str]]:
    return {c.image: (c.changed, c.reason) for c in changes}


# --- what counts as a change ---------------------------------------------------------------------


def test_app_code_selects_only_its_image_and_names_the_base(repo, runner):
    base = git(repo, "rev-parse", "HEAD")
    edit(repo, "api/moltbook_api/app.py")
    commit(repo)
    names, summary = select_changed(repo, load_images(repo), change_facts(repo, "HEAD^", runner))
    assert names == ["api"]
    assert summary == (
        f"changed since HEAD^ ({base[:12]}): api: api/moltbook_api/app.py changed; "
        "frontend: nothing in its context changed"
    )


def test_several_sent_files_are_counted(repo, runner):
    edit(repo, "api/moltbook_api/app.py")
    edit(repo, "api/moltbook_api/extra.py")
    edit(repo, "api/moltbook_api/more.py")
    commit(repo)
    _, changes = changed_images(repo, load_images(repo), change_facts(repo, "HEAD^", runner))
    assert reasons(changes)["api"] == (True, "api/moltbook_api/app.py and 2 more changed")


def test_dockerignored_files_do_not_select_the_image(repo, runner):
    edit(repo, "api/tests/test_app.py")
    edit(repo, "api/moltbook_api/cache.pyc")
    commit(repo)
    _, changes = changed_images(repo, load_images(repo), change_facts(repo, "HEAD^", runner))
    assert reasons(changes)["api"] == (False, "only .dockerignore'd files changed (2)")


def test_the_dockerfile_and_the_dockerignore_count_though_both_are_ignored(repo, runner):
    edit(repo, "api/Dockerfile", "\n")
    edit(repo, "moltbook-frontend/.dockerignore", "docs/\n")
    commit(repo)
    names, summary = select_changed(repo, load_images(repo), change_facts(repo, "HEAD^", runner))
    assert names == ["api", "frontend"]
    assert "api: api/Dockerfile changed" in summary
    assert "frontend: moltbook-frontend/.dockerignore changed" in summary


def test_a_changed_settings_table_selects_that_image_only(repo, runner):
    pyproject = repo / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"/api"', '"/v2"'))
    commit(repo)
    _, changes = changed_images(repo, load_images(repo), change_facts(repo, "HEAD^", runner))
    assert reasons(changes) == {
        "api": (False, "nothing in its context changed"),
        "frontend": (True, "its settings in pyproject.toml changed"),
    }


def test_a_base_whose_pyproject_does_not_parse_counts_as_changed_settings(repo, runner):
    images = load_images(repo)
    pyproject = repo / "pyproject.toml"
    good = pyproject.read_text()
    pyproject.write_text(good + "\n[broken\n")
    commit(repo, "broken")
    pyproject.write_text(good)
    commit(repo, "fixed")
    names, _ = select_changed(repo, images, change_facts(repo, "HEAD^", runner))
    assert names == ["api", "frontend"]


def test_files_outside_every_context_and_uncommitted_edits_select_nothing(repo, runner):
    edit(repo, "README.md")
    commit(repo)
    edit(repo, "api/moltbook_api/app.py")  # not committed: only HEAD is compared
    names, _ = select_changed(repo, load_images(repo), change_facts(repo, "HEAD^", runner))
    assert names == []


def test_the_same_revision_selects_nothing(repo, runner):
    names, summary = select_changed(repo, load_images(repo), change_facts(repo, "HEAD", runner))
    assert names == [] and summary.startswith(f"changed since HEAD ({git(repo, 'rev-parse', 'HEAD')[:12]})")


def test_a_file_with_a_non_ascii_name_selects_its_image(repo, runner):
    edit(repo, "api/moltbook_api/données.py")
    commit(repo)
    names, _ = select_changed(repo, load_images(repo), change_facts(repo, "HEAD^", runner))
    assert names == ["api"]


def test_a_context_at_the_root_with_a_dockerfile_outside_it(tmp_path, git_env, runner):
    root = tmp_path / "mono"
    (root / "src").mkdir(parents=True)
    (root / "docker").mkdir()
    (root / "pyproject.toml").write_text(
        '[tool.moltbuild]\nregistry = "ghcr.io/x"\n\n[tool.moltbuild.images.all]\n'
        'repository = "all"\ncontext = "."\ndockerfile = "docker/Dockerfile"\n'
    )
    (root / "docker" / "Dockerfile").write_text("FROM scratch\n")
    (root / ".dockerignore").write_text("docs/\n")
    (root / "src" / "main.py").write_text("print(1)\n")
    init_repo(root)
    images = load_images(root)
    edit(root, "docs/guide.md")
    commit(root)
    assert reasons(changed_images(root, images, change_facts(root, "HEAD^", runner))[1])["all"] == (
        False,
        "only .dockerignore'd files changed (1)",
    )
    edit(root, "src/main.py")
    commit(root)
    assert reasons(changed_images(root, images, change_facts(root, "HEAD^", runner))[1])["all"] == (
        True,
        "src/main.py changed",
    )
    edit(root, "docker/Dockerfile", "LABEL x=1\n")
    commit(root)
    assert reasons(changed_images(root, images, change_facts(root, "HEAD^", runner))[1])["all"] == (
        True,
        "docker/Dockerfile changed",
    )
    edit(root, ".dockerignore", "tmp/\n")
    commit(root)
    assert reasons(changed_images(root, images, change_facts(root, "HEAD^", runner))[1])["all"] == (
        True,
        ".dockerignore changed",
    )


# --- bases that cannot be compared ---------------------------------------------------------------


def test_an_all_zero_base_builds_everything(repo, runner):
    sha, changes = changed_images(repo, load_images(repo), change_facts(repo, ZERO, runner))
    assert sha is None
    assert {c.image for c in changes if c.changed} == {"api", "frontend"}
    assert changes[0].reason == "first push of the branch (no base): building everything"
    names, summary = select_changed(repo, load_images(repo), change_facts(repo, ZERO, runner))
    assert names == ["api", "frontend"] and summary.startswith(f"changed since {ZERO}: api: first push")


def test_an_unknown_base_builds_everything_and_says_why(repo, runner):
    gone = "deadbeef" * 5
    names, summary = select_changed(repo, load_images(repo), change_facts(repo, gone, runner))
    assert names == ["api", "frontend"]
    assert f"api: base {gone} is not a known commit here: building everything" in summary
    # the default base of a repository with one commit does not exist either
    assert select_changed(repo, load_images(repo), change_facts(repo, "HEAD^", runner))[0] == [
        "api",
        "frontend",
    ]


def test_when_git_cannot_run_the_error_names_the_base(repo, tmp_path):
    empty = tmp_path / "no-tools"
    empty.mkdir()
    session = Session.create(environ={**os.environ, "PATH": str(empty)}, project_root=repo)  # the run's env
    with pytest.raises(
        MoltbuildError, match=r"^--changed: cannot compare with HEAD\^: `git` is not installed"
    ):
        changes_since(session, None, during="--changed")


# --- resolve_base / check_explicit_base ----------------------------------------------------------


def event(tmp_path: Path, payload: object) -> dict[str, str]:
    path = tmp_path / "event.json"
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return {"GITHUB_EVENT_PATH": str(path)}


def test_resolve_base_prefers_the_flag_then_github_then_the_previous_commit(tmp_path):
    environ = event(tmp_path, {"before": "b" * 40})
    assert resolve_base("  main  ", environ) == "main"
    assert resolve_base("", environ) == "b" * 40  # an empty --base is no --base
    assert resolve_base(None, environ) == "b" * 40
    assert resolve_base(None, {}) == "HEAD^"


def test_a_pull_request_compares_with_its_base_branch(tmp_path):
    payload = {"before": "b" * 40, "pull_request": {"base": {"sha": "c" * 40}}}
    assert resolve_base(None, event(tmp_path, payload)) == "c" * 40
    assert resolve_base(None, event(tmp_path, {"pull_request": {}, "before": "d" * 40})) == "d" * 40


@pytest.mark.parametrize("payload", ["{not json", {"before": ""}, {"after": "x"}])
def test_an_unusable_github_event_falls_back_to_the_previous_commit(tmp_path, payload):
    assert resolve_base(None, event(tmp_path, payload)) == "HEAD^"


def test_a_missing_github_event_file_falls_back_to_the_previous_commit(tmp_path):
    assert resolve_base(None, {"GITHUB_EVENT_PATH": str(tmp_path / "absent.json")}) == "HEAD^"


def test_a_base_that_looks_like_an_option_is_refused():
    with pytest.raises(
        ConfigError, match=r"--base '--output=x' is not a revision; pass a branch, tag or commit"
    ):
        resolve_base("--output=x", {})


def test_a_typed_base_must_exist(repo, runner):
    head = git(repo, "rev-parse", "HEAD")
    git(repo, "tag", "v1")
    for base in ("main", "v1", head, head[:8], ZERO):
        check_explicit_base(change_facts(repo, base, runner))  # no error
    with pytest.raises(ConfigError) as info:
        check_explicit_base(change_facts(repo, "deadbeef", runner))
    assert info.value.message == (
        "--base 'deadbeef' is not a commit in this repository; pass a branch, tag or SHA "
        "(fetch it first if it is remote: git fetch origin deadbeef)"
    )


# --- render / show_changed -----------------------------------------------------------------------


def test_render_as_a_table_and_as_json():
    changes = [Change("api", True, "api/x changed"), Change("web", False, "nothing in its context changed")]
    sha = "0123456789abcdef" * 2 + "01234567"
    table = render("main", sha, changes)
    head, *rows = table.splitlines()
    assert head == "base: main (0123456789ab)"
    assert any("api" in r and "yes" in r and "api/x changed" in r for r in rows)
    assert any("web" in r and "no" in r for r in rows)
    assert render(sha[:10], sha, changes).splitlines()[0] == f"base: {sha[:10]}"  # a SHA is not repeated
    assert render("HEAD^", None, changes).splitlines()[0] == "base: HEAD^"
    data = json.loads(render("main", sha, changes, as_json=True))
    assert data == {
        "base": "main",
        "base_sha": sha,
        "changed": ["api"],
        "images": [
            {"image": "api", "changed": True, "reason": "api/x changed"},
            {"image": "web", "changed": False, "reason": "nothing in its context changed"},
        ],
    }


def test_show_changed_prints_json_for_the_project_it_runs_in(repo, monkeypatch, capsys):
    edit(repo, "moltbook-frontend/src/new.js")
    commit(repo)
    monkeypatch.chdir(repo)
    session = Session.create()
    changes = show_changed(session, base="HEAD^", as_json=True)
    data = json.loads(capsys.readouterr().out)
    assert data["changed"] == ["frontend"] == [c.image for c in changes if c.changed]
    assert data["base_sha"] == git(repo, "rev-parse", "HEAD^")
    with pytest.raises(ConfigError, match="--base 'nope' is not a commit in this repository"):
        show_changed(session, base="nope")
    show_changed(session)  # no base: the previous commit, as a table
    assert capsys.readouterr().out.startswith("base: HEAD^ (")

"""`invoke changed` and `invoke build --changed` on a real git history."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.integration.conftest import clean_env, invoke

pytestmark = pytest.mark.integration


def commit(project, message="change"):
    git = ["git", "-C", str(project), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", message], check=True)


def changed(project, *args, env=None):
    out = invoke(project, "changed", "--json", *args, env=env or clean_env())
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize(
    "edit, expected",
    [
        (
            lambda p: (p / "api/moltbook_api/app.py").write_text(
                (p / "api/moltbook_api/app.py").read_text() + "\n# x\n"
            ),
            ["api"],
        ),
        (lambda p: (p / "api/tests/test_app.py").write_text("# a test changed, not sent to the build\n"), []),
        (
            lambda p: (p / "moltbook-frontend/Dockerfile").write_text(
                (p / "moltbook-frontend/Dockerfile").read_text() + "\n"
            ),
            ["frontend"],
        ),
        (
            lambda p: (p / "pyproject.toml").write_text(
                (p / "pyproject.toml").read_text().replace('"/api"', '"/v2"')
            ),
            ["frontend"],
        ),
        (lambda p: (p / "README.md").write_text("outside every context\n"), []),
    ],
    ids=["app-code", "dockerignored", "dockerfile", "settings", "outside"],
)
def test_changed_selects_exactly_the_images_whose_inputs_changed(git_project, edit, expected):
    edit(git_project)
    commit(git_project)
    assert changed(git_project)["changed"] == expected  # default base: HEAD^
    assert changed(git_project, "--base", "HEAD")["changed"] == []


def test_unknown_or_all_zero_base_builds_everything_and_github_event_gives_the_base(git_project, tmp_path):
    assert changed(git_project, "--base", "0" * 40)["changed"] == ["api", "frontend"]
    typo = invoke(git_project, "changed", "--base", "deadbeef", env=clean_env())  # typed: must exist
    assert typo.returncode != 0 and "--base 'deadbeef' is not a commit in this repository" in typo.stderr
    gone = tmp_path / "gone.json"  # GitHub's base of a force-push may be gone: build everything
    gone.write_text(json.dumps({"before": "deadbeef" * 5, "after": "HEAD"}))
    unknown = changed(git_project, env=clean_env(GITHUB_EVENT_PATH=str(gone)))
    assert (
        unknown["changed"] == ["api", "frontend"] and "not a known commit" in unknown["images"][0]["reason"]
    )
    first = subprocess.run(
        ["git", "-C", str(git_project), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    (git_project / "api/moltbook_api/app.py").write_text("# changed\n")
    commit(git_project)
    (git_project / "README.md").write_text("docs only\n")
    commit(git_project)
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"before": first, "after": "HEAD"}))
    got = changed(git_project, env=clean_env(GITHUB_EVENT_PATH=str(event)))
    assert got["base"] == first and got["changed"] == ["api"]


def test_build_changed_with_nothing_changed_says_so_and_exits_0(git_project, tmp_path):
    output = tmp_path / "github_output"
    out = invoke(
        git_project, "build", "--changed", "--base", "HEAD", env=clean_env(GITHUB_OUTPUT=str(output))
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "nothing changed since HEAD: no image to build" in out.stdout
    assert not (git_project / "build" / "images.json").exists()
    assert "pushed=false" in output.read_text().splitlines()

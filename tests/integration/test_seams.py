"""The core seams, end to end: push once then tag remotely, honest dry runs, a validated report."""

from __future__ import annotations

import json

import pytest
import requests

from moltbuild.flows.build import build_images
from moltbuild.flows.context import Session
from moltbuild.plan.request import BuildRequest
from tests.integration.conftest import (
    assert_report_matches_registry,
    build_env,
    invoke,
    read_report,
    registry_digest,
    spied_calls,
    spy_on,
)

pytestmark = pytest.mark.integration


def pushes(calls: list[list[str]]) -> list[list[str]]:
    """`buildah [global flags] push ...` and `buildah ... manifest push ...` calls."""
    return [argv for argv in calls if "push" in argv and "login" not in argv]


def test_push_uploads_each_image_once_and_tag_adds_only_the_new_tag(
    git_project, mirror, storage_root, tmp_path
):
    path, calls = spy_on("buildah", tmp_path)
    env = build_env(mirror, storage_root, "once", PATH=path)
    out = invoke(git_project, "build", "--push", "--backend", "buildah", "--rebuild", env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr
    entries = assert_report_matches_registry(git_project, mirror.url, {"api", "frontend"})
    pushed = pushes(spied_calls(calls))
    assert len(pushed) == 2, pushed  # one upload per image, four tags each
    for entry in entries.values():
        assert len(entry["tags"]) == 4 and entry["pin_tag"] == entry["tags"][0]
        # pushed by image ID, not by a name another run could retag meanwhile
        assert any(entry["image_id"] in argv for argv in pushed)

    calls.unlink()
    dry = invoke(git_project, "build", "--push", "--dry-run", "--backend", "buildah", env=env)
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr
    assert dry.stdout.count("would reuse") == 2 and " bud " not in dry.stdout
    assert not pushes(spied_calls(calls))

    tagged = invoke(git_project, "tag", "--tag", "rc1", env=env)
    assert tagged.returncode == 0, tagged.stdout + tagged.stderr
    assert not pushes(spied_calls(calls))  # manifest PUTs only
    after = read_report(git_project)
    for name, entry in entries.items():
        repo = entry["repository"].split("/", 1)[1]
        assert registry_digest(mirror.url, repo, "rc1") == entry["digest"]
        assert after[name]["tags"] == [*entry["tags"], "rc1"] and after[name]["digest"] == entry["digest"]


def test_push_after_build_pushes_every_planned_tag_then_the_next_build_reuses(
    git_project, mirror, storage_root, tmp_path
):
    path, calls = spy_on("buildah", tmp_path)
    env = build_env(mirror, storage_root, "later", PATH=path)
    built = invoke(git_project, "build", "--frontend-only", "--backend", "buildah", "--rebuild", env=env)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr
    assert read_report(git_project)["frontend"]["outcome"] == "built"
    pushed = invoke(git_project, "push", env=env)
    assert pushed.returncode == 0, pushed.stdout[-2000:] + pushed.stderr
    assert len(pushes(spied_calls(calls))) == 1
    entry = assert_report_matches_registry(git_project, mirror.url, {"frontend"})["frontend"]
    assert entry["tags"][-1].startswith("input-")  # the input tag too, so the next build finds it
    again = invoke(git_project, "build", "--push", "--frontend-only", "--backend", "buildah", env=env)
    assert again.returncode == 0 and "unchanged inputs: reused" in again.stdout
    assert read_report(git_project)["frontend"]["digest"] == entry["digest"]


def test_build_images_dry_run_builds_and_pushes_nothing_whatever_the_session(
    git_project, mirror, storage_root, tmp_path, monkeypatch
):
    """A session with a runner that really runs: dry_run=True alone must stop every change."""
    path, calls = spy_on("buildah", tmp_path)
    monkeypatch.setenv("PATH", path)
    env = build_env(mirror, storage_root, "drysession", PATH=path)
    session = Session.create(
        project_root=git_project, environ=env, cli={"MOLTBUILD_BACKEND": ("buildah", "--backend")}
    )
    assert session.runner.dry_run is False
    records = build_images(session, BuildRequest(push=True, rebuild=True, dry_run=True))
    assert {r.name for r in records} == {"api", "frontend"} and not any(r.pushed for r in records)
    assert all(argv[0] == "version" for argv in spied_calls(calls)), spied_calls(calls)
    assert not (git_project / "build").exists()
    catalog = requests.get(f"{mirror.url}/v2/_catalog?n=1000", timeout=10).json()["repositories"]
    assert not [repo for repo in catalog if repo.startswith("drysession/")]


@pytest.mark.parametrize(
    "text, fragment",
    [
        ('{"version": 1, "images": [{"name": "api", "repo', "images.json: not valid JSON"),
        (None, "images[0].digest: must be sha256:<hex> or null"),
    ],
)
def test_a_broken_report_fails_push_and_verify_with_one_line(
    git_project, mirror, storage_root, text, fragment
):
    report = git_project / "build" / "images.json"
    report.parent.mkdir()
    if text is None:
        entry = {
            "name": "api",
            "repository": f"{mirror.host}/x/moltbook-api",
            "tags": ["sha-abc1234"],
            "digest": "not-a-digest",
            "input_digest": "sha256:" + "1" * 64,
            "backend": "buildah",
            "pushed": True,
            "platforms": ["linux/amd64"],
            "duration_s": 1.0,
        }
        text = json.dumps({"version": 1, "images": [entry]})
    report.write_text(text)
    env = build_env(mirror, storage_root, "x")
    for task in ("push", "verify"):
        out = invoke(git_project, task, env=env)
        assert out.returncode == 2, out.stdout + out.stderr
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and str(report) in lines[0] and fragment in lines[0], out.stderr

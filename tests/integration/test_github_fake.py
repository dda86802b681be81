"""`invoke gh.dispatch` / `invoke gh.runs` as a user runs them, against the FAKE GitHub REST API
on loopback (tests/support/fake_github.py): GitHub itself is unreachable from these machines."""

from __future__ import annotations

import subprocess

import pytest

from tests.integration.conftest import clean_env, invoke

pytestmark = pytest.mark.integration


def gh(project, fake, *args, **extra):
    env = clean_env(
        MOLTBUILD_GITHUB_API=fake.url,
        MOLTBUILD_GITHUB_REPO=fake.repo,
        GITHUB_TOKEN=fake.token,
        **extra,
    )
    return invoke(project, *args, env=env, timeout=180)


def test_a_204_dispatch_finds_its_delayed_run_and_watches_it_through_a_502(project, fake_github):
    fake_github.run_details = False
    fake_github.appear_after = 2
    fake_github.add_run(event="workflow_dispatch", created_at="2026-01-01T00:00:00Z")  # not ours
    fake_github.fail("GET", r"/actions/runs/\d+$", 502)
    out = gh(project, fake_github, "gh.dispatch", "--watch", "--interval", "0.05", "--input", "images=api")
    assert out.returncode == 0, out.stdout + out.stderr
    assert fake_github.dispatches == [
        {"ref": "main", "inputs": {"images": "api"}, "return_run_details": True}
    ]
    assert fake_github.auth == {f"Bearer {fake_github.token}"}
    assert fake_github.token not in out.stdout + out.stderr
    ours = fake_github.runs[0]
    text = out.stdout + out.stderr
    assert f"run #{ours['run_number']}: {ours['html_url']}" in text
    assert "HTTP 502 Server Error; trying again in 1s (2/6)" in text
    order = [text.index(f"run #{ours['run_number']}: {s}") for s in ("queued", "in_progress", "success")]
    assert order == sorted(order)
    assert f"run #{ours['run_number']} succeeded" in text


def test_ghes_dispatch_then_watch(project, fake_github):
    fake_github.ghes = True
    out = gh(project, fake_github, "gh.dispatch", "--watch", "--interval", "0.05")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "this GitHub does not know return_run_details; dispatching without it" in out.stdout + out.stderr
    assert [sorted(d) for d in fake_github.dispatches] == [
        ["inputs", "ref", "return_run_details"],
        ["inputs", "ref"],
    ]


def test_a_failed_run_exits_non_zero_naming_the_step(project, fake_github):
    fake_github.conclusion = "failure"
    out = gh(project, fake_github, "gh.dispatch", "--watch", "--interval", "0.05")
    assert out.returncode != 0
    assert "concluded failure: job build, step 'Build' (failure)" in out.stderr


@pytest.mark.parametrize(
    "status, headers, fragment",
    [
        (401, {}, "GITHUB_TOKEN was rejected (401 fault)"),
        (403, {"X_RateLimit_Remaining": "10"}, "GITHUB_TOKEN lacks permission"),
        (404, {}, "not found in moltbook-org/moltbook"),
        (
            403,
            {"Retry_After": "600"},
            "it asks to wait 600s, more than MOLTBUILD_GITHUB_MAX_WAIT=5s allows",
        ),
        (422, {}, "GitHub refused the request: fault"),
    ],
)
def test_refusals_are_one_clear_line(project, fake_github, status, headers, fragment):
    fake_github.fail("GET", "/runs$", status, **headers)
    out = gh(project, fake_github, "gh.dispatch", MOLTBUILD_GITHUB_MAX_WAIT="5")
    assert out.returncode != 0 and fragment in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert fake_github.dispatches == []


def test_runs_lists_more_than_a_hundred(project, fake_github):
    made = [fake_github.add_run()["html_url"] for _ in range(160)]
    out = gh(project, fake_github, "gh.runs", "--limit", "150")
    assert out.returncode == 0, out.stderr
    listed = [line.split()[-1] for line in out.stdout.splitlines()[2:]]
    assert listed == made[::-1][:150]


def test_missing_token_or_repository_says_which_setting(project, fake_github):
    out = invoke(project, "gh.runs", env=clean_env(MOLTBUILD_GITHUB_REPO="moltbook-org/moltbook"))
    assert out.returncode != 0 and "gh tasks need GITHUB_TOKEN" in out.stderr
    out = invoke(project, "gh.runs", env=clean_env(GITHUB_TOKEN=fake_github.token))  # no git origin
    assert out.returncode != 0 and "set MOLTBUILD_GITHUB_REPO=OWNER/NAME" in out.stderr


def test_commit_pins_opens_a_pull_request_through_the_fake_api(git_project, fake_github, tmp_path):
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(git_project), str(remote)], check=True)
    subprocess.run(["git", "-C", str(git_project), "remote", "add", "origin", str(remote)], check=True)
    kust = git_project / "k8s" / "kustomization.yml"
    kust.write_text(kust.read_text().replace("newTag: latest", "newTag: sha-1234567", 1))
    head7 = subprocess.run(
        ["git", "-C", str(git_project), "rev-parse", "--short=7", "HEAD"], capture_output=True, text=True
    ).stdout.strip()

    out = gh(git_project, fake_github, "k8s.commit-pins", "--pull-request", "--message", "Pin it")

    assert out.returncode == 0, out.stderr
    [pull] = fake_github.pulls
    assert (pull["head"]["ref"], pull["base"]["ref"], pull["title"]) == (
        f"moltbuild/pins-{head7}",
        "main",
        "Pin it",
    )
    assert f"pull request: {pull['html_url']}" in out.stdout + out.stderr
    shown = subprocess.run(
        ["git", "--git-dir", str(remote), "show", f"moltbuild/pins-{head7}:k8s/kustomization.yml"],
        capture_output=True,
        text=True,
    ).stdout
    assert shown == kust.read_text()
    assert fake_github.token not in out.stdout + out.stderr

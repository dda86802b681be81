"""`invoke gh.dispatch` / `invoke gh.runs` against a FAKE GitHub REST API (pytest-httpserver):
GitHub itself is unreachable from these machines."""

from __future__ import annotations

import json

import pytest
from werkzeug import Request, Response

from tests.integration.conftest import clean_env, invoke

pytestmark = pytest.mark.integration
TOKEN = "canary-gh-token-0123456789-not-real"
WF = "/repos/moltbook-org/moltbook/actions/workflows/build-images.yml"


class FakeActions:
    """A run that appears a few polls after the dispatch, then goes queued -> in_progress -> done."""

    def __init__(self, conclusion: str = "success", appear_after: int = 2):
        self.conclusion, self.appear_after = conclusion, appear_after
        self.dispatched: list[dict] = []
        self.list_calls = 0
        self.run_polls = 0
        self.auth: set[str] = set()

    def runs(self, request: Request) -> Response:
        self.auth.add(request.headers.get("Authorization", ""))
        self.list_calls += 1
        old = {
            "id": 1,
            "run_number": 1,
            "status": "completed",
            "conclusion": "success",
            "event": "push",
            "head_branch": "main",
            "head_sha": "a" * 40,
            "created_at": "2026-11-28T10:00:00Z",
            "html_url": "https://github.example/runs/1",
        }
        runs = [old]
        if self.dispatched and self.list_calls > 1 + self.appear_after:
            runs.insert(
                0,
                {
                    **old,
                    "id": 2,
                    "run_number": 2,
                    "event": "workflow_dispatch",
                    "status": "queued",
                    "conclusion": None,
                    "html_url": "https://github.example/runs/2",
                },
            )
        return Response(
            json.dumps({"total_count": len(runs), "workflow_runs": runs}), content_type="application/json"
        )

    def dispatch(self, request: Request) -> Response:
        self.dispatched.append(request.get_json())
        return Response(status=204)

    def _phase(self) -> str:
        """The state of the latest run poll; the jobs endpoint agrees with it."""
        return ["queued", "queued", "in_progress", "in_progress", "completed"][min(self.run_polls, 4)]

    def run(self, request: Request) -> Response:
        self.run_polls += 1
        status = self._phase()
        body = {
            "id": 2,
            "run_number": 2,
            "status": status,
            "html_url": "https://github.example/runs/2",
            "conclusion": self.conclusion if status == "completed" else None,
        }
        return Response(json.dumps(body), content_type="application/json")

    def jobs(self, request: Request) -> Response:
        status = self._phase()
        done = status == "completed"
        steps = [
            {"number": 1, "name": "Install moltbuild", "status": "completed", "conclusion": "success"},
            {
                "number": 2,
                "name": "Build (push unless a pull request)",
                "status": status,
                "conclusion": self.conclusion if done else None,
            },
        ]
        job = {
            "id": 7,
            "name": "build",
            "status": status,
            "conclusion": self.conclusion if done else None,
            "steps": steps,
        }
        return Response(json.dumps({"total_count": 1, "jobs": [job]}), content_type="application/json")


def gh(project, httpserver, *args):
    env = clean_env(
        MOLTBUILD_GITHUB_API=httpserver.url_for("/").rstrip("/"),
        MOLTBUILD_GITHUB_REPO="moltbook-org/moltbook",
        GITHUB_TOKEN=TOKEN,
    )
    return invoke(project, *args, env=env, timeout=120)


def serve(httpserver, fake: FakeActions) -> None:
    httpserver.expect_request(f"{WF}/runs", method="GET").respond_with_handler(fake.runs)
    httpserver.expect_request(f"{WF}/dispatches", method="POST").respond_with_handler(fake.dispatch)
    httpserver.expect_request(
        "/repos/moltbook-org/moltbook/actions/runs/2", method="GET"
    ).respond_with_handler(fake.run)
    httpserver.expect_request("/repos/moltbook-org/moltbook/actions/runs/2/jobs").respond_with_handler(
        fake.jobs
    )


def test_dispatch_finds_the_delayed_run_and_watches_it_to_success(project, httpserver):
    fake = FakeActions()
    serve(httpserver, fake)
    out = gh(
        project,
        httpserver,
        "gh.dispatch",
        "--watch",
        "--interval",
        "0.05",
        "--input",
        "images=api",
        "--input",
        "tag=rc1",
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert fake.dispatched == [
        {"ref": "main", "inputs": {"images": "api", "tag": "rc1"}, "return_run_details": True}
    ]
    assert fake.auth == {f"Bearer {TOKEN}"} and TOKEN not in out.stdout + out.stderr
    text = out.stdout
    assert "run #2: https://github.example/runs/2" in text
    order = [text.index(s) for s in ("run #2: queued", "run #2: in_progress", "run #2: success")]
    assert order == sorted(order)
    assert "build / Build (push unless a pull request): in_progress" in text and "run #2 succeeded" in text


def test_a_failed_run_exits_non_zero_naming_the_step(project, httpserver):
    serve(httpserver, FakeActions(conclusion="failure", appear_after=0))
    out = gh(project, httpserver, "gh.dispatch", "--watch", "--interval", "0.05")
    assert out.returncode != 0
    assert (
        "run #2 concluded failure: job build, step 'Build (push unless a pull request)' (failure)"
        in out.stderr
    )


@pytest.mark.parametrize(
    "status, headers, fragment",
    [
        (401, {}, "GITHUB_TOKEN was rejected (401 Bad credentials)"),
        (403, {"X-RateLimit-Remaining": "10"}, "GITHUB_TOKEN lacks permission"),
        (404, {}, "not found in moltbook-org/moltbook"),
        (
            403,
            {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1800000000"},
            "rate limit reached; it resets at",
        ),
        (422, {}, "GitHub refused the request: Bad credentials"),
    ],
)
def test_refusals_are_one_clear_line(project, httpserver, status, headers, fragment):
    body = json.dumps({"message": "Bad credentials"})
    httpserver.expect_request(f"{WF}/runs").respond_with_data(body, status=status, headers=headers)
    out = gh(project, httpserver, "gh.dispatch")
    assert out.returncode != 0 and fragment in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_runs_lists_the_workflow_runs(project, httpserver):
    serve(httpserver, FakeActions())
    out = gh(project, httpserver, "gh.runs", "--limit", "5")
    assert out.returncode == 0 and "https://github.example/runs/1" in out.stdout and "success" in out.stdout


def test_missing_token_or_repository_says_which_setting(project, httpserver):
    out = invoke(project, "gh.runs", env=clean_env(MOLTBUILD_GITHUB_REPO="moltbook-org/moltbook"))
    assert out.returncode != 0 and "gh tasks need GITHUB_TOKEN" in out.stderr
    out = invoke(project, "gh.runs", env=clean_env(GITHUB_TOKEN=TOKEN))  # the copy has no git origin
    assert out.returncode != 0 and "set MOLTBUILD_GITHUB_REPO=OWNER/NAME" in out.stderr

"""moltbuild.ci.github over real HTTP: pytest-httpserver answers as GitHub's REST API documents."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

import pytest

from moltbuild.ci import dispatch as dispatching
from moltbuild.ci import github
from moltbuild.ci.backoff import GITHUB_RETRY
from moltbuild.ci.dispatch import Watcher
from moltbuild.ci.github import GitHub, GitHubError
from moltbuild.errors import ConfigError
from moltbuild.settings import Secret, Settings, load_settings
from moltbuild.system import retry
from moltbuild.system.processes import Runner
from moltbuild.system.retry import RetryPolicy

TOKEN = "canary-unit-test-token-0123456789abcdef"
REPO = "ardenone/moltbook"
WF = "build-images.yml"
BASE = f"/repos/{REPO}/actions"
LIST = f"{BASE}/workflows/{WF}/runs"
DISPATCH = f"{BASE}/workflows/{WF}/dispatches"
# What every request must carry: the token as a bearer, and GitHub's media type and API version.
SENT = {
    "Authorization": f"Bearer {TOKEN}",
    "Accept": "application/vnd.github+json",
    "X-GitHub-Api-Version": "2022-11-28",
}
DISPATCH_QUERY = {"per_page": "20", "event": "workflow_dispatch", "branch": "main"}


def html(run_id: int) -> str:
    return f"https://github.com/{REPO}/actions/runs/{run_id}"


def a_run(run_id: int, status: str, conclusion: str | None = None, number: int = 7) -> dict:
    return {
        "id": run_id,
        "run_number": number,
        "status": status,
        "conclusion": conclusion,
        "event": "workflow_dispatch",
        "head_branch": "main",
        "head_sha": "0123456789abcdef0123456789abcdef01234567",
        "created_at": "2024-05-01T10:00:00Z",
        "html_url": html(run_id),
    }


def a_job(job_id: int, name: str, status: str, conclusion: str | None = None, steps=()) -> dict:
    return {"id": job_id, "name": name, "status": status, "conclusion": conclusion, "steps": list(steps)}


def a_step(number: int, name: str, status: str, conclusion: str | None = None) -> dict:
    return {"number": number, "name": name, "status": status, "conclusion": conclusion}


def runs_page(*runs: dict) -> dict:
    return {"total_count": len(runs), "workflow_runs": list(runs)}


def gh_error(message: str, status: int) -> dict:
    return {
        "message": message,
        "documentation_url": "https://docs.github.com/rest/actions/workflows",
        "status": str(status),
    }


class Clock:
    """monotonic() and sleep() for dispatch_and_watch: sleeping moves the clock, nothing waits."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def quiet_backoff() -> RetryPolicy:
    """Retries that skip their pauses instead of sleeping them."""
    return GITHUB_RETRY.but(clock=retry.Clock(sleep=lambda seconds: None, now=lambda: 1_700_000_000.0))


@pytest.fixture()
def gh(httpserver) -> GitHub:
    return GitHub(httpserver.url_for(""), REPO, Secret(TOKEN), retry=quiet_backoff())


def expect(httpserver, uri: str, payload, *, method: str = "GET", status: int = 200, **match):
    httpserver.expect_oneshot_request(uri, method=method, headers=SENT, **match).respond_with_json(
        payload, status=status
    )


def paths(httpserver) -> list[str]:
    return [request.path for request, _ in httpserver.log]


def watch(gh: GitHub, clock: Clock, lines: list[str], **kw):
    options = {"workflow": WF, "ref": "main", "inputs": {}, "watch": True, "timeout": 600, "interval": 5}
    return dispatching.dispatch_and_watch(
        gh, **(options | kw), say=lines.append, sleep=clock.sleep, clock=clock
    )


# -- dispatch and watch ------------------------------------------------------------------------


def test_dispatch_returning_run_details_is_followed_to_success(httpserver, gh):
    expect(httpserver, LIST, runs_page(a_run(100, "completed", "success", 6)), query_string=DISPATCH_QUERY)
    expect(
        httpserver,
        DISPATCH,
        {"workflow_run_id": 555, "run_url": f"https://api.github.com{BASE}/runs/555", "html_url": html(555)},
        method="POST",
        json={"ref": "main", "inputs": {"images": "api"}, "return_run_details": True},
    )
    expect(httpserver, f"{BASE}/runs/555", a_run(555, "queued"))
    expect(httpserver, f"{BASE}/runs/555/jobs", {"total_count": 1, "jobs": [a_job(9, "build", "queued")]})
    expect(httpserver, f"{BASE}/runs/555", a_run(555, "in_progress"))
    steps = [a_step(1, "Set up job", "completed", "success"), a_step(2, "Build images", "in_progress")]
    expect(httpserver, f"{BASE}/runs/555/jobs", {"jobs": [a_job(9, "build", "in_progress", None, steps)]})
    expect(httpserver, f"{BASE}/runs/555", a_run(555, "completed", "success"))
    steps = [
        a_step(1, "Set up job", "completed", "success"),
        a_step(2, "Build images", "completed", "success"),
    ]
    expect(httpserver, f"{BASE}/runs/555/jobs", {"jobs": [a_job(9, "build", "completed", "success", steps)]})
    clock, lines = Clock(), []

    run = watch(gh, clock, lines, inputs={"images": "api"})

    httpserver.check_assertions()
    assert (run["id"], run["conclusion"]) == (555, "success")
    assert lines == [
        "dispatched build-images.yml on main with {'images': 'api'}",
        f"run #7: {html(555)}",
        "run #7: queued",
        "  job build: queued",
        "run #7: in_progress",
        "  job build: in_progress",
        "    build / Set up job: success",
        "    build / Build images: in_progress",
        "run #7: success",
        "  job build: success",
        "    build / Build images: success",
        "run #7 succeeded",
    ]
    assert clock.slept == [5, 5]
    assert paths(httpserver).count(LIST) == 1, "the run id came back: no need to look for the run"
    assert not any(TOKEN in line for line in lines)


def test_a_failed_run_raises_naming_the_failed_job_and_step(httpserver, gh):
    expect(httpserver, LIST, runs_page(), query_string=DISPATCH_QUERY)
    expect(httpserver, DISPATCH, {"workflow_run_id": 700}, method="POST")
    expect(httpserver, f"{BASE}/runs/700", a_run(700, "completed", "failure", 9))
    jobs = {
        "jobs": [
            a_job(1, "lint", "completed", "success", [a_step(1, "ruff", "completed", "success")]),
            a_job(
                2,
                "build",
                "completed",
                "failure",
                [
                    a_step(1, "Set up job", "completed", "success"),
                    a_step(2, "Push images", "completed", "failure"),
                    a_step(3, "Pin", "completed", "skipped"),
                ],
            ),
        ]
    }
    expect(httpserver, f"{BASE}/runs/700/jobs", jobs)  # the watcher's look
    expect(httpserver, f"{BASE}/runs/700/jobs", jobs)  # the failure report's
    clock, lines = Clock(), []

    with pytest.raises(GitHubError) as err:
        watch(gh, clock, lines)

    httpserver.check_assertions()
    assert err.value.message == (
        f"run #9 concluded failure: job build, step 'Push images' (failure); {html(700)}"
    )
    assert "    build / Push images: failure" in lines
    assert not any("succeeded" in line for line in lines)
    assert clock.slept == []
    assert TOKEN not in err.value.message


@pytest.mark.parametrize(
    ("jobs", "named"),
    [
        ([a_job(1, "build", "completed", "cancelled", [])], "job build (cancelled)"),
        (
            [
                a_job(
                    1, "build", "completed", "timed_out", [a_step(4, "Smoke test", "completed", "timed_out")]
                )
            ],
            "job build, step 'Smoke test' (timed_out)",
        ),
        ([a_job(1, "build", "completed", "success", [])], "no failed step reported"),
        ([], "no failed step reported"),
    ],
)
def test_failed_step_names_what_failed(httpserver, gh, jobs, named):
    expect(httpserver, f"{BASE}/runs/5/jobs", {"jobs": jobs})
    assert Watcher(gh, 5, print).failed_step() == named
    httpserver.check_assertions()


def test_watcher_says_only_what_changed_and_falls_back_to_the_run_id(httpserver, gh):
    run = {"id": 42, "status": "in_progress", "conclusion": None}
    jobs = {"jobs": [a_job(3, "build", "in_progress", None, [a_step(1, "Checkout", "in_progress")])]}
    for _ in range(2):
        expect(httpserver, f"{BASE}/runs/42", run)
        expect(httpserver, f"{BASE}/runs/42/jobs", jobs)
    lines: list[str] = []
    watcher = Watcher(gh, 42, lines.append)
    assert watcher.poll()["status"] == "in_progress"
    watcher.poll()
    httpserver.check_assertions()
    assert lines == ["run #42: in_progress", "  job build: in_progress", "    build / Checkout: in_progress"]


def test_a_run_still_going_at_the_deadline_raises_with_its_url(httpserver, gh):
    expect(httpserver, LIST, runs_page(), query_string=DISPATCH_QUERY)
    expect(httpserver, DISPATCH, {"workflow_run_id": 800}, method="POST")
    httpserver.expect_request(f"{BASE}/runs/800", headers=SENT).respond_with_json(a_run(800, "in_progress"))
    httpserver.expect_request(f"{BASE}/runs/800/jobs", headers=SENT).respond_with_json({"jobs": []})
    clock, lines = Clock(), []

    with pytest.raises(GitHubError) as err:
        watch(gh, clock, lines, timeout=12, interval=5)

    assert err.value.message == f"run #7 still in_progress after 12s: {html(800)}"
    assert clock.slept == [5, 5, 5]
    assert lines.count("run #7: in_progress") == 1


# -- the API calls -----------------------------------------------------------------------------


def test_runs_sends_only_the_filters_given_and_caps_the_page(httpserver, gh):
    five = [a_run(i, "completed", "success", i) for i in range(5, 0, -1)]
    expect(httpserver, LIST, runs_page(*five), query_string={"per_page": "3"})
    expect(httpserver, LIST, runs_page(*five), query_string={"per_page": "100", "branch": "main"})

    assert [r["id"] for r in gh.runs(WF, limit=3)] == [5, 4, 3]
    assert len(gh.runs(WF, limit=500, branch="main")) == 5
    assert gh.runs(WF, limit=0, event="push") == [], "nothing asked for, nothing fetched"
    httpserver.check_assertions()
    assert len(httpserver.log) == 2


def test_jobs_of_a_run_without_jobs_is_empty(httpserver, gh):
    expect(httpserver, f"{BASE}/runs/3/jobs", {"total_count": 0, "jobs": None})
    assert gh.jobs(3) == []
    httpserver.check_assertions()


def test_dispatch_answered_200_without_a_body_means_look_for_the_run(httpserver, gh):
    httpserver.expect_oneshot_request(DISPATCH, method="POST", headers=SENT).respond_with_data("", status=200)
    assert gh.dispatch(WF, "main", {"images": "api"}) is None
    httpserver.check_assertions()


# -- errors ------------------------------------------------------------------------------------

DISPATCHING = "dispatch of build-images.yml on main"


@pytest.mark.parametrize(
    ("status", "body", "headers", "expected"),
    [
        (
            401,
            gh_error("Bad credentials", 401),
            {},
            f"{DISPATCHING}: GITHUB_TOKEN was rejected (401 Bad credentials); create a new token",
        ),
        (
            403,
            gh_error("Resource not accessible by personal access token", 403),
            {"X-RateLimit-Remaining": "4999"},
            f"{DISPATCHING}: GITHUB_TOKEN lacks permission (Resource not accessible by personal access "
            "token); it needs actions: write (fine-grained) or the repo and workflow scopes (classic)",
        ),
        (
            404,
            gh_error("Not Found", 404),
            {},
            f"{DISPATCHING}: not found in {REPO} (Not Found); check the workflow file name, "
            "MOLTBUILD_GITHUB_REPO, and that the token can see the repository",
        ),
        (
            422,
            gh_error("Workflow does not have 'workflow_dispatch' trigger", 422),
            {},
            f"{DISPATCHING}: GitHub refused the request: Workflow does not have 'workflow_dispatch' trigger",
        ),
        (
            422,
            gh_error('Unexpected inputs provided: ["imagez"]', 422),
            {},
            f'{DISPATCHING}: GitHub refused the request: Unexpected inputs provided: ["imagez"]',
        ),
    ],
    ids=["401", "403-permission", "404", "422-trigger", "422-inputs"],
)
def test_each_refusal_says_what_to_fix(httpserver, gh, status, body, headers, expected):
    httpserver.expect_oneshot_request(DISPATCH, method="POST", headers=SENT).respond_with_json(
        body, status=status, headers=headers
    )
    with pytest.raises(GitHubError) as err:
        gh.dispatch(WF, "main", {"images": "api"})
    httpserver.check_assertions()
    assert err.value.message == expected
    assert TOKEN not in str(err.value)


def test_a_non_json_error_body_is_quoted_and_cut(httpserver, gh):
    page = "<html><body>" + "Bad gateway " * 40 + "</body></html>"
    httpserver.expect_oneshot_request(f"{BASE}/runs/42").respond_with_data(
        page, status=400, content_type="text/html"
    )
    with pytest.raises(GitHubError) as err:
        gh.run(42)
    assert err.value.message == f"run 42: HTTP 400: {page[:200]}"


def test_a_long_github_message_is_cut(httpserver, gh):
    httpserver.expect_oneshot_request(DISPATCH, method="POST").respond_with_json(
        gh_error("x" * 500, 422), status=422
    )
    with pytest.raises(GitHubError) as err:
        gh.dispatch(WF, "main", {})
    assert err.value.message == f"{DISPATCHING}: GitHub refused the request: {'x' * 200}"


@pytest.mark.parametrize(
    ("call", "what"),
    [
        (lambda gh: gh.runs(WF), "runs of build-images.yml"),
        (lambda gh: gh.run(42), "run 42"),
        (lambda gh: gh.jobs(42), "jobs of run 42"),
    ],
    ids=["runs", "run", "jobs"],
)
def test_each_call_names_what_it_was_doing(httpserver, gh, call, what):
    httpserver.expect_request(re.compile(rf"{BASE}/.*"), headers=SENT).respond_with_json(
        gh_error("Not Found", 404), status=404
    )
    with pytest.raises(GitHubError) as err:
        call(gh)
    assert err.value.message.startswith(f"{what}: not found in {REPO} (Not Found)")


def test_an_api_that_does_not_answer():
    with socket.socket() as sock:  # a port nobody listens on: bound, then released
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    gh = GitHub(f"http://127.0.0.1:{port}/", REPO, Secret(TOKEN), retry=quiet_backoff())
    with pytest.raises(GitHubError) as err:
        gh.runs(WF)
    assert err.value.message.startswith(
        f"runs of build-images.yml: http://127.0.0.1:{port} does not answer ("
    )
    assert err.value.message.endswith(
        "6 tries; GitHub may be down (https://www.githubstatus.com), try again later"
    )
    assert TOKEN not in str(err.value)


@pytest.mark.parametrize("repo", ["", None, "ardenone", "a/b/c", "owner name/x", "https://github.com/o/r"])
def test_a_repository_that_is_not_owner_slash_name(repo):
    with pytest.raises(ConfigError) as err:
        GitHub("https://api.github.com", repo, Secret(TOKEN))
    assert err.value.message.startswith(f"MOLTBUILD_GITHUB_REPO={repo!r} must be OWNER/NAME")


@pytest.mark.parametrize("token", [None, Secret("")])
def test_no_token_is_a_config_error_naming_it(token):
    with pytest.raises(ConfigError) as err:
        GitHub("https://api.github.com", REPO, token)
    assert "GITHUB_TOKEN" in err.value.message and "actions: write" in err.value.message


# -- parsing -----------------------------------------------------------------------------------


def test_inputs_are_key_value_pairs():
    pairs = ["images=api,frontend", "note=a=b", "empty=", " tag =v1"]
    assert github.parse_inputs(pairs) == {"images": "api,frontend", "note": "a=b", "empty": "", "tag": "v1"}
    assert github.parse_inputs([]) == {}


@pytest.mark.parametrize("pair", ["images", "=api", "  =api", ""])
def test_an_input_that_is_not_key_value(pair):
    with pytest.raises(ConfigError) as err:
        github.parse_inputs(["ok=1", pair])
    assert err.value.message == f"--input {pair!r} must be KEY=VALUE, e.g. --input images=api"


@pytest.mark.parametrize(
    ("url", "repo"),
    [
        ("https://github.com/ardenone/moltbook.git", "ardenone/moltbook"),
        ("https://github.com/ardenone/moltbook", "ardenone/moltbook"),
        ("https://github.com/ardenone/moltbook/", "ardenone/moltbook"),
        ("https://x-access-token:abc@github.com/ardenone/moltbook.git", "ardenone/moltbook"),
        ("https://github.com/ardenone/ardenone.github.io.git", "ardenone/ardenone.github.io"),
        ("git@github.com:ardenone/moltbook.git", "ardenone/moltbook"),
        ("git@github.com:ardenone/moltbook\n", "ardenone/moltbook"),
        ("ssh://git@github.com/ardenone/moltbook.git", "ardenone/moltbook"),
        ("git://github.com/ardenone/moltbook.git", "ardenone/moltbook"),
        ("ssh://git@ssh.github.com:443/ardenone/moltbook.git", "ardenone/moltbook"),  # SSH over 443
        ("https://gitlab.com/ardenone/moltbook.git", None),
        ("git@ghe.example.com:ardenone/moltbook.git", None),
        ("https://github.com/ardenone", None),
        ("/srv/git/moltbook.git", None),
        ("", None),
    ],
)
def test_repository_from_the_origin_remote(url, repo):
    assert github.repo_from_remote(url) == repo


# -- client() from the settings ----------------------------------------------------------------


@pytest.fixture()
def isolated_git(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text("")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / ".gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))


def session_for(root: Path, environ: dict) -> tuple[Settings, Runner]:
    settings = load_settings(root, environ=environ, tool_config={})
    return settings, Runner(environ=os.environ, secrets=settings.secrets, out=print)


def project_with_origin(root: Path, origin: str | None) -> Path:
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    if origin:
        subprocess.run(["git", "-C", str(root), "remote", "add", "origin", origin], check=True)
    return root


def test_client_takes_the_repository_from_the_setting(httpserver, tmp_path, isolated_git):
    environ = {
        "GITHUB_TOKEN": TOKEN,
        "MOLTBUILD_GITHUB_API": httpserver.url_for(""),
        "MOLTBUILD_GITHUB_REPO": REPO,
    }
    expect(httpserver, f"{BASE}/runs/1", a_run(1, "queued"))
    gh = github.client(*session_for(tmp_path, environ))  # tmp_path is no git repository: not asked
    assert gh.repo == REPO
    assert gh.run(1)["id"] == 1
    httpserver.check_assertions()


@pytest.mark.parametrize(
    "origin", ["git@github.com:someone/fork.git", "https://github.com/someone/fork"], ids=["scp", "https"]
)
def test_client_takes_the_repository_from_the_origin_remote(httpserver, tmp_path, isolated_git, origin):
    root = project_with_origin(tmp_path / "project", origin)
    environ = {"GITHUB_TOKEN": TOKEN, "MOLTBUILD_GITHUB_API": httpserver.url_for("")}
    gh = github.client(*session_for(root, environ))
    assert gh.repo == "someone/fork"
    assert gh.api == httpserver.url_for("").rstrip("/")


@pytest.mark.parametrize("origin", ["https://gitlab.com/someone/fork.git", None], ids=["gitlab", "no-origin"])
def test_client_without_a_github_origin_asks_for_the_setting(tmp_path, isolated_git, origin):
    root = project_with_origin(tmp_path / "project", origin)
    with pytest.raises(ConfigError) as err:
        github.client(*session_for(root, {"GITHUB_TOKEN": TOKEN}))
    assert err.value.message == (
        "cannot tell the GitHub repository: the origin remote is not on github.com; "
        "set MOLTBUILD_GITHUB_REPO=OWNER/NAME"
    )


def test_client_without_a_token(tmp_path):
    with pytest.raises(ConfigError) as err:
        github.client(*session_for(tmp_path, {"MOLTBUILD_GITHUB_REPO": REPO}))
    assert "GITHUB_TOKEN" in err.value.message


# -- gh.runs output ----------------------------------------------------------------------------


def test_render_runs_is_a_table_of_the_runs():
    done = a_run(11, "completed", "failure", 11)
    going = a_run(12, "in_progress", None, 12) | {"event": "push", "head_sha": "fedcba9876543210"}
    text = github.render_runs([going, done, {"id": 13}])
    header, rule, *rows = text.splitlines()
    assert header.split() == ["run", "state", "event", "branch", "sha", "created", "url"]
    assert set(rule.replace(" ", "")) == {"-"}
    assert rows[0].split() == [
        "12",
        "in_progress",
        "push",
        "main",
        "fedcba9",
        "2024-05-01T10:00:00Z",
        html(12),
    ]
    assert rows[1].split() == [
        "11",
        "failure",
        "workflow_dispatch",
        "main",
        "0123456",
        "2024-05-01T10:00:00Z",
        html(11),
    ]
    assert rows[2].split() == ["?"], "a run without fields shows only its unknown state"
    assert github.render_runs([]).splitlines()[0].split()[0] == "run"


@pytest.mark.parametrize(
    "api", ["http://github.example.com/api/v3", "ftp://127.0.0.1/x", "github.example.com"]
)
def test_the_token_never_goes_over_plain_http_to_another_machine(api):
    with pytest.raises(ConfigError) as err:
        GitHub(api, REPO, Secret(TOKEN))
    assert err.value.message.startswith(f"MOLTBUILD_GITHUB_API={api!r}: GITHUB_TOKEN goes only over https://")
    assert TOKEN not in err.value.message
    assert GitHub("http://127.0.0.1:9/api", REPO, Secret(TOKEN)).api == "http://127.0.0.1:9/api"  # loopback


def test_client_takes_the_rate_limit_maximum_from_the_setting(tmp_path):
    environ = {"GITHUB_TOKEN": TOKEN, "MOLTBUILD_GITHUB_REPO": REPO, "MOLTBUILD_GITHUB_MAX_WAIT": "42"}
    assert github.client(*session_for(tmp_path, environ)).retry.max_wait == 42.0
    environ["MOLTBUILD_GITHUB_MAX_WAIT"] = "soon"
    with pytest.raises(ConfigError) as err:
        github.client(*session_for(tmp_path, environ))
    assert err.value.message.startswith("MOLTBUILD_GITHUB_MAX_WAIT='soon' (from environment) must be")

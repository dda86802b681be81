"""The GitHub client rides out GitHub, against the FAKE GitHub API on loopback
(tests/support/fake_github.py): 5xx and dropped connections, primary and secondary rate limits,
GitHub Enterprise Server's 422, paging, and finding the run a 204 dispatch started."""

from __future__ import annotations

import re
import time

import pytest

from moltbuild.ci import dispatch as dispatching
from moltbuild.ci.backoff import GITHUB_RETRY, rate_limit
from moltbuild.ci.github import GitHub, GitHubError, GitHubUnavailable
from moltbuild.settings import Secret
from moltbuild.system.retry import Clock, RetryPolicy

WF = "build-images.yml"
RUN = r"/actions/runs/\d+$"


class Record:
    """What the client said and how long it would have slept (nothing waits)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.naps: list[float] = []
        self.now = 1000.0

    def sleep(self, seconds: float) -> None:
        self.naps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


@pytest.fixture()
def seen() -> Record:
    return Record()


def client(fake, seen: Record, *, now=time.time, **policy) -> GitHub:
    retry = GITHUB_RETRY.but(clock=Clock(sleep=seen.sleep, now=now), **policy)
    return GitHub(fake.url, fake.repo, Secret(fake.token), retry=retry, say=seen.lines.append)


def watch(gh: GitHub, seen: Record, **kw):
    options = {"workflow": WF, "ref": "main", "inputs": {}, "watch": True, "timeout": 600, "interval": 5}
    return dispatching.dispatch_and_watch(
        gh, **(options | kw), say=seen.lines.append, sleep=seen.sleep, clock=seen.clock
    )


# -- transient failures ------------------------------------------------------------------------


def test_a_502_is_tried_again_after_a_pause_and_said(fake_github, seen):
    fake_github.add_run()
    fake_github.fail("GET", "/runs$", 502)
    runs = client(fake_github, seen).runs(WF)
    assert len(runs) == 1
    assert seen.naps == [1]
    assert seen.lines == ["runs of build-images.yml: HTTP 502 Server Error; trying again in 1s (2/6)"]
    assert fake_github.count("GET", "/runs$") == 2


def test_a_github_that_keeps_failing_gives_up_after_bounded_backoff(fake_github, seen):
    fake_github.fail("GET", "/runs$", 503, times=10, message="Service Unavailable")
    with pytest.raises(GitHubUnavailable) as err:
        client(fake_github, seen).runs(WF)
    assert seen.naps == [1, 2, 4, 8, 16]
    assert fake_github.count("GET", "/runs$") == 6
    assert err.value.message == (
        "runs of build-images.yml: HTTP 503 Service Unavailable, 6 tries; GitHub may be down "
        "(https://www.githubstatus.com), try again later"
    )


def test_the_backoff_is_capped():
    policy = RetryPolicy(base=1, cap=10)
    assert [policy.delay(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


# -- rate limits -------------------------------------------------------------------------------


def test_a_secondary_rate_limit_is_waited_out_as_github_asks(fake_github, seen):
    fake_github.fail(
        "POST",
        "/dispatches$",
        403,
        message="You have exceeded a secondary rate limit. Please wait a few minutes.",
        Retry_After="7",
        X_RateLimit_Remaining="4990",
    )
    run_id = client(fake_github, seen).dispatch(WF, "main", {})
    assert isinstance(run_id, int)
    assert seen.naps == [7]
    assert seen.lines == [
        "dispatch of build-images.yml on main: GitHub rate limit reached (secondary; retry-after: 7); "
        "waiting 7s as it asks"
    ]
    assert not any("permission" in line for line in seen.lines)


def test_a_primary_rate_limit_waits_until_the_reset(fake_github, seen):
    reset = int(time.time()) + 20
    fake_github.fail("GET", RUN, 403, X_RateLimit_Remaining="0", X_RateLimit_Reset=str(reset))
    run = fake_github.add_run()
    gh = client(fake_github, seen, now=lambda: reset - 20.0)
    assert gh.run(run["id"])["id"] == run["id"]
    assert seen.naps == [21]  # to the reset, and a second more
    assert "primary; x-ratelimit-reset" in seen.lines[0]


def test_a_429_without_headers_waits_a_minute(fake_github, seen):
    fake_github.fail("GET", "/runs$", 429)
    client(fake_github, seen).runs(WF)
    assert seen.naps == [60]


def test_a_wait_longer_than_the_maximum_fails_saying_so(fake_github, seen):
    fake_github.fail("GET", "/runs$", 403, Retry_After="900")
    with pytest.raises(GitHubError) as err:
        client(fake_github, seen, max_wait=300).runs(WF)
    assert seen.naps == []
    message = err.value.message
    assert message.startswith(
        "runs of build-images.yml: GitHub rate limit reached (secondary; retry-after: 900): it asks to "
        "wait 900s, more than MOLTBUILD_GITHUB_MAX_WAIT=300s allows; try again after "
    )
    assert message.endswith("or raise MOLTBUILD_GITHUB_MAX_WAIT")


def test_rate_limit_waits_add_up_to_the_maximum(fake_github, seen):
    fake_github.fail("GET", "/runs$", 403, times=3, Retry_After="100")
    with pytest.raises(GitHubError, match="more than MOLTBUILD_GITHUB_MAX_WAIT=250s"):
        client(fake_github, seen, max_wait=250).runs(WF)
    assert seen.naps == [100, 100]


def test_a_403_without_rate_limit_signs_is_a_permission_and_not_retried(fake_github, seen):
    fake_github.fail("GET", "/runs$", 403, message="Resource not accessible by integration")
    with pytest.raises(GitHubError, match="GITHUB_TOKEN lacks permission"):
        client(fake_github, seen).runs(WF)
    assert fake_github.count("GET", "/runs$") == 1 and seen.naps == []


@pytest.mark.parametrize(
    ("status", "headers", "message", "wait"),
    [
        (403, {"Retry-After": "30"}, "", 30.0),
        (429, {"retry-after": "5"}, "", 5.0),
        (403, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1060"}, "", 61.0),
        (403, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "900"}, "", 1.0),  # already past
        (403, {}, "You have exceeded a secondary rate limit", 60.0),
        (403, {"X-RateLimit-Remaining": "12"}, "Resource not accessible", None),
        (404, {"Retry-After": "30"}, "", None),
    ],
)
def test_rate_limit_reading(status, headers, message, wait):
    found = rate_limit(status, headers, message, now=1000.0)
    assert (found.wait if found else None) == wait


# -- GitHub Enterprise Server ------------------------------------------------------------------


def test_ghes_422_to_return_run_details_dispatches_again_without_it(fake_github, seen):
    fake_github.ghes = True
    assert client(fake_github, seen).dispatch(WF, "main", {"images": "api"}) is None
    assert fake_github.dispatches == [
        {"ref": "main", "inputs": {"images": "api"}, "return_run_details": True},
        {"ref": "main", "inputs": {"images": "api"}},
    ]
    assert seen.lines == [
        "dispatch of build-images.yml on main: this GitHub does not know return_run_details; "
        "dispatching without it"
    ]


def test_another_422_is_not_retried(fake_github, seen):
    with pytest.raises(GitHubError, match="GitHub refused the request: No ref found for: nope"):
        client(fake_github, seen).dispatch(WF, "nope", {})
    assert len(fake_github.dispatches) == 1


# -- paging ------------------------------------------------------------------------------------


def test_runs_follow_the_link_header_past_a_hundred(fake_github, seen):
    made = [fake_github.add_run()["id"] for _ in range(250)]
    newest_first = made[::-1]
    gh = client(fake_github, seen)
    assert [r["id"] for r in gh.runs(WF, limit=230)] == newest_first[:230]
    queries = [q for m, p, q in fake_github.requests if p.endswith("/runs")]
    assert queries == ["per_page=100", "per_page=100&page=2", "per_page=100&page=3"]
    assert [r["id"] for r in gh.runs(WF, limit=1000)] == newest_first, "no silent cap"
    assert [r["id"] for r in gh.runs(WF, limit=7)] == newest_first[:7]
    assert queries[-1:] == ["per_page=100&page=3"] and fake_github.requests[-1][2] == "per_page=7"


def test_paging_keeps_the_filters(fake_github, seen):
    for i in range(120):
        fake_github.add_run(event="push" if i % 2 else "workflow_dispatch")
    runs = client(fake_github, seen).runs(WF, limit=100, event="push", branch="main")
    assert len(runs) == 60 and {r["event"] for r in runs} == {"push"}


def test_a_next_page_on_another_host_is_refused(httpserver):
    path = "/repos/o/r/actions/workflows/build-images.yml/runs"
    httpserver.expect_request(path).respond_with_json(
        {"workflow_runs": [{"id": 1}]},
        headers={"Link": '<https://elsewhere.example/page2>; rel="next"'},
    )
    gh = GitHub(
        httpserver.url_for(""),
        "o/r",
        Secret("canary"),
        retry=GITHUB_RETRY.but(clock=Clock(sleep=lambda s: None)),
    )
    with pytest.raises(GitHubError, match="expected the next page under"):
        gh.runs(WF, limit=200)


# -- the run a 204 dispatch started ------------------------------------------------------------


def others(fake) -> None:
    """Runs that look like ours in all but one way: none may be followed."""
    now = time.time()
    recent = dispatching._iso(now + 1)
    dispatch = {"event": "workflow_dispatch", "status": "queued", "conclusion": None, "created_at": recent}
    mine = {"actor": {"login": "octocat"}, "triggering_actor": {"login": "octocat"}}
    fake.add_run(**dispatch)  # someone else's dispatch, same branch and commit
    fake.add_run(**dispatch, **mine, head_branch="release")
    fake.add_run(**dispatch, **mine, head_sha="b" * 40)
    fake.add_run(**dispatch, **mine, path=".github/workflows/other.yml")
    fake.add_run(**mine, event="push", created_at=recent)
    fake.add_run(**dispatch | mine | {"created_at": dispatching._iso(now - 600)})  # before the dispatch


def test_a_204_dispatch_follows_only_a_run_that_matches_every_field(fake_github, seen):
    fake_github.run_details = False
    fake_github.appear_after = 2
    others(fake_github)
    before = {r["id"] for r in fake_github.runs}

    run = watch(client(fake_github, seen), seen, watch=False, interval=3)

    ours = [r for r in fake_github.runs if r["id"] not in before]
    assert len(ours) == 1 and run["id"] == ours[0]["id"]
    assert seen.naps == [3, 3], "the new run was listed on the third look"
    assert seen.lines[0] == "dispatched build-images.yml on main"


def test_two_matching_runs_mean_it_cannot_tell(fake_github, seen):
    fake_github.run_details = False
    fake_github.add_run(  # the same user dispatched from elsewhere, just after us
        hidden_for=1,
        event="workflow_dispatch",
        actor={"login": "octocat"},
        created_at=dispatching._iso(time.time() + 2),
    )
    with pytest.raises(GitHubError) as err:
        watch(client(fake_github, seen), seen, watch=False)
    assert err.value.message.startswith(
        "cannot tell which run the dispatch started: 2 runs of build-images.yml on main at aaaaaaa by "
        "octocat started since"
    )


def test_a_token_that_is_no_users_cannot_tell_the_run(fake_github, seen):
    fake_github.run_details = False
    fake_github.user = None
    with pytest.raises(GitHubError, match=r"cannot tell which run is ours: .* the token is no user's"):
        watch(client(fake_github, seen), seen, watch=False)


def test_a_run_that_never_appears_says_it_cannot_tell(fake_github, seen):
    fake_github.run_details = False
    fake_github.appear_after = 1000
    with pytest.raises(GitHubError) as err:
        watch(client(fake_github, seen), seen, timeout=30, interval=10)
    assert err.value.message == (
        "no run of build-images.yml on main at aaaaaaa by octocat appeared within 30s of the "
        "dispatch; cannot tell which run is ours: see the Actions tab"
    )
    assert seen.naps == [10, 10, 10]


def test_ghes_dispatch_then_the_run_is_found_and_watched(fake_github, seen):
    fake_github.ghes = True
    run = watch(client(fake_github, seen), seen, interval=1)
    assert run["conclusion"] == "success" and seen.lines[-1] == f"run #{run['run_number']} succeeded"


# -- watching ----------------------------------------------------------------------------------


def test_github_failing_for_a_while_does_not_end_the_watch(fake_github, seen):
    fake_github.fail("GET", RUN, 502, times=8)  # more than one request's six tries
    run = watch(client(fake_github, seen), seen, interval=5)
    assert run["conclusion"] == "success"
    still = [line for line in seen.lines if "still watching" in line]
    assert len(still) == 1
    assert re.fullmatch(
        rf"run {run['id']}: HTTP 502 Server Error, 6 tries; GitHub may be down "
        rf"\(https://www.githubstatus.com\), try again later; still watching run {run['id']}",
        still[0],
    )
    assert seen.lines[-1].endswith("succeeded")
    assert seen.naps.count(5) >= 1 and 16 in seen.naps


def test_a_failed_run_still_fails(fake_github, seen):
    fake_github.conclusion = "failure"
    with pytest.raises(GitHubError, match=r"concluded failure: job build, step 'Build' \(failure\)"):
        watch(client(fake_github, seen), seen, interval=1)

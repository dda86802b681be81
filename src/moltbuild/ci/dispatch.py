"""`invoke gh.dispatch [--watch]`: start the build workflow, find the run it created, follow it.

GitHub answers a dispatch with the run's id (`return_run_details`) or, older and Enterprise
servers, with 204 and nothing. Then the run is looked for: it must be of this workflow, on this
ref, a `workflow_dispatch`, at the ref's commit, by the token's user, created after the dispatch
(allowing for clock skew) and not listed before it. Two such runs, or a token that is no user's,
and the command says it cannot tell rather than follow someone else's run."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from moltbuild.ci.github import GitHub, GitHubError, GitHubUnavailable, state

SKEW = 30.0  # seconds GitHub's clock and ours may disagree
EVENT = "workflow_dispatch"


@dataclass(frozen=True)
class Expected:
    """What the run a dispatch created looks like."""

    workflow: str
    ref: str
    sha: str
    actor: str
    since: float  # epoch seconds: the dispatch, less the clock-skew allowance

    def matches(self, run: dict) -> bool:
        path = str(run.get("path") or "").split("@")[0]
        actors = {(run.get(k) or {}).get("login") for k in ("actor", "triggering_actor")}
        return (
            (path.endswith("/" + self.workflow) or str(run.get("workflow_id")) == self.workflow)
            and run.get("head_branch") == self.ref
            and run.get("event") == EVENT
            and run.get("head_sha") == self.sha
            and self.actor in actors
            and _epoch(run.get("created_at")) >= self.since
        )

    def describe(self) -> str:
        return f"{self.workflow} on {self.ref} at {self.sha[:7]} by {self.actor}"


def _epoch(stamp: object) -> float:
    try:
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def expected_run(gh: GitHub, workflow: str, ref: str, dispatched_at: float) -> Expected:
    """After a 204: what to look for. A token that is no user's cannot be matched on its actor."""
    actor = gh.login()
    if not actor:
        raise GitHubError(
            f"dispatched {workflow} on {ref}, but cannot tell which run is ours: GitHub answered "
            "without the run's id and the token is no user's (GET /user refused), so the run's actor "
            "cannot be checked; see the Actions tab"
        )
    return Expected(workflow, ref, gh.commit_sha(ref), actor, dispatched_at - SKEW)


def look_for_run(gh: GitHub, want: Expected, known: set[int]) -> int | None:
    """The one new run that matches; None while there is none; an error when there are two."""
    listed = gh.runs(
        want.workflow,
        limit=20,
        event=EVENT,
        branch=want.ref,
        actor=want.actor,
        head_sha=want.sha,
        created=f">={_iso(want.since)}",
    )
    found = [r for r in listed if r["id"] not in known and want.matches(r)]
    if len(found) > 1:
        numbers = ", ".join(f"#{r.get('run_number', r['id'])}" for r in found)
        raise GitHubError(
            f"cannot tell which run the dispatch started: {len(found)} runs of {want.describe()} "
            f"started since ({numbers}); see the Actions tab"
        )
    return found[0]["id"] if found else None


class Watcher:
    """Follow one run to its end: a line for every change of the run, its jobs and their steps."""

    def __init__(self, gh: GitHub, run_id: int, say: Callable[[str], None]):
        self.gh, self.run_id, self.say = gh, run_id, say
        self.seen: dict[str, str] = {}

    def _note(self, key: str, label: str, now: str) -> None:
        if self.seen.get(key) != now:
            self.seen[key] = now
            self.say(f"{label}: {now}")

    def poll(self, run: dict | None = None) -> dict:
        """One look at the run (`run` when just fetched) and its jobs; prints what changed."""
        run = run or self.gh.run(self.run_id)
        self._note("run", f"run #{run.get('run_number', self.run_id)}", state(run))
        for job in self.gh.jobs(self.run_id):
            self._note(f"job {job['id']}", f"  job {job['name']}", state(job))
            for step in job.get("steps") or []:
                self._note(
                    f"step {job['id']} {step.get('number')}",
                    f"    {job['name']} / {step['name']}",
                    state(step),
                )
        return run

    def failed_step(self) -> str:
        for job in self.gh.jobs(self.run_id):
            for step in job.get("steps") or []:
                if step.get("conclusion") in ("failure", "timed_out", "cancelled"):
                    return f"job {job['name']}, step {step['name']!r} ({step['conclusion']})"
            if job.get("conclusion") in ("failure", "timed_out", "cancelled"):
                return f"job {job['name']} ({job['conclusion']})"
        return "no failed step reported"


@dataclass
class Pace:
    """When to give up and how long between looks; sleep and clock are parameters for tests."""

    timeout: float
    interval: float
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self.deadline = self.clock() + self.timeout

    def over(self) -> bool:
        return self.clock() >= self.deadline


def find_run(gh: GitHub, workflow: str, ref: str, inputs: Mapping[str, str], pace: Pace, say) -> int:
    """Dispatch and return the id of the run it created."""
    known = {r["id"] for r in gh.runs(workflow, limit=20, event=EVENT, branch=ref)}
    dispatched_at = gh.retry.clock.now()
    run_id = gh.dispatch(workflow, ref, inputs)
    say(f"dispatched {workflow} on {ref}" + (f" with {dict(inputs)}" if inputs else ""))
    if run_id is not None:
        return run_id
    want = expected_run(gh, workflow, ref, dispatched_at)
    while (run_id := look_for_run(gh, want, known)) is None:
        if pace.over():
            raise GitHubError(
                f"no run of {want.describe()} appeared within {pace.timeout:.0f}s of the dispatch; "
                "cannot tell which run is ours: see the Actions tab"
            )
        pace.sleep(pace.interval)
    return run_id


def follow(watcher: Watcher, first: dict | None, pace: Pace) -> dict:
    """Poll until the run completes (`first`: the run just fetched, if it was); GitHub not
    answering for a while does not end the watch."""
    run: dict = first or {"id": watcher.run_id, "status": "unknown"}
    while True:
        given, first = first, None
        try:
            run = watcher.poll(given)
        except GitHubUnavailable as exc:
            watcher.say(f"{exc.message}; still watching run #{run.get('run_number', watcher.run_id)}")
        if run.get("status") == "completed":
            return run
        if pace.over():
            raise GitHubError(
                f"run #{run.get('run_number')} still {run.get('status')} after {pace.timeout:.0f}s: "
                f"{run.get('html_url')}"
            )
        pace.sleep(pace.interval)


def dispatch_and_watch(
    gh: GitHub,
    *,
    workflow: str,
    ref: str,
    inputs: Mapping[str, str],
    watch: bool,
    timeout: float,
    interval: float,
    say: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict | None:
    """Dispatch, find the run it created, and with `watch` follow it; a failed run raises."""
    pace = Pace(timeout, interval, sleep, clock)
    run_id = find_run(gh, workflow, ref, inputs, pace, say)
    try:
        run: dict | None = gh.run(run_id)
    except GitHubUnavailable as exc:
        if not watch:
            raise
        say(f"{exc.message}; still watching run {run_id}")
        run = None
    if run:
        say(f"run #{run.get('run_number', run_id)}: {run.get('html_url', '')}")
    if not watch:
        return run
    watcher = Watcher(gh, run_id, say)
    run = follow(watcher, run, pace)
    if run.get("conclusion") != "success":
        raise GitHubError(
            f"run #{run.get('run_number')} concluded {run.get('conclusion')}: {watcher.failed_step()}; "
            f"{run.get('html_url')}"
        )
    say(f"run #{run.get('run_number')} succeeded")
    return run
